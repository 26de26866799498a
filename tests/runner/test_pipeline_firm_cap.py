"""The firm-level gross cap in the pipeline (paper mode, real storage on both backends): an entry
that would cross the cap while another account holds exposure is vetoed ``vetoed_firm_gross``."""

from __future__ import annotations

from pathlib import Path

import pytest

from prod_core.configs import ConfigLoader
from prod_core.domain import Side
from prod_core.risk import GovernanceState
from prod_core.runner.pipeline import Pipeline
from prod_core.storage import Storage
from prod_core.telemetry import LiveMetrics
from prod_core.testing.builders import make_plan
from tests.conftest import REPO

NOW = 1_750_000_000.0


def _pipeline(db_target: str, cap: float | None, clock_mode: str = "wall", account: str = "fund-a"):
    loader = ConfigLoader(REPO / "configs")
    gov, sym = loader.load_governance(), loader.load_symbols()
    data = gov.model_dump()
    data["portfolio"]["firm_max_gross_exposure_usd"] = cap
    gov = type(gov).model_validate(data)
    storage = Storage(db_target)
    storage.start_run("r1", mode="paper", feed="sim", config_hash="x", code_version="t", ts=NOW, account=account)
    instruments = {s.symbol: s.instrument() for s in sym.symbols}
    live = LiveMetrics(feeds=["sim"], symbols=list(instruments), strategies=["trend_following", "mean_reversion"])
    events: list[tuple[str, dict]] = []

    def notify(kind, message, **kw):
        events.append((kind, kw.get("fields") or {}))

    p = Pipeline(run_id="r1", gov=gov, instruments=instruments, storage=storage, live=live, notify=notify,
                 state=GovernanceState(), feed_name="sim", clock_mode=clock_mode, account=account,
                 wall_clock=lambda: NOW)
    return p, storage, live, events


def _decisions(storage: Storage) -> dict[str, str]:
    storage.flush()
    return {r["plan_id"]: r["decision"] for r in storage.plans("r1")}


def test_entry_crossing_the_firm_cap_is_vetoed_while_another_account_holds_exposure(db_target: str) -> None:
    p, storage, live, events = _pipeline(db_target, cap=10_000.0)
    storage.set_firm_gross("fund-b", 8000.0, ts=NOW)  # another account (cleanly stopped, positions open)
    plan = make_plan(Side.BUY, 100.0, symbol="BTC/USDT", ts_ms=int(NOW * 1000), plan_id="p1")
    p._handle_plan(plan, False)
    assert _decisions(storage) == {"p1": "vetoed_firm_gross"}
    assert live.plans_total[("trend_following", "vetoed_firm_gross")] == 1
    assert not p.broker.pending_entries
    vetoed = [f for k, f in events if k == "plan_vetoed"]
    assert vetoed and vetoed[0]["decision"] == "vetoed_firm_gross" and "cap 10000.00" in vetoed[0]["reason"]
    assert {r["account"]: r["gross_usd"] for r in storage.firm_exposure()} == {"fund-a": 0.0, "fund-b": 8000.0}

    # the other account's exposure falls: the same entry now fits and is reserved
    storage.set_firm_gross("fund-b", 5000.0, ts=NOW)
    p._handle_plan(make_plan(Side.BUY, 100.0, symbol="BTC/USDT", ts_ms=int(NOW * 1000) + 1, plan_id="p2"), False)
    assert _decisions(storage)["p2"] in ("approved", "resized")
    want = sum(w.remaining * w.decision.plan.entry for w in p.broker.pending_entries.values())
    assert want > 0
    rows = {r["account"]: r["gross_usd"] for r in storage.firm_exposure()}
    assert rows["fund-a"] == pytest.approx(want) and rows["fund-a"] + rows["fund-b"] <= 10_000.0
    # heartbeat save: the row is this account's real gross (working entry included)
    p.record_firm_gross(NOW + 1)
    assert {r["account"]: r["gross_usd"] for r in storage.firm_exposure()}["fund-a"] == pytest.approx(want)
    storage.close()


def test_storage_error_in_the_reservation_blocks_the_entry(db_target: str) -> None:
    """Another connection holds the write lock past the retry window: the entry is vetoed, not sent."""
    p, storage, live, _ = _pipeline(db_target, cap=1_000_000.0)
    storage.retry_window_s = 0.2
    with Storage(db_target) as other, other._tx():
        p._handle_plan(make_plan(Side.BUY, 100.0, symbol="BTC/USDT", ts_ms=int(NOW * 1000), plan_id="p1"), False)
    assert not p.broker.pending_entries and p.storage_ok is False
    assert _decisions(storage) == {"p1": "vetoed_firm_gross"}
    storage.close()


@pytest.mark.parametrize("clock_mode,cap", [("wall", None), ("bar", 1.0)])
def test_cap_off_or_replay_leaves_the_entry_alone(db_target: str, clock_mode: str, cap: float | None) -> None:
    """Cap off (the default), or a replay (its account is its own): no reservation, no row."""
    p, storage, _, _ = _pipeline(db_target, cap=cap, clock_mode=clock_mode)
    storage.set_firm_gross("fund-b", 1e9, ts=NOW)
    p._handle_plan(make_plan(Side.BUY, 100.0, symbol="BTC/USDT", ts_ms=int(NOW * 1000), plan_id="p1"), False)
    assert _decisions(storage)["p1"] in ("approved", "resized") and p.broker.pending_entries
    p.record_firm_gross(NOW)
    assert [r["account"] for r in storage.firm_exposure()] == ["fund-b"]
    storage.close()
