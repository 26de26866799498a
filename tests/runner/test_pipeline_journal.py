"""The real pipeline on real SQLite storage: the account is its journal, through trading and storage failures."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from prod_core.account import compare, fold
from prod_core.configs import ConfigLoader
from prod_core.configs.governance import ExecutionConfig, GovernanceConfig
from prod_core.domain import Bar, FillReason, Instrument, InstrumentKind, Side
from prod_core.feeds.funding import ConstantFunding
from prod_core.execution import PaperBroker
from prod_core.runner.account import open_book, reconcile_at_start
from prod_core.runner.pipeline import Pipeline
from prod_core.storage import Storage, StorageError
from prod_core.telemetry import LiveMetrics
from prod_core.testing import synthetic_rows
from prod_core.testing.builders import RecordingSink, make_bar, make_decision, make_instruments, make_plan

REPO = Path(__file__).resolve().parents[2]
RUN = "r1"
START_CASH = 10_000.0
SYMS = {"BTC/USDT": InstrumentKind.PERP, "ETH/USDT": InstrumentKind.PERP, "BNB/USDT": InstrumentKind.SPOT}
FUNDING_MS = 3_600_000
N_BARS = 1500  # per symbol: 25 hours of 1m bars, two UTC days, ~30 trades


def _gov(realistic: bool = False) -> GovernanceConfig:
    """The shipped config with the drawdown stop and daily loss lock pushed away, so the account keeps trading.

    Not ``realistic``: market orders fill whole at open +- the spread (no impact, no participation
    cap), so a test can price an exit by hand; ``realistic`` keeps the shipped fill model (partial fills)."""
    gov = ConfigLoader(REPO / "configs").load_governance()
    data = gov.model_dump()
    if not realistic:
        data["execution"].update(impact_coef=0.0, max_participation_pct=None)
    data["drawdown"].update(throttle_at_r=-5.0, no_entries_at_r=-1000.0)
    data["daily_lock"].update(max_daily_loss_r=1000.0, max_consecutive_losses=1000)
    return GovernanceConfig.model_validate(data)


def _bars(n: int = N_BARS) -> list[Bar]:
    """Three deterministic symbols, merged in time order (equal timestamps in symbol order)."""
    order = list(SYMS)
    bars = [Bar(sym, *row) for i, sym in enumerate(order)
            for row in synthetic_rows(n, seed=10 + i, price=(100.0, 20.0, 5.0)[i], vol=0.003)]
    return sorted(bars, key=lambda b: (b.ts_ms, order.index(b.symbol)))


class FlakyStorage:
    """The real storage, except that ``commit_account`` raises while ``failing`` is set (a full disk)."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner
        self.failing = False
        self.failed: list[Any] = []  # the AccountWrites refused

    def commit_account(self, write, *, immediate: bool = True) -> None:
        if self.failing:
            self.failed.append(write)
            raise StorageError(f"database {self.inner.path}: database or disk is full (test)")
        self.inner.commit_account(write, immediate=immediate)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@dataclass
class Rig:
    pipe: Pipeline
    storage: Storage
    live: LiveMetrics
    account: str
    gov: GovernanceConfig


def _rig(tmp_path: Path, *, immediate: bool = True, account: str = "paper", flaky: bool = False,
         run_id: str = RUN, clock_mode: str = "bar", now_s: float = 1_700_000_000.0, realistic: bool = False) -> Rig:
    """Open the account like the runner does (journal fold, reconcile, state from the book), then a Pipeline.

    Perps trade on 3x isolated margin and pay a constant funding rate of 0.01% every hour (so that
    the short trades of these bars live through funding times)."""
    gov = _gov(realistic)
    storage = Storage(str(tmp_path / "account.db"))
    storage.start_run(run_id, mode="paper", feed="replay", config_hash="x", code_version="test", ts=now_s)
    book = open_book(storage, account, run_id, starting_cash=START_CASH, actor="test")
    assert reconcile_at_start(storage, book, run_id, actor="test") == []
    state = book.state
    state.cash_usd = book.cash_usd
    instruments = {s: Instrument(symbol=s, kind=k, leverage=3.0 if k is InstrumentKind.PERP else 1.0,
                                 maint_margin_rate=0.005, funding_interval_ms=FUNDING_MS) for s, k in SYMS.items()}
    live = LiveMetrics(feeds=["replay"], symbols=list(instruments), strategies=["trend_following", "mean_reversion"])
    store = FlakyStorage(storage) if flaky else storage
    pipe = Pipeline(run_id=run_id, gov=gov, instruments=instruments, storage=store, live=live,
                    notify=lambda *a, **k: None, state=state, feed_name="replay", clock_mode=clock_mode,
                    wall_clock=lambda: now_s, account=account, immediate=immediate, funding=ConstantFunding(0.0001))
    pipe.mark_journaled()  # as the runner does right after building the pipeline
    if state.config_hash != "test-config":
        state.config_hash = "test-config"
        assert pipe.journal_governance("config", {"hash": "test-config", "trigger": "start"})
    return Rig(pipe, storage, live, account, gov)


