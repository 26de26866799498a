"""Tests for the fill models (prod_core.execution.fills) on crafted bars and books."""

from __future__ import annotations

import math

import pytest

from prod_core.domain import FillReason
from prod_core.execution.fills import (
    Book,
    bankruptcy_price,
    first_hit,
    impact_bps,
    limit_fill_price,
    limit_fills,
    liquidation_hit,
    liquidation_price,
    market_price,
    participation_qty,
    stop_ref,
    stop_triggered,
    walk_book,
)
from prod_core.testing.builders import make_bar

# A bar a reader can price by hand: range 2 (200 bps of the open), 1,000 units x 100 = 100,000 USD traded.
BAR = make_bar(open=100.0, high=101.0, low=99.0, close=100.0, volume=1_000.0)
BOOK = Book(bids=((99.9, 1.0), (99.8, 2.0), (99.5, 5.0)), asks=((100.1, 1.0), (100.2, 2.0), (100.5, 5.0)))


# ----------------------------------------------------------------------- book
def test_book_mid_is_the_average_of_the_best_bid_and_ask() -> None:
    """(99.9 + 100.1) / 2 = 100; a one-sided book has no mid."""
    assert BOOK.mid == pytest.approx(100.0)
    assert math.isnan(Book(bids=(), asks=((100.1, 1.0),)).mid)


def test_book_rejects_levels_that_are_not_best_first() -> None:
    """Asks must ascend, bids descend, and every level needs a positive qty."""
    with pytest.raises(ValueError, match="asks must be best first"):
        Book(bids=(), asks=((100.2, 1.0), (100.1, 1.0)))
    with pytest.raises(ValueError, match="bids must be best first"):
        Book(bids=((99.8, 1.0), (99.9, 1.0)), asks=())
    with pytest.raises(ValueError, match="positive finite price and qty"):
        Book(bids=((99.9, 0.0),), asks=())


def test_a_large_market_order_walks_the_book_and_pays_more_per_unit() -> None:
    """0.5 fills at the best ask 100.1; 3 takes 1 @ 100.1 + 2 @ 100.2 = 100.1667 on average."""
    small_px, small_qty = walk_book(BOOK.levels(buying=True), 0.5)
    large_px, large_qty = walk_book(BOOK.levels(buying=True), 3.0)
    assert (small_px, small_qty) == (pytest.approx(100.1), 0.5)
    assert (large_px, large_qty) == (pytest.approx((100.1 + 2 * 100.2) / 3), 3.0)
    assert large_px > small_px


def test_a_sell_walks_the_bids_down() -> None:
    """Selling 3 takes 1 @ 99.9 + 2 @ 99.8 = 99.8333 on average."""
    px, qty = walk_book(BOOK.levels(buying=False), 3.0)
    assert (px, qty) == (pytest.approx((99.9 + 2 * 99.8) / 3), 3.0)


def test_an_exhausted_book_gives_a_partial_fill() -> None:
    """10 against 8 on the asks fills 8 at (100.1 + 200.4 + 502.5) / 8 = 100.375."""
    px, qty = walk_book(BOOK.asks, 10.0)
    assert qty == 8.0
    assert px == pytest.approx((100.1 + 2 * 100.2 + 5 * 100.5) / 8)


def test_walk_book_on_an_empty_side_fills_nothing() -> None:
    """No levels (or no qty): nothing fills and there is no price."""
    px, qty = walk_book((), 1.0)
    assert qty == 0.0 and math.isnan(px)
    assert walk_book(BOOK.asks, 0.0)[1] == 0.0


def test_walk_book_reports_a_full_fill_as_exactly_the_qty() -> None:
    """Float residue of 0.1 + 0.2 never turns a full fill into a partial one."""
    _, qty = walk_book(((100.0, 0.1), (100.1, 0.2), (100.2, 1.0)), 0.3)
    assert qty == 0.3


