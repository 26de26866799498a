"""Hypothesis properties of the fill models and exchange rules over random bars, books and sizes."""

from __future__ import annotations

import math

from hypothesis import assume, given
from hypothesis import strategies as st

from prod_core.domain import Bar, Instrument, Side
from prod_core.execution.fills import (
    Book,
    bankruptcy_price,
    impact_bps,
    limit_fill_price,
    limit_fills,
    liquidation_price,
    market_price,
    participation_qty,
    walk_book,
)
from prod_core.execution.rules import round_limit, round_price, round_qty

prices = st.floats(0.01, 100_000.0, allow_nan=False, allow_infinity=False)
fractions = st.floats(0.0, 1.0)


@st.composite
def bars(draw: st.DrawFn) -> Bar:
    """A valid OHLCV bar: low <= open, close <= high, range up to 20% of the low, volume >= 0."""
    low = draw(prices)
    high = low * (1.0 + draw(st.floats(0.0, 0.2)))
    open_ = low + (high - low) * draw(fractions)
    close = low + (high - low) * draw(fractions)
    open_, close = min(max(open_, low), high), min(max(close, low), high)
    volume = draw(st.one_of(st.just(0.0), st.floats(0.0, 1e9)))
    return Bar("X/USDT", 0, open_, high, low, close, volume)


@given(
    bar=bars(), buying=st.booleans(), ref_pos=st.floats(-0.5, 1.5), qty=st.floats(0.0, 1e9),
    spread_bps=st.floats(0.0, 500.0), coef=st.floats(0.0, 10.0),
)
def test_market_price_never_leaves_the_bar(
    bar: Bar, buying: bool, ref_pos: float, qty: float, spread_bps: float, coef: float
) -> None:
    """Whatever the size, spread and impact (and even a reference outside the bar), a market fill lies in [low, high]."""
    ref = max(bar.low + (bar.high - bar.low) * ref_pos, 1e-9)
    price = market_price(buying, ref, qty, bar, spread_bps, coef)
    assert bar.low <= price <= bar.high


@given(bar=bars(), coef=st.floats(0.01, 10.0), notional=st.floats(1.0, 1e9), scale=st.floats(1.0, 100.0))
def test_impact_grows_with_size_and_range(bar: Bar, coef: float, notional: float, scale: float) -> None:
    """A larger order never pays less impact; the same order in a wider bar never pays less either."""
    assert impact_bps(coef, notional * scale, bar) >= impact_bps(coef, notional, bar)
    wider = Bar(bar.symbol, 0, bar.open, bar.high + (bar.high - bar.low) * (scale - 1.0), bar.low, bar.close, bar.volume)
    assert impact_bps(coef, notional, wider) >= impact_bps(coef, notional, bar) * (1.0 - 1e-12)


@given(bar=bars(), buying=st.booleans(), limit_pos=st.floats(-0.2, 1.2))
def test_a_through_limit_fills_only_where_the_market_traded_beyond_it(
    bar: Bar, buying: bool, limit_pos: float
) -> None:
    """In "through" mode a fill implies low < limit (buy) / high > limit (sell), at a price inside the bar
    and no worse than the limit."""
    limit = bar.low + (bar.high - bar.low) * limit_pos
    if limit_fills(buying, limit, bar, "through"):
        assert bar.low < limit if buying else bar.high > limit
        price = limit_fill_price(buying, limit, bar)
        assert bar.low <= price <= bar.high
        assert price <= limit if buying else price >= limit


@given(bar=bars(), buying=st.booleans(), limit_pos=st.floats(-0.2, 1.2))
def test_through_fills_imply_touch_fills(bar: Bar, buying: bool, limit_pos: float) -> None:
    """The touch model fills at least whenever the through model does."""
    limit = bar.low + (bar.high - bar.low) * limit_pos
    if limit_fills(buying, limit, bar, "through"):
        assert limit_fills(buying, limit, bar, "touch")


levels = st.lists(st.tuples(st.floats(0.01, 1_000.0), st.floats(0.001, 100.0)), min_size=1, max_size=8)


