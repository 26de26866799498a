"""Funding on real candles: Bybit BTCUSDT 5m (shared/data), a constant rate, a position held for months.

The summed funding of the journal is checked against a hand calculation straight from the CSV:
at every 8 h instant T (00:00, 08:00, 16:00 UTC) after the entry, the position pays
qty * (close of the last bar before T) * rate when long, and receives it when short.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from prod_core.account import fold
from prod_core.configs.governance import ExecutionConfig
from prod_core.domain import Bar, FillReason, Instrument, InstrumentKind, Side
from prod_core.execution import PaperBroker
from prod_core.feeds.funding import ConstantFunding
from prod_core.feeds.replay import ReplayFeed
from prod_core.testing.builders import JournalSink, make_decision, make_plan
from tests.conftest import shared_data_dir

RATE = 0.0001  # 0.01% per 8 h, the exchanges' baseline
EIGHT_H = 8 * 3_600_000
QTY = 0.25


@pytest.fixture(scope="module")
def data() -> Path:
    return shared_data_dir() / "BYBIT_BTCUSDT_5m.csv"


def _bars(data: Path) -> list[Bar]:
    feed = ReplayFeed.from_paths([f"BTC/USDT={data}"])
    feed.start(0.0)
    bars: list[Bar] = []
    while not feed.exhausted:
        bars += feed.poll(0.0)
    return bars


def _hand_funding(data: Path, entry_ts: int, last_ts: int, side: Side) -> tuple[int, float]:
    """(funding times, USD paid) computed from the CSV rows alone."""
    closes: list[tuple[int, float]] = []
    with data.open(newline="") as fh:
        for row in csv.DictReader(fh):
            closes.append((int(row["ts_ms"]), float(row["close"])))
    closes.sort()
    paid, n, i = 0.0, 0, 0
    t = (entry_ts // EIGHT_H + 1) * EIGHT_H
    while t <= last_ts:
        while i + 1 < len(closes) and closes[i + 1][0] < t:
            i += 1
        mark = closes[i][1]  # the close of the last bar that opened before T
        paid += (1 if side is Side.BUY else -1) * QTY * mark * RATE
        n += 1
        t += EIGHT_H
    return n, paid


@pytest.mark.parametrize("side", [Side.BUY, Side.SELL])
def test_funding_of_a_held_position_equals_the_hand_calculation(data: Path, side: Side) -> None:
    bars = _bars(data)
    assert len(bars) > 20_000 and all(b.symbol == "BTC/USDT" for b in bars)
    cfg = ExecutionConfig(taker_fee_bps=5.5, maker_fee_bps=2.0, slippage_bps=0.0, min_notional_usd=0.0,
                          fill_model="ideal_next_open")
    inst = Instrument("BTC/USDT", InstrumentKind.PERP, leverage=2.0, maint_margin_rate=0.005)
    cash0 = 100_000.0
    sink = JournalSink(cash_usd=cash0)
    broker = PaperBroker(cfg, {"BTC/USDT": inst}, sink, cash_usd=cash0, funding=ConstantFunding(RATE))
    first = bars[0]
    broker.on_bar(first)
    far = (1.0, 1e9) if side is Side.BUY else (1e9, 1.0)  # levels the market never reaches: held to the end
    plan = make_plan(side, first.close, far[0], far[1], symbol="BTC/USDT", ts_ms=first.ts_ms)
    broker.submit_entry(make_decision(plan, qty=QTY, nominal_r_usd=100.0), first.ts_ms)
    for bar in bars[1:]:
        broker.on_bar(bar)
    position = broker.positions["BTC/USDT"]
    assert position.ts_open_ms == bars[1].ts_ms and position.qty == QTY

    n, paid = _hand_funding(data, position.ts_open_ms, bars[-1].ts_ms, side)
    fundings = [e for e in sink.entries if e["kind"] == "funding"]
    assert n == 270  # 90 days of 8 h funding times
    assert len(fundings) == n
    assert [e["ts_ms"] % EIGHT_H for e in fundings] == [0] * n
    assert math.isclose(sum(e["fee_usd"] for e in fundings), paid, rel_tol=1e-12)
    assert math.isclose(position.funding_usd, paid, rel_tol=1e-12)
    assert (paid > 0) is (side is Side.BUY)  # a positive rate: longs pay, shorts receive
    entry_fee = sink.fills[0].fee_usd
    assert math.isclose(broker.cash_usd, cash0 - entry_fee - paid, rel_tol=1e-12)

    last = bars[-1]
    trade = broker.close_at("BTC/USDT", last.close, FillReason.EXIT_SIGNAL, last.ts_ms)
    assert trade is not None
    gross = side.sign * QTY * (last.close - position.entry_price)
    assert math.isclose(trade.pnl_usd, gross - entry_fee - trade.exit_fill.fee_usd - paid, rel_tol=1e-12)
    book = fold("bybit", sink.entries)
    assert book.problems == [] and book.positions == {}
    assert math.isclose(book.cash_usd, broker.cash_usd, rel_tol=1e-12)
    assert math.isclose(book.closed_r, trade.trade_r, rel_tol=1e-12)  # funding is in the trade's R, once
