"""The report's governance timeline, read from the journal (bar time) and the run's safe-mode events."""

from __future__ import annotations

import json
from pathlib import Path

from prod_core.reports import write_run_report
from prod_core.storage import Storage
from prod_core.storage.sqlite import AccountWrite, journal_row

H = 3_600_000
T0 = 1_750_000_000_000


def _state(**over) -> dict:
    state = {"lock_reason": "limits_ok", "dd_stopped": False, "throttled": False, "kill_switch": False, "holds": []}
    state.update(over)
    return state


def _journal(storage: Storage, bar_ts: int, event: str, state: dict, details: dict | None = None) -> None:
    body = {"state": state, "details": details or {}, "bar_ts_ms": bar_ts}
    storage.commit_account(AccountWrite(account="paper", run_id="r1", ts=1.0,
                                        entries=(journal_row(bar_ts + 999, "governance", event, body),),
                                        snapshot={"cash_usd": 1000.0}))


def test_timeline_lists_transitions_and_commands_and_shades_their_spans(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path / "r.db"))
    storage.start_run("r1", mode="paper", feed="sim", config_hash="x", code_version="t", ts=1.0)
    for i in range(11):  # equity rows give the run's bar span: T0 .. T0 + 10 h
        storage.add_equity("r1", ts_ms=T0 + i * H, equity_usd=1000.0 - i, cash_usd=1000.0, pnl_cum_r=-0.1 * i,
                           dd_state=-0.1 * i, max_dd_r=0.1 * i, exposure_gross_pct=0.0, exposure_net_pct=0.0)
    _journal(storage, 0, "config", _state())  # at start, before the first bar
    _journal(storage, T0 + 1 * H, "lock_engaged", _state(lock_reason="max_daily_loss"))
    _journal(storage, T0 + 2 * H, "command:unlock", _state(), {"actor": "ops", "comment": "reviewed", "status": "applied"})
    _journal(storage, T0 + 3 * H, "kill_switch", _state(kill_switch=True), {"auto": True})
    _journal(storage, T0 + 4 * H, "command:hold", _state(kill_switch=True, holds=["meanrev"]),
             {"actor": "ops", "comment": "noisy", "status": "applied"})
    _journal(storage, T0 + 5 * H, "command:kill-switch", _state(holds=["meanrev"]),
             {"actor": "ops", "comment": "resume", "status": "applied"})
    _journal(storage, T0 + 6 * H, "drawdown_ladder", _state(holds=["meanrev"], dd_stopped=True, throttled=True))
    storage.add_event("r1", ts=5.0, kind="safe_mode_engaged", severity="warning", component="portfolio",
                      message="on", fields={"reason": "correlation +0.2 above baseline", "ts_ms": T0 + 7 * H})
    storage.add_event("r1", ts=6.0, kind="safe_mode_released", severity="info", component="portfolio",
                      message="off", fields={"reason": "", "ts_ms": T0 + 8 * H})
    storage.end_run("r1", status="stopped", ts=100.0)
    folder = write_run_report(storage, "r1", tmp_path / "reports", pictures=False)
    figures = json.loads((folder / "summary.json").read_text())
    whats = [(e["ts_ms"], e["what"]) for e in figures["timeline"]["entries"]]
    assert whats == [
        (T0 + 1 * H, "daily lock engaged (max_daily_loss)"),
        (T0 + 2 * H, "operator unlock (applied) by ops: reviewed"),
        (T0 + 2 * H, "daily lock lifted"),
        (T0 + 3 * H, "kill-switch ON (automatic)"),
        (T0 + 4 * H, "operator hold (applied) by ops: noisy"),
        (T0 + 4 * H, "hold meanrev"),
        (T0 + 5 * H, "operator kill-switch (applied) by ops: resume"),
        (T0 + 5 * H, "kill-switch off"),
        (T0 + 6 * H, "drawdown stop (no new entries)"),
        (T0 + 6 * H, "drawdown throttle on"),
        (T0 + 7 * H, "safe mode on: correlation +0.2 above baseline"),
        (T0 + 8 * H, "safe mode off"),
    ]
    spans = [(s["kind"], s["start_ms"], s["end_ms"]) for s in figures["timeline"]["spans"]]
    assert spans == [("lock", T0 + H, T0 + 2 * H), ("kill_switch", T0 + 3 * H, T0 + 5 * H),
                     ("drawdown_stop", T0 + 6 * H, T0 + 10 * H),  # still stopped at the end: shaded to the last bar
                     ("safe_mode", T0 + 7 * H, T0 + 8 * H)]
    series = (folder / "series" / "spans.csv").read_text().splitlines()
    assert series[0] == "kind,start_ms,end_ms" and len(series) == 5
    summary = (folder / "summary.md").read_text()
    assert "| 2025-06-15 17:06 | operator unlock (applied) by ops: reviewed |" in summary
    assert "Entries blocked (lock / drawdown stop / kill-switch) for 7.0 h in all, safe mode on for 1.0 h" in summary
    storage.close()
