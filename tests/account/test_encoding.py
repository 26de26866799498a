"""The journal's JSON encoder (prod_core/domain/encoding.py) writes exactly what ``json.dumps`` writes."""

from __future__ import annotations

import json
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prod_core.domain.encoding import json_encoder

_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(_values)
def test_the_encoder_writes_json_dumps_byte_for_byte(value) -> None:
    assert json_encoder(sort_keys=True, default=str)(value) == json.dumps(value, sort_keys=True, default=str)
    assert json_encoder(sort_keys=True)(value) == json.dumps(value, sort_keys=True)
    assert json_encoder()(value) == json.dumps(value)


def test_default_turns_what_json_cannot_write_into_text_as_dumps_does() -> None:
    body = {"day": date(2025, 4, 5), "holds": ("b", "a"), "z": -0.0, "nan": float("nan"), "ü": "\u2028"}
    assert json_encoder(sort_keys=True, default=str)(body) == json.dumps(body, sort_keys=True, default=str)
    unsorted = {3: 1.5, 2.5: True, None: "x", "a": [date(2025, 4, 5)]}  # keys json turns into text
    assert json_encoder(default=str)(unsorted) == json.dumps(unsorted, default=str)


def test_without_default_an_unknown_value_is_refused_as_dumps_refuses_it() -> None:
    with pytest.raises(TypeError, match="not JSON serializable"):
        json_encoder(sort_keys=True)({"day": date(2025, 4, 5)})
