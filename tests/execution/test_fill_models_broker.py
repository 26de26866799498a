"""The fill models as the paper broker applies them, on crafted bars and books.

Each test names one model and shows the difference a trader would see in the fills.
"""

from __future__ import annotations

import pytest

from prod_core.configs.governance import ExecutionConfig
from prod_core.domain import FillReason, Instrument, InstrumentKind, OrderStatus, Side
from prod_core.execution import PaperBroker
from prod_core.execution.fills import Book
from prod_core.testing.builders import RecordingSink, make_bar, make_decision, make_plan

SYM = "BTC/USDT"
BASE = dict(taker_fee_bps=5.0, maker_fee_bps=1.0, slippage_bps=1.0, min_notional_usd=10.0)


def _broker(inst: Instrument | None = None, **cfg) -> tuple[PaperBroker, RecordingSink]:
    sink = RecordingSink()
    inst = inst or Instrument(SYM, InstrumentKind.PERP, leverage=3.0, maint_margin_rate=0.005)
    b = PaperBroker(ExecutionConfig(**{**BASE, **cfg}), {SYM: inst}, sink, cash_usd=1_000_000.0)
    return b, sink


def _enter(b: PaperBroker, qty: float, side: Side = Side.BUY, price: float = 100.0, ts: int = 0,
           stop: float | None = None, target: float | None = None, volume: float = 1e9) -> None:
    b.on_bar(make_bar(SYM, ts, price, volume=volume))
    plan = make_plan(side, price, stop, target, symbol=SYM, ts_ms=ts)
    b.submit_entry(make_decision(plan, qty=qty, nominal_r_usd=100.0), ts)


# ------------------------------------------------------------------ book walk and impact
def test_a_large_market_order_walks_the_book_and_pays_more_per_unit() -> None:
    book = Book(bids=((99.9, 5.0),), asks=((100.1, 1.0), (100.3, 2.0), (100.8, 10.0)))
    prices = {}
    for qty in (0.5, 8.0):
        b, sink = _broker()
        _enter(b, qty)
        b.capture_books(0.0, {SYM: book}.get, latency_ms=0)  # the feed's book when the order is sent
        b.on_bar(make_bar(SYM, 60_000, 100.0, 101.0, 99.0, 100.0, volume=1e9))
        (fill,) = sink.fills
        prices[qty] = fill.price
        assert fill.ref_price == pytest.approx(100.0)  # slippage is measured from the book's mid
    assert prices[0.5] == pytest.approx(100.1)  # the best ask covers it
    assert prices[8.0] == pytest.approx((1 * 100.1 + 2 * 100.3 + 5 * 100.8) / 8)  # three levels deep
    assert prices[8.0] > prices[0.5]


def test_without_a_book_impact_grows_with_size_relative_to_the_bar_volume() -> None:
    prices = {}
    for qty in (1.0, 400.0):
        b, sink = _broker(impact_coef=1.0)
        _enter(b, qty)
        b.on_bar(make_bar(SYM, 60_000, 100.0, 102.0, 99.0, 100.0, volume=1_000.0))
        prices[qty] = sink.fills[0].price
    small_bps = (prices[1.0] / 100.0 - 1) * 1e4
    large_bps = (prices[400.0] / 100.0 - 1) * 1e4
    # 1 bps spread + 1.0 * 300 bps range * sqrt(notional / bar notional)
    assert small_bps == pytest.approx(1.0 + 300.0 * (100.0 / 100_000.0) ** 0.5, rel=1e-6)
    assert large_bps == pytest.approx(1.0 + 300.0 * (40_000.0 / 100_000.0) ** 0.5, rel=1e-6)


def test_ideal_next_open_fills_whole_at_the_open_whatever_the_size() -> None:
    b, sink = _broker(fill_model="ideal_next_open", impact_coef=5.0, max_participation_pct=1.0)
    _enter(b, 5_000.0, stop=90.0)
    b.on_bar(make_bar(SYM, 60_000, 100.0, 103.0, 97.0, 100.0, volume=10.0))
    (fill,) = sink.fills
    assert (fill.price, fill.qty) == (100.0, 5_000.0)


# ------------------------------------------------------------------ latency
def test_latency_in_bars_fills_at_a_later_open_and_moves_the_price() -> None:
    b, sink = _broker(latency_bars=2, slippage_bps=0.0)
    _enter(b, 1.0)
    for i, price in enumerate((101.0, 102.0, 104.0), start=1):
        b.on_bar(make_bar(SYM, i * 60_000, price, volume=1e9))
    (fill,) = sink.fills
    assert (fill.ts_ms, fill.price) == (180_000, 104.0)  # two bars skipped: the third open, not 101


