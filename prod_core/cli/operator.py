"""Operator commands that change governance: kill-switch, unlock, lock, reset-dd, hold,
release, reload, restart-feed.

Each command is written to the commands table with who (the OS user), when, why and for
which account (``--account``, default the ACCOUNT setting, else ``paper``). The account's
running runner applies it within a second and records the outcome; with no runner up, it is
applied when the account's next run starts.

``kill-switch on|off --all --comment ...`` is the firm-wide kill-switch: persisted in the
``firm_state`` row (audited), applied by every runner within a second (flatten and block) and
by every runner started while it is on; ``off --all`` lifts it and the kill-switches it set.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from prod_core.cli.common import actor, open_storage
from prod_core.configs import ConfigError, ConfigLoader, load_settings
from prod_core.configs.settings import check_account

ALIVE_S = 5.0
WAIT_S = 6.0


def account_name(text: str) -> str:
    """argparse type of ``--account``: a valid paper account name."""
    try:
        return check_account(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_account_option(p) -> None:
    p.add_argument("--account", type=account_name, default=None,
                   help="the account (default: the ACCOUNT setting, else paper)")


def resolve_account(ns) -> str:
    """``--account``, else ACCOUNT from the environment/.env, else ``paper``."""
    return getattr(ns, "account", None) or load_settings().account


def add_parsers(sub) -> None:
    p = sub.add_parser("kill-switch", help="flatten everything and block entries (on) / allow entries again (off); "
                                           "--all: every account (firm-wide)")
    p.add_argument("state", choices=["on", "off"])
    p.add_argument("--comment", default="", help="why (audited; required with --all)")
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("--account", type=account_name, default=None,
                       help="the account (default: the ACCOUNT setting, else paper)")
    scope.add_argument("--all", action="store_true",
                       help="firm-wide: every runner of every account, and every runner started while it is on")
    p.set_defaults(func=run, command="kill-switch")

    p = sub.add_parser("unlock", help="lift the daily lock (audited; --comment required)")
    p.add_argument("--comment", required=True, help="why the lock may be lifted (audited)")
    add_account_option(p)
    p.set_defaults(func=run, command="unlock")

    p = sub.add_parser("lock", help="engage a manual daily lock")
    p.add_argument("--comment", default="", help="why (audited)")
    add_account_option(p)
    p.set_defaults(func=run, command="lock")

    p = sub.add_parser("reset-dd", help="start a new drawdown epoch so entries may resume (--comment required)")
    p.add_argument("--comment", required=True, help="why trading may resume (audited)")
    add_account_option(p)
    p.set_defaults(func=run, command="reset-dd")

    for name, text in (("hold", "stop new entries of a strategy (exits still managed)"),
                       ("release", "let a held strategy enter again")):
        p = sub.add_parser(name, help=text)
        p.add_argument("strategy", help="a strategy configured under `strategies` in governance.yaml")
        p.add_argument("--comment", default="", help="why (audited)")
        add_account_option(p)
        p.set_defaults(func=run, command=name)

    p = sub.add_parser("reload", help="re-read configs/governance.yaml now (validated; refused edits keep the old config)")
    p.add_argument("--comment", default="")
    add_account_option(p)
    p.set_defaults(func=run, command="reload")

    p = sub.add_parser("restart-feed", help="restart the market-data feed of the running runner")
    p.add_argument("--comment", default="")
    add_account_option(p)
    p.set_defaults(func=run, command="restart-feed")


def _args(ns) -> dict:
    if ns.command == "kill-switch":
        return {"state": ns.state}
    if ns.command in ("hold", "release"):
        return {"strategy": ns.strategy}
    return {}


def _alive_run(storage, account: str) -> dict | None:
    """The account's latest run if it is running with a fresh heartbeat."""
    run = storage.latest_run(account)
    if run and run["status"] == "running" and run.get("heartbeat_at"):
        if time.time() - run["heartbeat_at"] < ALIVE_S:
            return run
    return None


def _configured_strategies() -> tuple[str, ...] | None:
    """Strategy names of governance.yaml (CONFIG_DIR or ./configs); None when it cannot be read
    (the runner then checks the name when it applies the command)."""
    try:
        return tuple(ConfigLoader().load_governance().strategies)
    except ConfigError:
        return None


def _silent_note(storage, account: str) -> str:
    """Say so when the account's latest run is still recorded as running but its runner is silent."""
    runs = storage.list_runs(limit=1, account=account)
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
    if getattr(ns, "all", False):
        return run_firm(ns, comment)
    account = resolve_account(ns)
    with open_storage(ns) as storage:
        cmd_id = storage.enqueue_command(ns.command, args=_args(ns), comment=comment, actor=actor(), ts=time.time(),
                                         account=account)
        alive = _alive_run(storage, account)
        if alive is None:
            whose = "" if account == "paper" else f" for account {account}"
            print(f"queued command #{cmd_id} {ns.command}{whose}: no runner is running{_silent_note(storage, account)}; "
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


def run_firm(ns, comment: str) -> int:
    """``kill-switch on|off --all``: set the firm-wide flag, then wait for every live runner to act on it."""
    if not comment:
        print("error: kill-switch --all needs a non-empty --comment (it is audited)", file=sys.stderr)
        return 2
    on = ns.state == "on"
    with open_storage(ns) as storage:
        before = {a: storage.firm_kill(a) is not None for a in storage.known_accounts()}
        changed, firm = storage.set_firm_kill_switch(on, actor=actor(), comment=comment, ts=time.time())
        if not changed:
            print(f"firm-wide kill-switch: refused: already {ns.state} (since {firm['updated_at'] and time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(firm['updated_at']))}, "
                  f"by {firm['actor'] or '-'}: {firm['comment']!r})")
            return 1
        epoch = firm["epoch"]
        accounts = storage.known_accounts()
        alive = {a: r for a in accounts if (r := _alive_run(storage, a)) is not None}
        # off: only the accounts whose kill-switch the firm had turned on have something to do
        waiting = {a for a in alive if on or before.get(a)}
        print(f"firm-wide kill-switch {ns.state} (epoch {epoch}, by {firm['actor']}): {len(accounts)} account(s) "
              f"known, runners alive: {', '.join(sorted(alive)) or 'none'}", flush=True)
        done: dict[str, dict] = {}
        t0 = time.time()
        deadline = t0 + WAIT_S
        while waiting - set(done) and time.time() < deadline:
            for row in storage.query("SELECT account, run_id, details_json FROM audit WHERE action = 'firm-kill-switch'"
                                     " AND account != '*' AND ts >= ?", (firm["updated_at"] - 1.0,)):
                details = json.loads(row["details_json"])
                if details.get("epoch") == epoch:
                    done[row["account"]] = {**details, "run_id": row["run_id"]}
            if waiting - set(done):
                time.sleep(0.05)
        elapsed = time.time() - t0
    for account in accounts:
        if account in done:
            d = done[account]
            print(f"  {account}: {d['status']} by run {d['run_id']}: {d['result']}")
        elif account in waiting:
            print(f"  {account}: run {alive[account]['run_id']} has not applied it within {WAIT_S:.0f} s")
        elif account in alive:
            print(f"  {account}: nothing to lift (its kill-switch was not set by the firm-wide one)")
        else:
            print(f"  {account}: no runner running; " + ("its next run starts with the kill-switch on" if on else
                                                         "its next run lifts the kill-switch the firm set, if any"))
    missing = waiting - set(done)
    if waiting:
        print(f"applied by {len(waiting) - len(missing)} of {len(waiting)} live runner(s) in {elapsed:.2f} s")
    return 1 if missing else 0