@given(raw=levels, a=st.floats(0.001, 1_000.0), b=st.floats(0.001, 1_000.0))
def test_walking_the_asks_deeper_never_costs_less_per_unit(raw: list[tuple[float, float]], a: float, b: float) -> None:
    """A bigger buy pays an average at least that of a smaller one, between the best and worst ask; it never
    fills more than the book holds."""
    asks = tuple(sorted({p: q for p, q in raw}.items()))
    book = Book(bids=(), asks=asks)
    small, large = min(a, b), max(a, b)
    px_s, q_s = walk_book(book.asks, small)
    px_l, q_l = walk_book(book.asks, large)
    depth = sum(q for _, q in asks)
    assert q_l <= large and q_l <= depth * (1 + 1e-12) and q_s <= q_l * (1 + 1e-12)  # 1e-12: residue = full fill
    assert px_l >= px_s * (1.0 - 1e-12)
    assert asks[0][0] * (1 - 1e-12) <= px_l <= asks[-1][0] * (1 + 1e-12)


@given(remaining=st.floats(0.0, 1e6), volume=st.one_of(st.just(0.0), st.floats(1e-9, 1e9)), cap=st.one_of(st.none(), st.floats(0.01, 100.0)))
def test_participation_never_exceeds_the_order_or_the_cap(remaining: float, volume: float, cap: float | None) -> None:
    """A bar takes at most the remaining qty and at most cap % of its volume."""
    part = participation_qty(remaining, volume, cap)
    assert 0.0 <= part <= remaining
    if cap is not None:
        assert part <= volume * cap / 100.0 * (1 + 1e-12)


steps = st.sampled_from([1e-8, 1e-6, 0.0001, 0.001, 0.01, 0.1, 0.5, 1.0, 5.0, 10.0])


@given(step=steps, k=st.integers(0, 10_000_000))
def test_round_qty_keeps_a_whole_number_of_steps(step: float, k: int) -> None:
    """k steps (as a float with the usual representation error) round back to exactly k steps."""
    i = Instrument("X/USDT", qty_step=step)
    qty = k * step
    assert math.isclose(round_qty(i, qty) / step, k, rel_tol=1e-9, abs_tol=1e-9)
    assert round_qty(i, round_qty(i, qty)) == round_qty(i, qty)


@given(step=steps, qty=st.floats(0.0, 1e6))
def test_round_qty_rounds_down_by_less_than_a_step(step: float, qty: float) -> None:
    """The rounded qty is at most the qty (up to the 1e-9-step slack) and within one step of it."""
    r = round_qty(Instrument("X/USDT", qty_step=step), qty)
    assert r <= qty + step * 1e-8 + qty * 1e-15
    assert qty - r < step * (1 + 1e-9) + qty * 1e-15


ticks = st.sampled_from([1e-8, 0.0001, 0.01, 0.1, 0.5, 1.0, 5.0])


@given(tick=ticks, bar=bars(), buying=st.booleans(), pos=st.floats(-0.5, 1.5))
def test_round_price_never_leaves_the_bar(tick: float, bar: Bar, buying: bool, pos: float) -> None:
    """Tick rounding stays inside [low, high] whatever the price and the tick."""
    price = bar.low + (bar.high - bar.low) * pos
    p = round_price(Instrument("X/USDT", price_tick=tick), price, buying, bar.low, bar.high)
    assert bar.low <= p <= bar.high


@given(tick=ticks, price=prices, side=st.sampled_from(list(Side)))
def test_round_limit_is_on_the_passive_side(tick: float, price: float, side: Side) -> None:
    """A sell limit never rounds below the price, a buy limit never above, by less than one tick."""
    p = round_limit(Instrument("X/USDT", price_tick=tick), price, side)
    slack = tick * 1e-8 + price * 1e-15
    if side is Side.SELL:
        assert price - slack <= p < price + tick + slack
    else:
        assert price - tick - slack < p <= price + slack


@given(long=st.booleans(), entry=prices, leverage=st.floats(1.0, 125.0), mmr=st.floats(0.0, 0.5))
def test_liquidation_comes_before_bankruptcy(long: bool, entry: float, leverage: float, mmr: float) -> None:
    """With mmr < 1/L the liquidation price lies between the entry and the bankruptcy price."""
    assume(mmr < 1.0 / leverage)
    liq = liquidation_price(long, entry, leverage, mmr)
    bust = bankruptcy_price(long, entry, leverage)
    tol = entry * 1e-12
    if long:
        assert bust - tol <= liq <= entry + tol
    else:
        assert entry - tol <= liq <= bust + tol
