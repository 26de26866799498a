"""The pipeline in-process with real storage: replay-clock day rollover, hygiene, stage timings."""

from __future__ import annotations

from pathlib import Path

from prod_core.configs import ConfigLoader
import pytest

from prod_core.domain import STAGES, Bar, Side
from prod_core.feeds.sim import SimFeed
from prod_core.risk import GovernanceState
from prod_core.runner.pipeline import Pipeline
from prod_core.storage import Storage
from prod_core.telemetry import LiveMetrics
from prod_core.testing.builders import make_bar, make_plan
from tests.conftest import REPO


def _pipeline(tmp_path: Path, gov_overrides: dict, clock_mode: str = "bar"):
    loader = ConfigLoader(REPO / "configs")
    gov, sym = loader.load_governance(), loader.load_symbols()
    data = gov.model_dump()
    for section, values in gov_overrides.items():
        data[section].update(values)
    gov = type(gov).model_validate(data)
    storage = Storage(str(tmp_path / "p.db"))
    storage.start_run("r1", mode="paper", feed="replay", config_hash="x", code_version="t", ts=0.0)
    instruments = {s.symbol: s.instrument() for s in sym.symbols}  # as the runner builds them
    live = LiveMetrics(feeds=["replay"], symbols=list(instruments), strategies=["trend_following", "mean_reversion"])
    events: list[tuple[str, dict]] = []

    def notify(kind, message, **kw):
        events.append((kind, kw.get("fields") or {}))

    p = Pipeline(run_id="r1", gov=gov, instruments=instruments, storage=storage, live=live, notify=notify,
                 state=GovernanceState(), feed_name="replay", clock_mode=clock_mode)
    return p, sym, storage, live, events


def test_replay_clock_resets_daily_lock_at_next_simulated_utc_day(tmp_path: Path) -> None:
    """On the bar clock a max_trades lock is lifted automatically at the next UTC day, recorded as automatic."""
    p, sym, storage, live, events = _pipeline(tmp_path, {"daily_lock": {"max_trades": 1}})
    sim = sym.sim.model_copy(update={"seed": 5, "history_bars": 0})
    day0 = 1_740_009_600_000  # 2025-02-20 00:00 UTC
    for bar in SimFeed(sym.symbols, sim, start_ms=day0, paced=False).iter_bars(3 * 1440):
        p.on_bar(bar)
    kinds = [k for k, _ in events]
    assert "lock_engaged" in kinds
    resets = [f for k, f in events if k == "lock_reset"]
    assert resets and all(f["automatic"] for f in resets)
    assert kinds.index("lock_engaged") < kinds.index("lock_reset")
    storage.close()


def test_malformed_bar_is_counted_and_never_reaches_regime(tmp_path: Path) -> None:
    """A bar with high < low is counted in data_anomalies_total and leaves regime state untouched."""
    p, _, storage, live, _ = _pipeline(tmp_path, {})
    p.on_bar(Bar("BTC/USDT", 60_000, 100.0, 101.0, 99.0, 100.5, 1.0))
    before = p.detector.get("BTC/USDT").n
    p.on_bar(Bar("BTC/USDT", 120_000, 100.0, 98.0, 99.0, 100.5, 1.0))
    p.on_bar(Bar("BTC/USDT", 60_000, 100.0, 101.0, 99.0, 100.5, 1.0))
    assert p.detector.get("BTC/USDT").n == before
    assert live.anomalies_total[("replay", "high_below_low")] == 1
    assert live.anomalies_total[("replay", "duplicate")] == 1
    assert live.bars_total["BTC/USDT"] == 1
    storage.close()


def test_every_stage_gets_timed_in_paper_mode(tmp_path: Path) -> None:
    """With timing on every bar, each of the eight stages has samples after a traded stretch."""
    p, sym, storage, live, _ = _pipeline(tmp_path, {}, clock_mode="wall")
    sim = sym.sim.model_copy(update={"seed": 42, "history_bars": 0})
    for bar in SimFeed(sym.symbols, sim, start_ms=0, paced=False).iter_bars(3000):
        p.on_bar(bar)
    snap = live.stage_times.snapshot()
    assert p.plans_seen > 0
    for stage in STAGES:
        assert snap[stage][2] > 0, stage
    storage.close()


