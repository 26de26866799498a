"""Operator control of a running loop: commands table, governance reload, audit.

Commands come from ``python -m prod_core.cli`` through the ``commands`` table; the runner
polls it at least once per second (and at start, for commands issued while it was down),
applies each command of its own account between bars, records the outcome on the command row,
audits it and persists the account's governance state at once.

The firm-wide kill-switch (``kill-switch on|off --all``, the ``firm_state`` row) is polled with
the commands: when it turns on, the runner turns its account's kill-switch on (flatten and
block, journaled and audited as ``firm-kill-switch``) and records that the firm did so
(``firm_kills``); when it turns off, the runner lifts the kill-switches the firm turned on. A
runner started while it is on starts with its kill-switch on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from prod_core.configs import ConfigError, ConfigLoader, config_hash
from prod_core.configs.governance import GovernanceConfig
from prod_core.risk import operator

log = logging.getLogger("prod_core.runner")

COMMANDS = ("kill-switch", "unlock", "lock", "reset-dd", "hold", "release", "reload", "restart-feed")


class OperatorControl:
    def __init__(self, runner, loader: ConfigLoader) -> None:
        self.runner = runner
        self.loader = loader
        self._gov_mtime = self._mtime()
        self._gov_hash = config_hash(runner.gov)
        self.reload_requested = False
        self._firm_epoch: int | None = None  # the firm_state epoch this runner has acted on

    # ------------------------------------------------------------- commands
    def poll(self) -> None:
        storage = self.runner.storage
        self.poll_firm()
        for cmd in storage.pending_commands(self.runner.account):
            status, result = self._apply(cmd)
            # The state it left is journaled first: a crash before the command row is marked
            # re-applies it at the next start, where it is refused as already in force.
            self.runner.journal_command(cmd, status, result)
            now = time.time()
            storage.mark_command(cmd["id"], status=status, result=result, ts=now, run_id=self.runner.run_id)
            storage.add_audit(ts=now, actor=cmd["actor"], action=cmd["command"], comment=cmd["comment"] or "",
                              details={"args": cmd["args"], "status": status, "result": result, "command_id": cmd["id"],
                                       "issued_at": cmd["ts"]}, run_id=self.runner.run_id,
                              account=self.runner.account)
            self.runner.notify("operator_command", f"Команда оператора #{cmd['id']} {cmd['command']} "
                               f"({cmd['actor']}): {status}: {result}",
                               severity="warning" if status == "refused" else "info", component="operator",
                               fields={"command": cmd["command"], "args": cmd["args"], "status": status,
                                       "comment": cmd["comment"], "actor": cmd["actor"]})

    def poll_firm(self) -> None:
        """Act once on each change of the firm-wide kill-switch (and on its state at start)."""
        runner = self.runner
        storage = runner.storage
        firm = storage.firm_state()
        if firm["epoch"] == self._firm_epoch:
            return
        self._firm_epoch = firm["epoch"]
        account = runner.account
        state = runner.state
        marked = storage.firm_kill(account)
        if firm["kill_switch"]:
            if state.kill_switch and marked is not None:  # a restart: already flattened and blocked by it
                return
            if state.kill_switch:  # on by the account's own command or the drawdown: not the firm's to lift
                status, result = "unchanged", ("kill-switch already on (set by the account itself: "
                                               "`kill-switch off --all` does not lift it)")
            else:
                status, result = self.apply_command("kill-switch", {"state": "on"}, firm["comment"] or "")
                if status == "applied":
                    storage.record_firm_kill(account, epoch=firm["epoch"], run_id=runner.run_id, ts=time.time())
        else:
            if marked is None:
                return
            if state.kill_switch:
                status, result = self.apply_command("kill-switch", {"state": "off"}, firm["comment"] or "",
                                                    firm=True)
            else:  # lifted meanwhile: nothing left to lift
                status, result = "unchanged", "kill-switch already off"
            storage.clear_firm_kill(account)
        self._firm_record(firm, status, result)

    def _firm_record(self, firm: dict, status: str, result: str) -> None:
        """Journal, audit and announce what the firm-wide kill-switch did to this account."""
        runner = self.runner
        state = "on" if firm["kill_switch"] else "off"
        cmd = {"id": None, "command": "kill-switch", "args": {"state": state, "firm": True}, "actor": firm["actor"],
               "comment": firm["comment"] or ""}
        runner.journal_command(cmd, status, result)
        now = time.time()
        runner.storage.add_audit(ts=now, actor=firm["actor"], action="firm-kill-switch", comment=firm["comment"] or "",
                                 details={"state": state, "status": status, "result": result, "epoch": firm["epoch"],
                                          "issued_at": firm["updated_at"]},
                                 run_id=runner.run_id, account=runner.account)
        runner.notify("operator_command", f"Firm-wide kill-switch {state} ({firm['actor']}): счёт {runner.account}: "
                      f"{status}: {result}", severity="warning" if status == "refused" else "info",
                      component="operator", fields={"command": "kill-switch", "args": cmd["args"], "status": status,
                                                    "comment": cmd["comment"], "actor": firm["actor"], "firm": True})

    def _apply(self, cmd: dict) -> tuple[str, str]:
        return self.apply_command(cmd["command"], cmd.get("args") or {}, cmd.get("comment") or "")

    def apply_command(self, name: str, args: dict, comment: str, *, firm: bool = False) -> tuple[str, str]:
        """Apply one operator command between two bars; returns (applied|refused, message).

        ``firm``: the firm-wide kill-switch lifting the account's kill-switch it turned on (an
        account's own ``kill-switch off`` is refused while the firm-wide one is on).
        """
        runner = self.runner
        pipeline = runner.pipeline
        state = runner.state
        if name == "kill-switch":
            on = args.get("state") == "on"
            if not on and not firm and not runner.replay and state.kill_switch:
                held = runner.storage.firm_state()
                if held["kill_switch"]:
                    return "refused", (f"the firm-wide kill-switch is on (by {held['actor']}: {held['comment']!r}); "
                                       "entries stay blocked until `kill-switch off --all`")
            res = operator.set_kill_switch(state, on)
            if res.applied and on:
                closed = pipeline.flatten_all(pipeline.now_ms())
                runner.storage.cancel_pending_plans(runner.run_id)
                return "applied", f"{res.message}; {closed} positions/orders flattened or cancelled"
        elif name == "unlock":
            res = operator.unlock(state, comment)
        elif name == "lock":
            res = operator.lock(state, comment)
        elif name == "reset-dd":
            res = operator.reset_drawdown(state, comment)
        elif name == "hold":
            res = operator.hold(state, str(args.get("strategy", "")), pipeline.strategy_names)
        elif name == "release":
            res = operator.release(state, str(args.get("strategy", "")))
        elif name == "reload":
            ok, message = self.reload("cli reload")
            return ("applied" if ok else "refused"), message
        elif name == "restart-feed":
            return self._restart_feed()
        else:
            return "refused", f"unknown command {name!r}; known: {', '.join(COMMANDS)}"
        pipeline.refresh()
        return ("applied" if res.applied else "refused"), res.message

    def _restart_feed(self) -> tuple[str, str]:
        feed = self.runner.feed
        restart: Callable[[], None] | None = getattr(feed, "restart", None)
        if restart is None:
            return "refused", f"feed {feed.name} cannot be restarted"
        restart()
        return "applied", f"feed {feed.name} restarted"

    # --------------------------------------------------------------- reload
    def _mtime(self) -> float:
        try:
            return Path(self.loader.governance_path).stat().st_mtime
        except OSError:
            return 0.0

    def watch(self) -> None:
        """Reload when the governance file changed or SIGHUP asked for it."""
        mtime = self._mtime()
        if self.reload_requested or mtime != self._gov_mtime:
            trigger = "SIGHUP" if self.reload_requested else "file change"
            self.reload_requested = False
            self._gov_mtime = mtime
            self.reload(trigger)

    def reload(self, trigger: str) -> tuple[bool, str]:
        """Validate and apply configs/governance.yaml atomically, or keep the old config."""
        path = self.loader.governance_path
        try:
            new: GovernanceConfig = self.loader.load_governance()
        except ConfigError as exc:
            message = f"Новая конфигурация governance отклонена ({trigger}), работаю со старой: {exc}"
            self.runner.notify("config_refused", message, severity="error", component="runner",
                               fields={"trigger": trigger, "error": str(exc)})
            return False, str(exc)
        new_hash = config_hash(new)
        if new_hash == self._gov_hash:
            return True, f"{path}: unchanged"
        self.runner.apply_governance(new)
        self._gov_hash = new_hash
        message = f"Конфигурация governance применена ({trigger}): {path} hash={new_hash}"
        self.runner.notify("config_applied", message, component="runner", fields={"trigger": trigger, "hash": new_hash})
        return True, f"applied {path} (hash {new_hash})"