# --------------------------------------------------------------------- impact
def test_impact_follows_the_square_root_law() -> None:
    """coef 1, range 200 bps: 1,000 USD of 100,000 traded is 200 * sqrt(0.01) = 20 bps; 4x the size, 2x the impact."""
    assert impact_bps(1.0, 1_000.0, BAR) == pytest.approx(20.0)
    assert impact_bps(1.0, 4_000.0, BAR) == pytest.approx(40.0)
    assert impact_bps(0.5, 1_000.0, BAR) == pytest.approx(10.0)


def test_impact_grows_with_the_bar_range() -> None:
    """The same order in a bar twice as wide (400 bps) pays twice the impact: 40 bps."""
    wide = make_bar(open=100.0, high=102.0, low=98.0, close=100.0, volume=1_000.0)
    assert impact_bps(1.0, 1_000.0, wide) == pytest.approx(40.0)


def test_impact_is_zero_without_volume_range_or_coef() -> None:
    """A bar with no volume or no range says nothing about liquidity: no impact."""
    assert impact_bps(1.0, 1_000.0, make_bar(open=100.0, high=101.0, low=99.0, volume=0.0)) == 0.0
    assert impact_bps(1.0, 1_000.0, make_bar(open=100.0, volume=1_000.0)) == 0.0
    assert impact_bps(0.0, 1_000.0, BAR) == 0.0


def test_impact_on_a_dust_bar_is_never_nan() -> None:
    """A bar that traded 5e-324 units makes the size ratio overflow: the impact is infinite, even for a
    coefficient of 5e-324 (0 x inf would be nan), and the market fill is capped at the bar."""
    dust = make_bar(open=1.0, high=1.125, low=1.0, volume=5e-324)
    assert impact_bps(5e-324, 1.0, dust) == math.inf
    assert impact_bps(1.0, 1.0, dust) == math.inf
    assert market_price(False, 1.0, 1.0, dust, 0.0, 1.0) == 1.0


# ---------------------------------------------------------------- market price
def test_market_price_adds_half_spread_and_impact_against_the_taker() -> None:
    """Half spread 5 bps + impact 20 bps (10 units = 1,000 USD): a buy pays 100.25, a sell gets 99.75."""
    assert market_price(True, 100.0, 10.0, BAR, 5.0, 1.0) == pytest.approx(100.25)
    assert market_price(False, 100.0, 10.0, BAR, 5.0, 1.0) == pytest.approx(99.75)
    assert market_price(True, 100.0, 10.0, BAR, 5.0, 0.0) == pytest.approx(100.05)


def test_market_price_never_leaves_the_bar() -> None:
    """An order of the bar's whole volume (impact 200 bps) is capped at the high / low."""
    assert market_price(True, 100.0, 1_000.0, BAR, 5.0, 1.0) == 101.0
    assert market_price(False, 100.0, 1_000.0, BAR, 5.0, 1.0) == 99.0


# -------------------------------------------------------------- participation
def test_an_order_three_times_the_cap_fills_in_three_bars() -> None:
    """A 10% cap on bars of 100 units: an order of 30 fills 10 a bar."""
    remaining, parts = 30.0, []
    while remaining > 0.0:
        part = participation_qty(remaining, 100.0, 10.0)
        parts.append(part)
        remaining -= part
    assert parts == [10.0, 10.0, 10.0]


def test_a_zero_volume_bar_fills_nothing_under_a_cap() -> None:
    """With a cap, a bar that traded nothing takes nothing: the order waits."""
    assert participation_qty(30.0, 0.0, 10.0) == 0.0


def test_no_cap_fills_the_whole_order() -> None:
    """None = no participation cap: everything, whatever the bar traded."""
    assert participation_qty(30.0, 100.0, None) == 30.0
    assert participation_qty(30.0, 0.0, None) == 30.0


def test_participation_takes_the_rest_when_it_fits() -> None:
    """A remainder below the cap fills whole."""
    assert participation_qty(4.0, 100.0, 10.0) == 4.0


# ---------------------------------------------------------------------- limits
TOUCH = make_bar(open=100.0, high=101.0, low=99.0, close=100.0)


