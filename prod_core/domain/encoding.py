"""JSON text of the journal and the account's snapshots, built on the hot path of a replay.

``json.JSONEncoder(...).encode`` builds a new C encoder (and a closure and a markers dict) on
every call; a replay encodes two or three bodies per fill. ``json_encoder`` builds that C
encoder once and returns a function that gives, byte for byte, what ``encode`` gives
(tests/account/test_encoding.py compares them over generated values, test_journal.py the fill bodies).

The one difference is on a value that contains itself, which no journal body does: ``encode``
raises ``ValueError("Circular reference detected")``, this raises ``RecursionError``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from json import encoder as _std
from typing import Any


def json_encoder(*, sort_keys: bool = False, default: Callable[[Any], Any] | None = None) -> Callable[[Any], str]:
    """``json.JSONEncoder(sort_keys=sort_keys, default=default).encode`` with its encoder built once."""
    reference = json.JSONEncoder(sort_keys=sort_keys, default=default)
    make = _std.c_make_encoder
    if make is None:  # an interpreter without the C accelerator: the reference itself
        return reference.encode
    escape = _std.encode_basestring_ascii  # ensure_ascii=True, as json.dumps
    # the arguments ``JSONEncoder.iterencode`` passes for a one-shot encode, but no circular-reference
    # markers (a dict per call)
    chunks = make(None, reference.default, escape, None, reference.key_separator, reference.item_separator,
                  sort_keys, False, True)
    join = "".join

    def encode(o: Any) -> str:
        if o.__class__ is str:
            return escape(o)
        return join(chunks(o, 0))

    return encode