def _flow(fill: dict[str, Any]) -> float:
    """A fills-table row's cash flow: a buy pays qty*price, a sell receives it, the fee is always paid."""
    notional = fill["qty"] * fill["price"]
    return (-notional if fill["side"] == "buy" else notional) - fill["fee_usd"]


def _expected_cash(rig: Rig, fills: list[dict[str, Any]]) -> float:
    """The wallet from the trade rows, independently of the fold: a closed trade moved it by its
    pnl (every fee, partial exit and funding included); an open position so far by its realised
    partial exits less its entry fees and funding, and a fully funded one also by its cost."""
    funded = {s for s, inst in rig.pipe.instruments.items() if inst.kind is not InstrumentKind.PERP}
    cash = START_CASH + sum(r["pnl_usd"] for r in rig.storage.closed_trades(RUN))
    for r in rig.storage.open_positions(rig.account):
        cash += r["realized_usd"] - r["entry_fee_usd"] - r["funding_usd"]
        if r["symbol"] in funded or not r["leverage"]:
            cash -= (1 if r["side"] == "buy" else -1) * r["qty"] * r["entry_price"]
    return cash


def _check_account(rig: Rig, *, memory: bool = True):
    """The journal's fold equals the saved snapshot and the trading tables; returns the fold."""
    storage, account = rig.storage, rig.account
    book = fold(account, storage.journal(account))
    saved = storage.load_governance_state(account)
    rows = storage.open_positions(account)
    assert compare(book, saved, rows) == []
    fills = storage.fills(RUN)
    cash = _expected_cash(rig, fills)
    assert math.isclose(book.cash_usd, cash, rel_tol=1e-6)
    assert math.isclose(saved["cash_usd"], cash, rel_tol=1e-6)
    closed = storage.closed_trades(RUN)
    trade_r = sum(r["trade_r"] for r in closed)
    assert math.isclose(book.closed_r, trade_r, rel_tol=1e-9, abs_tol=1e-9)
    assert math.isclose(saved["closed_r"], trade_r, rel_tol=1e-9, abs_tol=1e-9)
    # none lost: every entry fill's position is closed or still open, every exit fill closed one
    orders = {o["order_id"]: o for o in storage.orders(RUN)}
    entry_plans = sorted({orders[f["order_id"]]["plan_id"] for f in fills if f["reason"] == "entry"})
    closed_plans = {r["plan_id"] for r in closed}
    open_plans = {r["plan_id"] for r in rows}
    assert not closed_plans & open_plans
    assert entry_plans == sorted(closed_plans | open_plans)  # a worked entry may fill in several parts
    events = [e["event"] for e in storage.journal(account) if e["kind"] == "fill"]
    assert events.count("open") == len(entry_plans) and events.count("close") == len(closed)
    assert book.fills == len(fills)
    if memory:  # what the pipeline holds is what the journal says
        broker = rig.pipe.broker
        assert math.isclose(broker.cash_usd, book.cash_usd, rel_tol=1e-12)
        assert {p.position_id for p in broker.positions.values()} == set(book.positions)
        assert math.isclose(rig.pipe.state.closed_r, book.closed_r, rel_tol=1e-12, abs_tol=1e-12)
    return book


