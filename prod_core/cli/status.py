"""`status`: the run, feed states, positions, pending plans and locks.

The run's recorded status is judged against its heartbeat: a run still recorded as
``running`` whose runner has been silent for ``STALE_HEARTBEAT_S`` (it was killed, or
hangs) is shown as ``crashed/unresponsive`` and its feeds as unknown, since nobody is
reporting them. An ALERT_TEST_* drill overlay of a live run is shown too, so a drilled
lock is not mistaken for the real state.
"""

from __future__ import annotations

import json
import time

from prod_core.cli.common import STALE_HEARTBEAT_S, fmt_ts, liveness, open_storage

HEALTH = {1: "healthy", 0: "degraded", -1: "paused"}
OVERLAY_EVENT = "alert_test_overlay"


def add_parser(sub) -> None:
    p = sub.add_parser("status", help="show the run, feeds, positions, pending plans and locks")
    p.add_argument("--run-id", default=None, help="a specific run (default: the latest)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def collect(storage, run_id: str | None, now: float | None = None) -> dict:
    now = time.time() if now is None else now
    runs = [storage.get_run(run_id)] if run_id else storage.list_runs(limit=1)
    run = runs[0] if runs and runs[0] else None
    rid = run["run_id"] if run else None
    live, age = liveness(run, now)
    feeds = storage.feed_states(rid) if rid else []
    if live in ("crashed/unresponsive", "crashed"):
        # Nobody reports these feeds any more: the last recorded value is history, not state.
        feeds = [{**f, "health": None, "state": "unknown", "last_health": f["health"]} for f in feeds]
    else:
        feeds = [{**f, "state": HEALTH.get(f["health"], "?")} for f in feeds]
    overlay: dict[str, str] = {}
    if live == "alive":
        for ev in storage.events(rid):
            if ev["kind"] == OVERLAY_EVENT and ev["fields"].get("variable"):
                overlay[ev["fields"]["variable"]] = str(ev["fields"].get("value"))
    state = storage.load_governance_state() or {}
    return {
        "run": run,
        "liveness": live,
        "heartbeat_age_s": None if age is None else round(age, 1),
        "stale_after_s": STALE_HEARTBEAT_S,
        "alert_test_overlay": overlay,
        "feeds": feeds,
        "positions": storage.open_positions(),
        "pending_plans": storage.pending_plans(rid) if rid else [],
        "governance": {
            "daily_lock": state.get("lock_reason", "limits_ok"),
            "kill_switch": bool(state.get("kill_switch", False)),
            "dd_stopped": bool(state.get("dd_stopped", False)),
            "pnl_cum_r": round(state.get("closed_r", 0.0) + state.get("open_r", 0.0), 4),
            "max_dd_r": round(state.get("max_dd_r", 0.0), 4),
            "holds": state.get("holds", []),
            "trades_today": state.get("trades_today", 0),
        },
    }


def render(info: dict, now: float) -> str:
    run = info["run"]
    lines = []
    if run is None:
        lines.append("run: none recorded yet (start one with scripts/run_paper.sh)")
    else:
        age = now - run["heartbeat_at"] if run.get("heartbeat_at") else None
        hb = f"{age:.1f} s ago" if age is not None else "-"
        shown = run["status"]
        if info["liveness"] == "crashed/unresponsive":
            silent = info["heartbeat_age_s"]
            shown = "crashed/unresponsive (no heartbeat" + (f" for {silent:.0f} s)" if silent is not None else ")")
        lines.append(f"run: {run['run_id']}  status={shown}  feed={run['feed']}")
        lines.append(f"  started {fmt_ts(run['started_at'])}, ended {fmt_ts(run.get('ended_at'))}, heartbeat {hb}")
    if info["alert_test_overlay"]:
        drills = ", ".join(f"{k}={v}" for k, v in sorted(info["alert_test_overlay"].items()))
        lines.append(f"ALERT_TEST overlay active: {drills} (test drill; not real state)")
    lines.append("feeds:")
    for f in info["feeds"] or []:
        if f["state"] == "unknown":
            last = f["last_health"]
            lines.append(f"  {f['feed']}: feed_health=unknown (runner not reporting; last recorded {last} "
                         f"{HEALTH.get(last, '?')} at {fmt_ts(f.get('updated_at'))})")
        else:
            lines.append(f"  {f['feed']}: feed_health={f['health']} ({f['state']}) {f.get('detail') or ''}".rstrip())
    if not info["feeds"]:
        lines.append("  none")
    lines.append(f"positions: {len(info['positions'])} open")
    for p in info["positions"]:
        lines.append(f"  {p['symbol']} {p['side']} qty={p['qty']:.8g} entry={p['entry_price']:.8g} "
                     f"stop={p['stop']:.8g} target={p['target']:.8g} ({p['strategy']})")
    lines.append(f"pending plans: {len(info['pending_plans'])}")
    for p in info["pending_plans"]:
        lines.append(f"  {p['plan_id']} {p['side']} {p['symbol']} qty={p['qty']:.8g}")
    g = info["governance"]
    lines.append(f"locks: daily_lock={g['daily_lock']} kill_switch={'on' if g['kill_switch'] else 'off'} "
                 f"drawdown_stop={'on' if g['dd_stopped'] else 'off'} holds={','.join(g['holds']) or '-'}")
    lines.append(f"account: pnl_cum_r={g['pnl_cum_r']} max_dd_r={g['max_dd_r']} trades_today={g['trades_today']}")
    return "\n".join(lines)


def run(args) -> int:
    now = time.time()
    with open_storage(args) as storage:
        info = collect(storage, args.run_id, now)
    if args.json:
        print(json.dumps(info, default=str, ensure_ascii=False, indent=2))
    else:
        print(render(info, now))
    return 0