def test_touch_mode_fills_at_an_exact_touch_and_through_mode_does_not() -> None:
    """A buy limit at the low (99) or a sell limit at the high (101): touched, not traded through."""
    assert limit_fills(True, 99.0, TOUCH, "touch") and not limit_fills(True, 99.0, TOUCH, "through")
    assert limit_fills(False, 101.0, TOUCH, "touch") and not limit_fills(False, 101.0, TOUCH, "through")


def test_through_mode_fills_when_the_bar_trades_beyond_the_limit() -> None:
    """A buy limit at 99.5 in a bar down to 99 fills; a sell limit at 101.5 above the high does not."""
    assert limit_fills(True, 99.5, TOUCH, "through")
    assert not limit_fills(False, 101.5, TOUCH, "through")
    assert not limit_fills(False, 101.5, TOUCH, "touch")


def test_limit_fill_mode_must_be_known() -> None:
    """A typo in the mode is an error, not a silent model."""
    with pytest.raises(ValueError, match="'through' or 'touch'"):
        limit_fills(True, 99.0, TOUCH, "cross")


def test_a_limit_fills_at_its_price_or_at_a_better_gap_open() -> None:
    """A sell limit at 105 fills at 105; if the bar opens at 106, it fills at 106. Buys mirror."""
    assert limit_fill_price(False, 105.0, make_bar(open=104.0, high=106.0, low=103.0)) == 105.0
    assert limit_fill_price(False, 105.0, make_bar(open=106.0, high=107.0, low=105.5)) == 106.0
    assert limit_fill_price(True, 95.0, make_bar(open=96.0, high=97.0, low=94.0)) == 95.0
    assert limit_fill_price(True, 95.0, make_bar(open=94.0, high=94.5, low=93.0)) == 94.0


# ----------------------------------------------------------------------- stops
def test_a_long_stop_triggers_at_the_low_and_fills_from_the_stop_or_a_gap_open() -> None:
    """Stop 95: a bar down to 94 triggers it with reference 95; a bar opening at 93 fills from 93."""
    dip = make_bar(open=100.0, high=100.0, low=94.0, close=96.0)
    gap = make_bar(open=93.0, high=94.0, low=92.0, close=93.0)
    assert stop_triggered(True, 95.0, dip) and stop_ref(True, 95.0, dip) == 95.0
    assert stop_triggered(True, 95.0, gap) and stop_ref(True, 95.0, gap) == 93.0
    assert not stop_triggered(True, 95.0, make_bar(open=100.0, high=101.0, low=95.5))
    assert stop_triggered(True, 95.0, make_bar(open=100.0, high=101.0, low=95.0))  # a touch triggers


def test_a_short_stop_mirrors_with_the_high() -> None:
    """Stop 105: a bar up to 106 triggers with reference 105; a bar opening at 107 fills from 107."""
    spike = make_bar(open=100.0, high=106.0, low=100.0, close=104.0)
    gap = make_bar(open=107.0, high=108.0, low=106.0)
    assert stop_triggered(False, 105.0, spike) and stop_ref(False, 105.0, spike) == 105.0
    assert stop_triggered(False, 105.0, gap) and stop_ref(False, 105.0, gap) == 107.0
    assert not stop_triggered(False, 105.0, make_bar(open=100.0, high=104.9, low=99.0))


def test_a_stop_fill_is_a_market_fill_from_its_reference() -> None:
    """A long's stop at 95 sells at 95 x (1 - 5 bps) = 94.9525 inside a bar 94..100."""
    dip = make_bar(open=100.0, high=100.0, low=94.0, close=96.0, volume=1_000.0)
    assert market_price(False, stop_ref(True, 95.0, dip), 1.0, dip, 5.0, 0.0) == pytest.approx(94.9525)


# ---------------------------------------------------------------------- margin
def test_liquidation_and_bankruptcy_prices_of_a_3x_position() -> None:
    """Entry 100, 3x, mmr 0.5%: long liq 100 x (2/3) / 0.995 = 67.0017, bankruptcy 66.6667;
    short liq 100 x (4/3) / 1.005 = 132.6700, bankruptcy 133.3333."""
    assert liquidation_price(True, 100.0, 3.0, 0.005) == pytest.approx(67.0017, abs=1e-4)
    assert bankruptcy_price(True, 100.0, 3.0) == pytest.approx(66.6667, abs=1e-4)
    assert liquidation_price(False, 100.0, 3.0, 0.005) == pytest.approx(132.6700, abs=1e-4)
    assert bankruptcy_price(False, 100.0, 3.0) == pytest.approx(133.3333, abs=1e-4)