def _exit_price(side: Side, bar: Bar, slippage_bps: float) -> float:
    """A market exit at ``bar``'s open: slippage against the position, kept inside the bar's range."""
    slip = slippage_bps / 10_000.0
    price = bar.open * (1.0 - slip) if side is Side.BUY else bar.open * (1.0 + slip)
    return min(max(price, bar.low), bar.high)


def _approved(live: LiveMetrics) -> int:
    return sum(n for (_, decision), n in live.plans_total.items() if decision in ("approved", "resized"))


def _vetoed_storage(live: LiveMetrics) -> int:
    return sum(n for (_, decision), n in live.plans_total.items() if decision == "vetoed_storage")


def test_paper_run_journal_folds_to_the_saved_snapshot(tmp_path: Path) -> None:
    """Through a paper run with many trades the fold of the journal equals the saved snapshot and the fills table."""
    rig = _rig(tmp_path)
    pipe = rig.pipe
    checked_open = 0
    seen = pipe.fills_seen
    for bar in _bars():
        pipe.on_bar(bar)
        if pipe.fills_seen != seen:  # after every bar with a fill, while positions are open too
            seen = pipe.fills_seen
            _check_account(rig)
            checked_open += bool(pipe.broker.positions)
    book = _check_account(rig)
    assert len(rig.storage.closed_trades(RUN)) >= 10
    assert checked_open >= 5, "the run should be checked while positions are open"
    kinds = {e["event"] for e in rig.storage.journal(rig.account) if e["kind"] == "governance"}
    assert {"config", "day_roll"} <= kinds  # transitions are journaled, not only fills
    assert book.state.day == pipe.state.day and book.state.trades_today == pipe.state.trades_today
    assert book.state.consecutive_losses == pipe.state.consecutive_losses
    rig.storage.close()


def test_replay_batch_journal_folds_to_the_snapshot_after_flush(tmp_path: Path) -> None:
    """A replay batches its journal commits into the flush; after the flush the fold equals the snapshot."""
    rig = _rig(tmp_path, immediate=False, account=f"replay:{RUN}")
    pipe = rig.pipe
    bars = _bars()
    for i, bar in enumerate(bars):
        pipe.on_bar(bar)
        if i % 1000 == 999:
            assert rig.storage.buffered_rows > 0  # commits wait for the flush
            rig.storage.flush()
            _check_account(rig)
    pipe.flatten_at_end()
    rig.storage.flush()
    _check_account(rig)
    assert len(rig.storage.closed_trades(RUN)) >= 10
    assert rig.storage.open_positions(rig.account) == []
    assert rig.storage.open_positions("paper") == []  # a replay never touches the paper account
    rig.storage.close()


