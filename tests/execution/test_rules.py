"""Tests for the exchange order rules (prod_core.execution.rules)."""

from __future__ import annotations

import math
import re

import pytest

from prod_core.domain import Instrument, Side
from prod_core.execution.rules import check_order, round_limit, round_price, round_qty


def inst(tick: float = 0.0, step: float = 0.0, min_qty: float = 0.0, min_notional_usd: float = 0.0) -> Instrument:
    return Instrument("BTC/USDT", price_tick=tick, qty_step=step, min_qty=min_qty, min_notional_usd=min_notional_usd)


# ------------------------------------------------------------------ round_qty
@pytest.mark.parametrize(
    ("step", "qty", "expected"),
    [
        (0.1, 0.3, 0.3),  # 0.3 / 0.1 == 2.9999999999999996 in floats: still 3 steps
        (0.1, 0.7, 0.7),  # 6.999999999999999 steps
        (0.01, 0.29, 0.29),  # 28.999999999999996 steps
        (0.1, 0.39, 0.3),  # a genuine remainder is dropped
        (0.001, 0.0024, 0.002),
        (0.001, 123456.789, 123456.789),
        (1e-8, 0.3, 0.3),
        (1e-8, 0.123456789, 0.12345678),
        (0.5, 1.74, 1.5),
        (5.0, 12.0, 10.0),
        (0.001, 0.0004, 0.0),  # below one step
        (0.0, 0.123456789, 0.123456789),  # no step
    ],
)
def test_round_qty_rounds_down_to_whole_steps(step: float, qty: float, expected: float) -> None:
    """round_qty drops the remainder below one step but keeps a qty that is on a step despite float error."""
    assert round_qty(inst(step=step), qty) == expected


def test_round_qty_result_is_the_decimal_the_exchange_means() -> None:
    """3 steps of 0.1 come back as the float 0.3, not 0.30000000000000004 (= 3 * 0.1)."""
    assert 3 * 0.1 != 0.3
    assert round_qty(inst(step=0.1), 3 * 0.1) == 0.3


def test_round_qty_passes_nan_through_for_check_order_to_refuse() -> None:
    """A nan qty is not silently turned into a number."""
    assert math.isnan(round_qty(inst(step=0.001), math.nan))


# ---------------------------------------------------------------- round_price
@pytest.mark.parametrize(
    ("tick", "price", "buying", "expected"),
    [
        (0.5, 100.2, True, 100.5),  # a buy rounds up (adverse to the taker)
        (0.5, 100.2, False, 100.0),  # a sell rounds down
        (0.01, 100.123, True, 100.13),
        (0.01, 100.123, False, 100.12),
        (0.5, 100.5, True, 100.5),  # exactly on the tick: unchanged either way
        (0.5, 100.5, False, 100.5),
        (0.01, 0.29, True, 0.29),  # on the tick despite 28.999999999999996 ticks
        (0.0, 100.123, True, 100.123),  # no tick
    ],
)
def test_round_price_is_adverse_to_the_taker(tick: float, price: float, buying: bool, expected: float) -> None:
    """Inside a wide bar, a buy rounds up and a sell rounds down to the tick."""
    assert round_price(inst(tick=tick), price, buying, 90.0 if price > 1 else 0.1, 110.0) == expected


def test_round_price_rounds_the_other_way_rather_than_leave_the_bar() -> None:
    """A buy at 100.2 in a bar whose high is 100.4 (tick 0.5) cannot pay 100.5: it gets 100.0."""
    assert round_price(inst(tick=0.5), 100.2, True, 99.5, 100.4) == 100.0
    assert round_price(inst(tick=0.5), 100.2, False, 100.1, 101.0) == 100.5


