"""Operator commands that change governance: kill-switch, unlock, lock, reset-dd, hold,
release, reload, restart-feed.

Each command is written to the commands table with who (the OS user), when and why.
A running runner applies it within a second and records the outcome; with no runner up,
it is applied when the next run starts.
"""

from __future__ import annotations

import sys
import time

from prod_core.cli.common import actor, open_storage
from prod_core.configs import ConfigError, ConfigLoader

ALIVE_S = 5.0
WAIT_S = 6.0


def add_parsers(sub) -> None:
    p = sub.add_parser("kill-switch", help="flatten everything and block entries (on) / allow entries again (off)")
    p.add_argument("state", choices=["on", "off"])
    p.add_argument("--comment", default="", help="why (audited)")
    p.set_defaults(func=run, command="kill-switch")

    p = sub.add_parser("unlock", help="lift the daily lock (audited; --comment required)")
    p.add_argument("--comment", required=True, help="why the lock may be lifted (audited)")
    p.set_defaults(func=run, command="unlock")

    p = sub.add_parser("lock", help="engage a manual daily lock")
    p.add_argument("--comment", default="", help="why (audited)")
    p.set_defaults(func=run, command="lock")

    p = sub.add_parser("reset-dd", help="start a new drawdown epoch so entries may resume (--comment required)")
    p.add_argument("--comment", required=True, help="why trading may resume (audited)")
    p.set_defaults(func=run, command="reset-dd")

    for name, text in (("hold", "stop new entries of a strategy (exits still managed)"),
                       ("release", "let a held strategy enter again")):
        p = sub.add_parser(name, help=text)
        p.add_argument("strategy", help="a strategy configured under `strategies` in governance.yaml")
        p.add_argument("--comment", default="", help="why (audited)")
        p.set_defaults(func=run, command=name)

    p = sub.add_parser("reload", help="re-read configs/governance.yaml now (validated; refused edits keep the old config)")
    p.add_argument("--comment", default="")
    p.set_defaults(func=run, command="reload")

    p = sub.add_parser("restart-feed", help="restart the market-data feed of the running runner")
    p.add_argument("--comment", default="")
    p.set_defaults(func=run, command="restart-feed")


def _args(ns) -> dict:
    if ns.command == "kill-switch":
        return {"state": ns.state}
    if ns.command in ("hold", "release"):
        return {"strategy": ns.strategy}
    return {}


def _alive_run(storage) -> dict | None:
    runs = storage.list_runs(limit=1)
    if runs and runs[0]["status"] == "running" and runs[0].get("heartbeat_at"):
        if time.time() - runs[0]["heartbeat_at"] < ALIVE_S:
            return runs[0]
    return None


def _configured_strategies() -> tuple[str, ...] | None:
    """Strategy names of governance.yaml (CONFIG_DIR or ./configs); None when it cannot be read
    (the runner then checks the name when it applies the command)."""
    try:
        return tuple(ConfigLoader().load_governance().strategies)
    except ConfigError:
        return None


def _silent_note(storage) -> str:
    """Say so when the latest run is still recorded as running but its runner is silent."""
    runs = storage.list_runs(limit=1)
    if not runs or runs[0]["status"] != "running":
        return ""
    last = runs[0].get("heartbeat_at") or runs[0]["started_at"]
    return f" (run {runs[0]['run_id']} is recorded as running but has no heartbeat for {time.time() - last:.0f} s)"


def run(ns) -> int:
    comment = (ns.comment or "").strip()
    if ns.command in ("unlock", "reset-dd") and not comment:
        print(f"error: {ns.command} needs a non-empty --comment (it is audited)", file=sys.stderr)
        return 2
    if ns.command == "hold":
        known = _configured_strategies()
        if known is not None and ns.strategy not in known:
            print(f"error: unknown strategy {ns.strategy!r}; configured in {ConfigLoader().governance_path}: "
                  f"{', '.join(known) or 'none'}", file=sys.stderr)
            return 2
    with open_storage(ns) as storage:
        cmd_id = storage.enqueue_command(ns.command, args=_args(ns), comment=comment, actor=actor(), ts=time.time())
        alive = _alive_run(storage)
        if alive is None:
            print(f"queued command #{cmd_id} {ns.command}: no runner is running{_silent_note(storage)}; "
                  f"it is applied when the next run starts")
            return 0
        deadline = time.time() + WAIT_S
        while time.time() < deadline:
            row = storage.get_command(cmd_id)
            if row and row["status"] != "pending":
                print(f"command #{cmd_id} {ns.command}: {row['status']} by run {row['run_id']}: {row['result']}")
                return 0 if row["status"] == "applied" else 1
            time.sleep(0.1)
    print(f"command #{cmd_id} {ns.command}: queued; run {alive['run_id']} has not applied it within {WAIT_S:.0f} s")
    return 1