def test_storage_failure_vetoes_entries_keeps_cash_and_retries_the_exit(tmp_path: Path) -> None:
    """While every commit fails entries are vetoed and cash stays put; the unjournaled exit fills at the next open."""
    rig = _rig(tmp_path, flaky=True)
    pipe, live, flaky = rig.pipe, rig.live, rig.pipe.storage
    bars = _bars()
    i = 0
    # trade normally until a position has been open for a few bars, then fail from the next timestamp
    while not (pipe.broker.positions and bars[i].ts_ms != bars[i - 1].ts_ms and len(rig.storage.fills(RUN)) >= 4):
        pipe.on_bar(bars[i])
        i += 1
    _check_account(rig)
    flaky.failing = True
    cash = pipe.broker.cash_usd
    journal_size = rig.storage.journal_size(rig.account)
    fills_seen = pipe.fills_seen
    positions = {p.position_id for p in pipe.broker.positions.values()}
    approved_at_failure: int | None = None
    vetoed_at_failure = 0
    failing_bars = 0
    while True:
        bar = bars[i]
        i += 1
        pipe.on_bar(bar)
        failing_bars += 1
        assert pipe.broker.cash_usd == cash  # no fill changes cash while it cannot be journaled
        assert pipe.fills_seen == fills_seen
        assert {p.position_id for p in pipe.broker.positions.values()} <= positions  # nothing new opened
        if flaky.failed:
            assert not pipe.storage_ok
            if approved_at_failure is None:
                approved_at_failure = _approved(live)
                vetoed_at_failure = _vetoed_storage(live)
            assert _approved(live) == approved_at_failure  # every new plan vetoed
        failed_close = any(w.close is not None for w in flaky.failed)
        done = failed_close and approved_at_failure is not None and _vetoed_storage(live) > vetoed_at_failure
        if done and failing_bars >= 30 and bars[i].ts_ms != bar.ts_ms:
            break
        assert i < len(bars) - 300, "the failing stretch should see a failed exit and a vetoed plan"
    assert rig.storage.journal_size(rig.account) == journal_size
    assert {p.position_id for p in pipe.broker.positions.values()} == positions  # the exit was not dropped
    retries = sum(1 for w in flaky.failed if w.close is not None)
    assert retries >= 2  # a failed exit is retried on the next bars
    pending = {sym: pipe.broker.positions[sym] for sym in pipe.broker.pending_exits}
    assert pending, "the exit that could not be journaled stays pending"
    _check_account(rig, memory=False)  # the journal and the snapshot still agree with each other

    flaky.failing = False
    retried: dict[str, Bar] = {}
    while len(retried) < len(pending):
        bar = bars[i]
        i += 1
        pipe.on_bar(bar)
        if bar.symbol in pending and bar.symbol not in retried:
            retried[bar.symbol] = bar
            p = pending[bar.symbol]
            assert p.position_id not in {q.position_id for q in pipe.broker.positions.values()}
            row = next(r for r in rig.storage.closed_trades(RUN) if r["position_id"] == p.position_id)
            assert row["ts_close_ms"] == bar.ts_ms
            assert row["exit_price"] == _exit_price(p.side, bar, rig.gov.execution.slippage_bps)
    assert pipe.storage_ok
    _check_account(rig)
    vetoed = [r for r in rig.storage.plans(RUN) if r["decision"] == "vetoed_storage"]
    assert vetoed and all(r["status"] == "vetoed" for r in vetoed)  # the vetoes are on record after recovery
    approved_after = _approved(live)
    for bar in bars[i:]:
        pipe.on_bar(bar)
    assert _approved(live) > approved_after  # entries resume once storage works
    _check_account(rig)
    rig.storage.close()