# ------------------------------------------------------------------ participation cap
def test_the_participation_cap_fills_a_large_entry_in_parts_and_cancels_the_rest() -> None:
    b, sink = _broker(max_participation_pct=10.0, cancel_after_bars=3)
    _enter(b, 25.0)
    volumes = (100.0, 0.0, 100.0, 100.0)  # 10 units a bar; a bar without volume fills nothing
    for i, v in enumerate(volumes, start=1):
        b.on_bar(make_bar(SYM, i * 60_000, 100.0, volume=v))
    assert [f.qty for f in sink.fills] == [10.0, 10.0]  # bars 1 and 3; bar 2 had no volume
    statuses = [o.status for o in sink.orders]
    assert statuses[:3] == [OrderStatus.SUBMITTED, OrderStatus.PARTIAL, OrderStatus.PARTIAL]
    assert statuses[-1] is OrderStatus.CANCELLED and sink.orders[-1].filled_qty == 20.0  # 3 bars worked
    assert b.positions[SYM].qty == 20.0 and SYM not in b.pending_entries


def test_an_exit_larger_than_the_cap_keeps_working_until_flat() -> None:
    b, sink = _broker(max_participation_pct=10.0)
    _enter(b, 25.0)
    b.on_bar(make_bar(SYM, 60_000, 100.0, volume=1e9))
    b.request_exit(SYM, FillReason.EXIT_SIGNAL, 60_000)
    for i in range(2, 6):
        b.on_bar(make_bar(SYM, i * 60_000, 100.0, volume=100.0))
    exits = [f for f in sink.fills if f.reason is FillReason.EXIT_SIGNAL]
    assert [f.qty for f in exits] == [10.0, 10.0, 5.0] and SYM not in b.positions
    assert len(sink.closes) == 1  # one trade, closed by the last part


# ------------------------------------------------------------------ limits and stops
@pytest.mark.parametrize("mode,fills", [("through", False), ("touch", True)])
def test_a_target_fills_only_when_the_market_trades_through_it(mode: str, fills: bool) -> None:
    b, sink = _broker(limit_fill=mode)
    _enter(b, 1.0, stop=95.0, target=105.0)
    b.on_bar(make_bar(SYM, 60_000, 100.0, 102.0, 99.0, 101.0, volume=1e9))
    b.on_bar(make_bar(SYM, 120_000, 103.0, 105.0, 102.0, 104.0, volume=1e9))  # the high touches 105
    assert (SYM not in b.positions) is fills
    if fills:
        assert sink.fills[-1].price == 105.0 and sink.fills[-1].liquidity == "maker"
    b.on_bar(make_bar(SYM, 180_000, 104.0, 105.5, 103.0, 105.2, volume=1e9))  # trades through
    assert SYM not in b.positions
    target = [f for f in sink.fills if f.reason is FillReason.TARGET][0]
    assert target.price == 105.0


def test_a_stop_triggers_a_market_exit_from_the_stop_and_a_gap_fills_at_the_open() -> None:
    b, sink = _broker(slippage_bps=10.0)
    _enter(b, 1.0, stop=95.0, target=120.0)
    b.on_bar(make_bar(SYM, 60_000, 100.0, volume=1e9))
    b.on_bar(make_bar(SYM, 120_000, 92.0, 93.0, 90.0, 91.0, volume=1e9))  # gaps through the stop
    stop = sink.fills[-1]
    assert stop.reason is FillReason.STOP
    assert stop.price == pytest.approx(92.0 * (1 - 10 / 1e4))  # market from the open, paying the spread
    assert 90.0 <= stop.price <= 93.0


# ------------------------------------------------------------------ exchange rules
@pytest.mark.parametrize("qty,code", [
    (0.0004, "qty_step"),  # below one lot step
    (0.004, "min_qty"),  # 4 lots, the minimum is 5
    (0.09, "min_notional"),  # 9 USD < 10 USD
])
def test_each_rule_violation_is_rejected_with_its_reason(qty: float, code: str) -> None:
    inst = Instrument(SYM, InstrumentKind.PERP, price_tick=0.1, qty_step=0.001, min_qty=0.005,
                      min_notional_usd=10.0, leverage=3.0)
    b, sink = _broker(inst)
    _enter(b, qty)
    b.on_bar(make_bar(SYM, 60_000, 100.0, volume=1e9))
    (rejected,) = sink.rejected()
    assert rejected.reject_reason.split(":")[0] == code, rejected.reject_reason
    assert b.positions == {}


def test_quantities_and_prices_are_rounded_the_exchange_way() -> None:
    inst = Instrument(SYM, InstrumentKind.PERP, price_tick=0.5, qty_step=0.001, leverage=3.0)
    b, sink = _broker(inst, slippage_bps=3.0)
    _enter(b, 1.23456)
    b.on_bar(make_bar(SYM, 60_000, 100.0, 101.0, 99.0, 100.0, volume=1e9))
    (fill,) = sink.fills
    assert fill.qty == 1.234  # down to the lot step
    assert fill.price == 100.5  # 100.03 rounded up to the tick: a buyer pays the next tick