def test_round_price_without_a_tick_in_the_bar_returns_the_clamped_price() -> None:
    """A bar 100.1..100.4 holds no 0.5 tick (impossible on a real exchange): the price stays unrounded in range."""
    assert round_price(inst(tick=0.5), 100.2, True, 100.1, 100.4) == 100.2
    assert round_price(inst(tick=0.5), 100.9, True, 100.1, 100.4) == 100.4


def test_round_price_clamps_a_price_outside_the_bar() -> None:
    """A buy priced above the bar's high (on the tick) fills at the high."""
    assert round_price(inst(tick=0.5), 101.3, True, 99.0, 101.0) == 101.0


# ---------------------------------------------------------------- round_limit
def test_round_limit_rounds_to_the_passive_side() -> None:
    """A sell limit (a long's target) rounds up, a buy limit (a short's target) rounds down; on-tick stays."""
    i = inst(tick=0.5)
    assert round_limit(i, 110.2, Side.SELL) == 110.5
    assert round_limit(i, 89.8, Side.BUY) == 89.5
    assert round_limit(i, 110.5, Side.SELL) == 110.5
    assert round_limit(i, 110.5, Side.BUY) == 110.5
    assert round_limit(inst(), 110.2, Side.SELL) == 110.2


# ---------------------------------------------------------------- check_order
@pytest.mark.parametrize(
    ("instrument", "qty", "price", "min_notional_usd", "pattern"),
    [
        (inst(), math.nan, 100.0, 0.0, r"^invalid_qty: nan$"),
        (inst(), -1.0, 100.0, 0.0, r"^invalid_qty: -1\.0$"),
        (inst(), 0.0, 100.0, 0.0, r"^invalid_qty: 0\.0$"),
        (inst(), 1.0, math.inf, 0.0, r"^invalid_price: inf$"),
        (inst(step=0.001), 0.0004, 100.0, 0.0, r"^qty_step: 0\.0004 is below one lot step 0\.001$"),
        (inst(step=0.001, min_qty=0.005), 0.0024, 100.0, 0.0, r"^min_qty: 0\.002 < 0\.005 \(exchange minimum\)$"),
        (inst(min_notional_usd=5.0), 0.084, 100.0, 10.0, r"^min_notional: 8\.40 < 10\.00 USD$"),
        (inst(min_notional_usd=10.0), 0.084, 100.0, 0.0, r"^min_notional: 8\.40 < 10\.00 USD$"),
    ],
)
def test_check_order_gives_the_reason_code_of_each_violation(
    instrument: Instrument, qty: float, price: float, min_notional_usd: float, pattern: str
) -> None:
    """Each rule names its code before the colon and the values after it."""
    assert re.match(pattern, check_order(instrument, qty, price, min_notional_usd))


def test_check_order_checks_in_order_invalid_step_min_qty_min_notional() -> None:
    """An order breaking several rules reports the first: step before min_qty before min_notional."""
    i = inst(step=0.001, min_qty=0.005, min_notional_usd=10.0)
    assert check_order(i, 0.0004, 100.0).startswith("qty_step:")
    assert check_order(i, 0.004, 100.0).startswith("min_qty:")
    assert check_order(i, 0.05, 100.0).startswith("min_notional:")


def test_check_order_passes_an_order_exactly_at_the_minimums() -> None:
    """0.1 lots of 0.1 at 100 is exactly 10 USD: passes min_qty 0.1 and min_notional 10 despite float error."""
    i = inst(step=0.1, min_qty=0.1, min_notional_usd=10.0)
    assert check_order(i, 0.1, 100.0) == ""
    assert check_order(i, 0.3, 33.333333333333336) == ""  # 0.3 * 33.33.. = 9.999999999999998 in floats


def test_check_order_judges_the_qty_the_exchange_would_take() -> None:
    """0.1049 with step 0.001 is sent as 0.104: at 100 USD that is 10.40 USD, below a 10.45 minimum."""
    assert check_order(inst(step=0.001), 0.1049, 100.0, 10.45) == "min_notional: 10.40 < 10.45 USD"