@pytest.mark.parametrize("period,phase", [(23, 3), (101, 5)])
def test_intermittent_storage_failures_never_split_memory_journal_and_snapshot(tmp_path: Path, period: int,
                                                                                phase: int) -> None:
    """With commits failing on and off (and a heartbeat save like the runner's), memory, journal and snapshot agree."""
    rig = _rig(tmp_path, flaky=True, realistic=True)
    pipe, flaky = rig.pipe, rig.pipe.storage
    for i, bar in enumerate(_bars()):
        flaky.failing = (i // period) % phase == 0
        pipe.on_bar(bar)
        if i % 20 == 0:  # the runner's heartbeat: save (journaling what is pending), recovered on success
            try:
                pipe.save_snapshot()
            except StorageError as exc:
                pipe.storage_failed(exc)
            else:
                pipe.storage_ok = True
    flaky.failing = False
    pipe.save_snapshot()
    assert len(flaky.failed) > 20 and len(rig.storage.closed_trades(RUN)) >= 10
    assert not pipe.broker.pending_exits
    book = _check_account(rig)
    s, j = pipe.state, book.state
    assert (j.day, j.trades_today, j.consecutive_losses, j.lock_reason, j.peak_r) == (
        s.day, s.trades_today, s.consecutive_losses, s.lock_reason, s.peak_r)
    rig.storage.close()


# ------------------------------------------------------------------------------------------ regressions
# Bugs these tests found (both fixed): a silent day roll at start, a retried target recorded as maker.

DAY1_S = 1_740_009_600.0  # 2025-02-20 00:00 UTC


def test_wall_clock_restart_on_a_new_day_saves_a_snapshot_equal_to_the_journal(tmp_path: Path) -> None:
    """A paper (wall clock) restart on a new UTC day never saves daily counters the journal does not have
    (the day is rolled by ``tick``, which journals it, not silently when the pipeline is built)."""
    rig = _rig(tmp_path, run_id="r1", clock_mode="wall", now_s=DAY1_S + 3600)
    bars = _bars()
    i = 0
    while len(rig.storage.closed_trades("r1")) < 2:  # trade a little on day 1
        rig.pipe.on_bar(bars[i])
        i += 1
    rig.pipe.save_snapshot()
    _check_account(rig)
    assert rig.pipe.state.trades_today >= 2
    rig.storage.end_run("r1", status="stopped", ts=DAY1_S + 7200)
    rig.storage.close()

    # the next UTC day, same config: the start journals nothing
    day2 = _rig(tmp_path, run_id="r2", clock_mode="wall", now_s=DAY1_S + 86_400 + 3600)
    day2.pipe.save_snapshot()  # the runner's heartbeat save, before any fill on day 2
    book = fold(day2.account, day2.storage.journal(day2.account))
    saved = day2.storage.load_governance_state(day2.account)
    diffs = compare(book, saved, day2.storage.open_positions(day2.account))
    day2.storage.close()
    assert diffs == [], "saved snapshot != journal: " + "; ".join(diffs)


def test_a_retried_target_exit_records_the_fee_of_its_liquidity() -> None:
    """A target exit that could not be journaled is retried at the next open at market (slippage, taker fee)
    and its fill is recorded as taker liquidity, matching the fee it paid."""
    cfg = ExecutionConfig(taker_fee_bps=10.0, maker_fee_bps=2.0, slippage_bps=5.0, min_notional_usd=10.0)
    sink = RecordingSink()
    broker = PaperBroker(cfg, make_instruments(("BTC/USDT",), ()), sink, cash_usd=100_000.0)
    broker.on_bar(make_bar("BTC/USDT", 0, 100.0))
    broker.submit_entry(make_decision(make_plan(Side.BUY, 100.0, 98.0, 104.0, ts_ms=0), qty=10.0), 0)
    broker.on_bar(make_bar("BTC/USDT", 60_000, 100.0))
    assert "BTC/USDT" in broker.positions
    cash = broker.cash_usd
    sink.accept = False  # storage cannot journal: the target hit on this bar stays a pending exit
    broker.on_bar(make_bar("BTC/USDT", 120_000, 101.0, high=105.0))
    assert "BTC/USDT" in broker.pending_exits and broker.cash_usd == cash
    sink.accept = True
    broker.on_bar(make_bar("BTC/USDT", 180_000, 103.0, high=103.5, low=102.0))
    exit_fill = sink.fills[-1]
    assert exit_fill.reason is FillReason.TARGET and exit_fill.price == pytest.approx(103.0 * (1 - 0.0005))
    rate = cfg.maker_fee_bps if exit_fill.liquidity == "maker" else cfg.taker_fee_bps
    assert exit_fill.fee_usd == pytest.approx(exit_fill.qty * exit_fill.price * rate / 10_000, rel=1e-9)


def test_a_realistic_run_journals_funding_and_partial_fills_and_folds_exactly(tmp_path: Path) -> None:
    """With the shipped fill model (participation cap) and perps on margin paying funding, the journal
    holds funding payments and worked (partial) fills, and its fold equals memory and the snapshot."""
    rig = _rig(tmp_path, realistic=True)
    for bar in _bars():
        rig.pipe.on_bar(bar)
    rig.pipe.save_snapshot()
    book = _check_account(rig)
    journal = rig.storage.journal(rig.account)
    kinds = {(e["kind"], e["event"]) for e in journal}
    assert ("funding", "funding") in kinds and book.fundings > 0
    assert ("fill", "increase") in kinds or ("fill", "reduce") in kinds
    fundings = [e for e in journal if e["kind"] == "funding"]
    assert all(e["ts_ms"] % FUNDING_MS == 0 for e in fundings)  # at the funding times only
    for e in fundings:  # qty * mark * rate, paid by longs, received by shorts
        sign = 1 if e["side"] == "buy" else -1
        assert math.isclose(e["fee_usd"], sign * e["qty"] * e["price"] * 0.0001, rel_tol=1e-12)
    rig.storage.close()