def test_automatic_kill_switch_flattens_at_its_max_dd_threshold(tmp_path: Path) -> None:
    """With kill_switch.auto_at_max_dd_r set, crossing it engages the switch and closes every position."""
    p, sym, storage, live, events = _pipeline(
        tmp_path,
        {"kill_switch": {"auto_at_max_dd_r": 0.3},
         "drawdown": {"throttle_at_r": -50.0, "no_entries_at_r": -60.0},
         "daily_lock": {"max_daily_loss_r": 100.0, "max_consecutive_losses": 1000}},
    )
    sim = sym.sim.model_copy(update={"seed": 42, "history_bars": 0})
    for bar in SimFeed(sym.symbols, sim, start_ms=0, paced=False).iter_bars(6000):
        p.on_bar(bar)
        if p.state.kill_switch:
            break
    assert p.state.kill_switch and p.state.max_dd_r >= 0.3
    assert p.broker.positions == {} and p.broker.pending_entries == {}
    assert any(k == "kill_switch" and f.get("auto") for k, f in events)
    before = p.plans_seen
    for bar in SimFeed(sym.symbols, sim.model_copy(update={"seed": 43}), start_ms=10**12, paced=False).iter_bars(2000):
        p.on_bar(bar)
    assert p.broker.positions == {}  # entries stay blocked while the switch is on
    decisions = {d for (_, d), n in live.plans_total.items() if n}
    assert p.plans_seen == before or "vetoed_kill_switch" in decisions
    storage.close()


def test_the_default_account_reaches_the_gross_exposure_cap_without_a_margin_reject(tmp_path: Path) -> None:
    """Shipped configs: 10,000 USD, 150% gross cap, 50% per symbol, perps at 3x. Entries on a spot and two
    perps (one short) fill whole up to the cap, no order is rejected; the margin they hold fits in equity;
    the fourth entry is refused by the portfolio (exposure), not by the broker."""
    p, sym, storage, live, _ = _pipeline(tmp_path, {})
    prices = {"BNB/USDT": 580.0, "BTC/USDT": 65_000.0, "ETH/USDT": 3_400.0, "SOL/USDT": 150.0}
    sides = {"BNB/USDT": Side.BUY, "BTC/USDT": Side.BUY, "ETH/USDT": Side.SELL, "SOL/USDT": Side.BUY}
    for i, (symbol, price) in enumerate(prices.items()):
        ts = i * 60_000
        volume = 2e6 / price  # about 2M USD a bar, like the sim's calm market: the cap takes 10% of it
        p.on_bar(make_bar(symbol, ts, price, volume=volume))
        side = sides[symbol]
        # a stop 0.4% away: 1R of 50 USD wants ~12,500 USD of notional, the portfolio scales it to its room
        plan = make_plan(side, price, price * (1 - side.sign * 0.004), price * (1 + side.sign * 0.02),
                         symbol=symbol, ts_ms=ts, strategy="trend_following")
        p._handle_plan(plan, False)
        p.on_bar(make_bar(symbol, ts + 60_000, price, volume=volume))
    gross, _net = p.broker.position_exposure_usd()
    equity = p.broker.equity_usd
    assert live.orders_total["rejected"] == 0 and live.execution_reject_rate == 0.0
    assert gross / equity * 100.0 == pytest.approx(150.0, rel=0.01)  # the governance cap, reached
    assert sorted(p.broker.positions) == ["BNB/USDT", "BTC/USDT", "ETH/USDT"]
    assert p.broker.positions["ETH/USDT"].side is Side.SELL
    assert ("trend_following", "vetoed_exposure") in live.plans_total  # the 4th: no room left, a portfolio veto
    assert 0.0 < p.broker.margin_usd < equity and p.broker.available_usd > 0.0
    storage.close()