"""`status`: the run, feed states, positions, pending plans and locks.

The run's recorded status is judged against its heartbeat: a run still recorded as
``running`` whose runner has been silent for ``STALE_HEARTBEAT_S`` (it was killed, or
hangs) is shown as ``crashed/unresponsive`` and its feeds as unknown, since nobody is
reporting them. An ALERT_TEST_* drill overlay of a live run is shown too, so a drilled
lock is not mistaken for the real state.

``status`` shows one account (``--account``, default the ACCOUNT setting, else ``paper``) and
its latest run; ``status --all`` one line per account the database knows (saved state, lease,
runs; replays' own accounts only with ``--replays``) and the firm-wide kill-switch.
"""

from __future__ import annotations

import json
import time

from prod_core.cli.common import STALE_HEARTBEAT_S, fmt_ts, liveness, open_storage
from prod_core.cli.operator import account_name, resolve_account

HEALTH = {1: "healthy", 0: "degraded", -1: "paused"}
OVERLAY_EVENT = "alert_test_overlay"


def add_parser(sub) -> None:
    p = sub.add_parser("status", help="show the run, feeds, positions, pending plans and locks")
    p.add_argument("--run-id", default=None, help="a specific run (default: the account's latest)")
    p.add_argument("--account", type=account_name, default=None,
                   help="the account (default: the ACCOUNT setting, else paper)")
    p.add_argument("--all", action="store_true", help="every account of the database, and the firm-wide kill-switch")
    p.add_argument("--replays", action="store_true", help="with --all: list the replays' own accounts too")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def collect(storage, run_id: str | None, now: float | None = None, account: str = "paper") -> dict:
    now = time.time() if now is None else now
    run = storage.get_run(run_id) if run_id else storage.latest_run(account)
    if run is not None and run_id:
        account = run.get("account") or account
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
    state = storage.load_governance_state(account) or {}
    return {
        "account": account,
        "firm_kill_switch": storage.firm_state()["kill_switch"],
        "run": run,
        "liveness": live,
        "heartbeat_age_s": None if age is None else round(age, 1),
        "stale_after_s": STALE_HEARTBEAT_S,
        "alert_test_overlay": overlay,
        "feeds": feeds,
        "positions": storage.open_positions(account),
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


def collect_all(storage, now: float | None = None, *, replays: bool = False) -> dict:
    """Every account of the database (one summary each) and the firm-wide kill-switch."""
    now = time.time() if now is None else now
    accounts = []
    for account in storage.known_accounts(replays=replays):
        run = storage.latest_run(account)
        live, age = liveness(run, now)
        state = storage.load_governance_state(account) or {}
        lease = storage.lease(account)
        accounts.append({
            "account": account,
            "run_id": run["run_id"] if run else None,
            "status": run["status"] if run else None,
            "liveness": live,
            "heartbeat_age_s": None if age is None else round(age, 1),
            "lease": {"run_id": lease["run_id"], "pid": lease["pid"], "host": lease["host"]} if lease else None,
            "open_positions": len(storage.open_positions(account)),
            "daily_lock": state.get("lock_reason", "limits_ok"),
            "kill_switch": bool(state.get("kill_switch", False)),
            "kill_switch_by_firm": storage.firm_kill(account) is not None,
            "dd_stopped": bool(state.get("dd_stopped", False)),
            "holds": state.get("holds", []),
            "pnl_cum_r": round(state.get("closed_r", 0.0) + state.get("open_r", 0.0), 4),
        })
    firm = storage.firm_state()
    return {"firm_kill_switch": firm, "accounts": accounts}


def render_all(info: dict) -> str:
    firm = info["firm_kill_switch"]
    lines = [f"firm kill_switch={'on' if firm['kill_switch'] else 'off'}"
             + (f" (since {fmt_ts(firm['updated_at'])}, by {firm['actor']}: {firm['comment']})"
                if firm["updated_at"] else "")]
    lines.append(f"accounts: {len(info['accounts'])}")
    for a in info["accounts"]:
        age = f" heartbeat {a['heartbeat_age_s']:.0f} s ago" if a["heartbeat_age_s"] is not None else ""
        kill = "on" + (" (firm)" if a["kill_switch_by_firm"] else "") if a["kill_switch"] else "off"
        lines.append(f"  {a['account']}: run={a['run_id'] or '-'} {a['liveness']}{age} positions={a['open_positions']} "
                     f"daily_lock={a['daily_lock']} kill_switch={kill} drawdown_stop={'on' if a['dd_stopped'] else 'off'} "
                     f"holds={','.join(a['holds']) or '-'} pnl_cum_r={a['pnl_cum_r']}")
    return "\n".join(lines)


def render(info: dict, now: float) -> str:
    run = info["run"]
    lines = []
    if info.get("account", "paper") != "paper":
        lines.append(f"account: {info['account']}")
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
    if info.get("firm_kill_switch"):
        lines.append("firm kill_switch=on (every account: `kill-switch off --all --comment ...` lifts it)")
    lines.append(f"account: pnl_cum_r={g['pnl_cum_r']} max_dd_r={g['max_dd_r']} trades_today={g['trades_today']}")
    return "\n".join(lines)


def run(args) -> int:
    now = time.time()
    if args.all:
        with open_storage(args) as storage:
            info = collect_all(storage, now, replays=args.replays)
        print(json.dumps(info, default=str, ensure_ascii=False, indent=2) if args.json else render_all(info))
        return 0
    account = resolve_account(args)
    with open_storage(args) as storage:
        info = collect(storage, args.run_id, now, account)
    if args.json:
        print(json.dumps(info, default=str, ensure_ascii=False, indent=2))
    else:
        print(render(info, now))
    return 0
