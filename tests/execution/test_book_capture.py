"""Market orders priced on the order book the feed showed ``latency_ms`` after they were sent.

The runner calls ``PaperBroker.capture_books`` each loop cycle while orders work; each order
keeps the book of its moment and walks it at its next bar, whatever the book became since.
"""

from __future__ import annotations

import pytest

from prod_core.configs.governance import ExecutionConfig
from prod_core.domain import FillReason, Instrument, InstrumentKind, Side
from prod_core.execution import PaperBroker
from prod_core.execution.fills import Book
from prod_core.testing.builders import RecordingSink, make_bar, make_decision, make_plan

SYM = "BTC/USDT"
CFG = dict(taker_fee_bps=5.0, maker_fee_bps=1.0, slippage_bps=1.0, min_notional_usd=10.0)
NEAR = Book(bids=((99.9, 5.0),), asks=((100.1, 5.0),))  # mid 100.0
LATER = Book(bids=((101.9, 5.0),), asks=((102.1, 5.0),))  # mid 102.0: the market moved on
DEEP = Book(bids=((100.4, 1.0), (100.2, 1.0), (99.8, 10.0)), asks=((100.6, 1.0),))  # mid 100.5


def _broker(**cfg) -> tuple[PaperBroker, RecordingSink]:
    sink = RecordingSink()
    inst = Instrument(SYM, InstrumentKind.PERP, leverage=3.0, maint_margin_rate=0.005)
    return PaperBroker(ExecutionConfig(**{**CFG, **cfg}), {SYM: inst}, sink, cash_usd=1_000_000.0), sink


def _enter(b: PaperBroker, qty: float = 1.0, *, now_s: float | None = 1_000.0) -> None:
    b.on_bar(make_bar(SYM, 0, 100.0, volume=1e9))
    plan = make_plan(Side.BUY, 100.0, symbol=SYM, ts_ms=0)
    b.submit_entry(make_decision(plan, qty=qty, nominal_r_usd=100.0), 0, now_s=now_s)


def _next_bar(b: PaperBroker, ts_ms: int = 60_000, open_: float = 101.0) -> None:
    b.on_bar(make_bar(SYM, ts_ms, open_, 103.0, 99.0, open_, volume=1e9))


def test_an_entry_walks_the_book_captured_after_its_latency_not_a_later_one() -> None:
    """Sent at t=1000 with 250 ms latency: the book at t=1000.3 prices it, the newer book at the
    fill bar does not; slippage is measured from that book's mid, not the bar's open."""
    b, sink = _broker()
    _enter(b, now_s=1_000.0)
    due = b.capture_books(1_000.1, {SYM: LATER}.get, latency_ms=250)  # too early: nothing taken
    assert due == pytest.approx(1_000.25) and b.pending_entries[SYM].book is None
    assert b.capture_books(1_000.3, {SYM: NEAR}.get, latency_ms=250) is None
    assert b.pending_entries[SYM].book is NEAR
    b.capture_books(1_030.0, {SYM: LATER}.get, latency_ms=250)
    assert b.pending_entries[SYM].book is NEAR  # it keeps the book it has
    _next_bar(b)
    (fill,) = sink.fills
    assert (fill.price, fill.ref_price) == (pytest.approx(100.1), pytest.approx(100.0))


def test_with_zero_latency_the_first_cycle_after_the_submit_captures() -> None:
    """latency_ms=0 and no send time given: the next capture stamps and captures at once."""
    b, sink = _broker()
    _enter(b, now_s=None)
    b.capture_books(5.0, {SYM: NEAR}.get, latency_ms=0)
    assert b.pending_entries[SYM].sent_s == 5.0 and b.pending_entries[SYM].book is NEAR
    _next_bar(b)
    assert sink.fills[0].price == pytest.approx(100.1)


def test_without_a_captured_book_the_bar_model_prices_as_before() -> None:
    """No capture (candle feeds, sim, replay), or the feed had no usable book: spread on the open."""
    for capture in (False, True):
        b, sink = _broker()
        _enter(b)
        if capture:
            b.capture_books(2_000.0, lambda _s: None, latency_ms=0)
            assert b.pending_entries[SYM].book is None
        _next_bar(b)
        (fill,) = sink.fills
        assert fill.price == pytest.approx(101.0 * (1 + 1e-4))  # 1 bps half spread on the open
        assert fill.ref_price == 101.0


def test_a_book_waits_for_the_latency_bars_before_it_is_captured() -> None:
    """latency_bars delays the send: the book is taken after the bars waited, not at the decision."""
    b, sink = _broker(latency_bars=1)
    _enter(b)
    b.capture_books(1_000.5, {SYM: LATER}.get, latency_ms=0)  # still waiting a bar
    assert b.pending_entries[SYM].book is None
    _next_bar(b)
    assert not sink.fills
    b.capture_books(1_060.5, {SYM: NEAR}.get, latency_ms=0)
    assert b.pending_entries[SYM].book is NEAR
    _next_bar(b, 120_000, 100.5)
    assert sink.fills[0].ref_price == pytest.approx(100.0)


def test_an_exit_sells_into_the_captured_bids_and_a_book_serves_one_bar() -> None:
    """An exit walks the bids of its book; its unfilled rest is priced on a book of its own later."""
    b, sink = _broker(max_participation_pct=50.0)
    _enter(b, 3.0)
    _next_bar(b)  # 3 filled on the bar model (no book)
    b.request_exit(SYM, FillReason.EXIT_SIGNAL, 60_000, now_s=1_060.0)
    b.capture_books(1_060.0, {SYM: DEEP}.get, latency_ms=0)
    assert b.pending_exits[SYM].book is DEEP
    b.on_bar(make_bar(SYM, 120_000, 100.5, 101.0, 99.0, 100.5, volume=4.0))  # the cap: 2 units
    first = sink.fills[-1]
    assert (first.qty, first.price, first.ref_price) == (2.0, pytest.approx(100.3), pytest.approx(100.5))
    assert b.pending_exits[SYM].book is None and b.pending_exits[SYM].sent_s is None
    b.on_bar(make_bar(SYM, 180_000, 100.0, 101.0, 99.0, 100.0, volume=4.0))  # no new capture: bar model
    last = sink.fills[-1]
    assert (last.qty, last.ref_price) == (1.0, 100.0) and SYM not in b.positions


def test_a_book_price_outside_the_bar_is_clamped_into_its_range() -> None:
    """The bar is the evidence of what traded: a captured ask above the bar's high fills at the high."""
    b, sink = _broker()
    _enter(b)
    b.capture_books(1_000.0, {SYM: LATER}.get, latency_ms=0)
    b.on_bar(make_bar(SYM, 60_000, 100.0, 101.5, 99.0, 100.0, volume=1e9))
    assert sink.fills[0].price == 101.5 and sink.fills[0].ref_price == pytest.approx(102.0)


def test_the_ideal_model_ignores_books() -> None:
    b, sink = _broker(fill_model="ideal_next_open")
    _enter(b)
    b.capture_books(1_000.0, {SYM: LATER}.get, latency_ms=0)
    assert b.pending_entries[SYM].book is None
    _next_bar(b)
    assert sink.fills[0].price == 101.0
