"""Operator actions on the account's governance state. Pure: each returns what changed.

The runner applies them from the commands table (CLI) and audits them; a refusal is a
value with the reason, never an exception.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from prod_core.risk.ledger import LIMITS_OK, GovernanceState


@dataclass(frozen=True, slots=True)
class ActionResult:
    applied: bool
    message: str
    details: dict


def _refused(message: str) -> ActionResult:
    return ActionResult(applied=False, message=message, details={})


def unlock(state: GovernanceState, comment: str) -> ActionResult:
    """Lift the daily lock (paper mode: the only way). The day's counters start again."""
    if not comment.strip():
        return _refused("unlock needs --comment: say why the lock may be lifted")
    if state.lock_reason == LIMITS_OK:
        return _refused("daily lock is not engaged (limits_ok)")
    reason = state.lock_reason
    state.lock_reason = LIMITS_OK
    state.consecutive_losses = 0
    state.day_start_closed_r = state.closed_r + state.open_r
    state.trades_today = 0
    return ActionResult(True, f"daily lock {reason} lifted", {"previous_reason": reason})


def lock(state: GovernanceState, comment: str) -> ActionResult:
    """Engage a manual daily lock."""
    if state.lock_reason != LIMITS_OK:
        return _refused(f"daily lock already engaged: {state.lock_reason}")
    state.lock_reason = "manual"
    return ActionResult(True, "manual daily lock engaged", {"reason": "manual"})


def reset_drawdown(state: GovernanceState, comment: str) -> ActionResult:
    """Start a new drawdown epoch: peak = current R, max_dd_r = 0, entries allowed again."""
    if not comment.strip():
        return _refused("reset-dd needs --comment: say why trading may resume")
    before = {"dd_state": round(state.dd_state, 6), "max_dd_r": round(state.max_dd_r, 6),
              "dd_stopped": state.dd_stopped, "epoch": state.dd_epoch}
    state.peak_r = state.pnl_cum_r
    state.max_dd_r = 0.0
    state.dd_stopped = False
    state.throttled = False
    state.dd_epoch += 1
    return ActionResult(True, f"drawdown epoch {state.dd_epoch} started", {"before": before, "epoch": state.dd_epoch})


def set_kill_switch(state: GovernanceState, on: bool) -> ActionResult:
    if state.kill_switch == on:
        return _refused(f"kill-switch already {'on' if on else 'off'}")
    state.kill_switch = on
    return ActionResult(True, f"kill-switch {'on' if on else 'off'}", {"kill_switch": on})


def hold(state: GovernanceState, strategy: str, known: Collection[str]) -> ActionResult:
    """Stop new entries of a configured strategy (``known``: the names under governance.yaml ``strategies``)."""
    if strategy not in known:
        return _refused(f"unknown strategy {strategy!r}; configured: {', '.join(known) or 'none'}")
    if strategy in state.holds:
        return _refused(f"{strategy} is already on hold")
    state.holds = sorted({*state.holds, strategy})
    return ActionResult(True, f"{strategy} on hold: no new entries, exits still managed", {"strategy": strategy})


def release(state: GovernanceState, strategy: str) -> ActionResult:
    if strategy not in state.holds:
        return _refused(f"{strategy} is not on hold")
    state.holds = [s for s in state.holds if s != strategy]
    return ActionResult(True, f"{strategy} released", {"strategy": strategy})
