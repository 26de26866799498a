"""`status`: the run, feed states, positions, pending plans and locks."""

from __future__ import annotations

import json
import time

from prod_core.cli.common import fmt_ts, open_storage

HEALTH = {1: "healthy", 0: "degraded", -1: "paused"}


def add_parser(sub) -> None:
    p = sub.add_parser("status", help="show the run, feeds, positions, pending plans and locks")
    p.add_argument("--run-id", default=None, help="a specific run (default: the latest)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def collect(storage, run_id: str | None) -> dict:
    runs = [storage.get_run(run_id)] if run_id else storage.list_runs(limit=1)
    run = runs[0] if runs and runs[0] else None
    rid = run["run_id"] if run else None
    state = storage.load_governance_state() or {}
    return {
        "run": run,
        "feeds": storage.feed_states(rid) if rid else [],
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
        lines.append(f"run: {run['run_id']}  status={run['status']}  feed={run['feed']}")
        lines.append(f"  started {fmt_ts(run['started_at'])}, ended {fmt_ts(run.get('ended_at'))}, heartbeat {hb}")
    lines.append("feeds:")
    for f in info["feeds"] or []:
        lines.append(f"  {f['feed']}: feed_health={f['health']} ({HEALTH.get(f['health'], '?')}) {f.get('detail') or ''}".rstrip())
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
    with open_storage(args) as storage:
        info = collect(storage, args.run_id)
    if args.json:
        print(json.dumps(info, default=str, ensure_ascii=False, indent=2))
    else:
        print(render(info, time.time()))
    return 0