def test_margin_prices_of_10x_and_1x() -> None:
    """10x long: liq 90 / 0.995 = 90.4523; a 1x long without maintenance margin is never liquidated (0)."""
    assert liquidation_price(True, 100.0, 10.0, 0.005) == pytest.approx(90.4523, abs=1e-4)
    assert bankruptcy_price(True, 100.0, 10.0) == pytest.approx(90.0)
    assert liquidation_price(True, 100.0, 1.0, 0.0) == 0.0


@pytest.mark.parametrize(
    ("entry", "leverage", "mmr", "pattern"),
    [
        (0.0, 3.0, 0.005, "entry must be a positive finite price"),
        (100.0, 0.5, 0.005, "leverage must be >= 1"),
        (100.0, 3.0, 1.0, r"maintenance margin rate must be in \[0, 1\)"),
    ],
)
def test_margin_math_rejects_invalid_inputs(entry: float, leverage: float, mmr: float, pattern: str) -> None:
    """Bad inputs say which value is wrong."""
    with pytest.raises(ValueError, match=pattern):
        liquidation_price(True, entry, leverage, mmr)


def test_liquidation_hit_uses_the_adverse_extreme() -> None:
    """A long at liq 67 is hit by a low of 67; a short at liq 133 by a high of 133."""
    assert liquidation_hit(True, 67.0, make_bar(open=70.0, high=71.0, low=67.0))
    assert not liquidation_hit(True, 67.0, make_bar(open=70.0, high=71.0, low=67.5))
    assert liquidation_hit(False, 133.0, make_bar(open=130.0, high=133.0, low=129.0))
    assert not liquidation_hit(False, 133.0, make_bar(open=130.0, high=132.0, low=129.0))


# ------------------------------------------------------------------- first_hit
@pytest.mark.parametrize(
    ("long", "open_", "high", "low", "stop", "liq", "expected"),
    [
        (True, 100.0, 101.0, 80.0, 90.0, 67.0, FillReason.STOP),  # stop above liq: reached first
        (True, 100.0, 101.0, 60.0, 90.0, 67.0, FillReason.STOP),  # both reached: the one nearer the open
        (True, 100.0, 101.0, 60.0, 60.0, 67.0, FillReason.LIQUIDATION),  # stop below liq: too late
        (True, 85.0, 86.0, 80.0, 90.0, 67.0, FillReason.STOP),  # opens through the stop only
        (True, 65.0, 66.0, 60.0, 90.0, 67.0, FillReason.LIQUIDATION),  # opens through both
        (True, 100.0, 101.0, 95.0, 90.0, 67.0, None),
        (True, 100.0, 101.0, 60.0, None, 67.0, FillReason.LIQUIDATION),
        (True, 100.0, 101.0, 60.0, 90.0, None, FillReason.STOP),
        (True, 100.0, 101.0, 60.0, 67.0, 67.0, FillReason.LIQUIDATION),  # tie
        (False, 100.0, 120.0, 99.0, 110.0, 133.0, FillReason.STOP),
        (False, 100.0, 140.0, 99.0, 110.0, 133.0, FillReason.STOP),
        (False, 100.0, 140.0, 99.0, 135.0, 133.0, FillReason.LIQUIDATION),
        (False, 135.0, 140.0, 134.0, 110.0, 133.0, FillReason.LIQUIDATION),
    ],
)
def test_first_hit_picks_the_level_reached_first_from_the_open(
    long: bool, open_: float, high: float, low: float, stop: float | None, liq: float | None,
    expected: FillReason | None,
) -> None:
    """Along the adverse path from the open, the nearer level wins; an open beyond the liquidation price liquidates."""
    bar = make_bar(open=open_, high=high, low=low)
    assert first_hit(long, bar, stop, liq) is expected
