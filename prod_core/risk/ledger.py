"""The paper account's R ledger and governance state (account-level, persisted)."""

from __future__ import annotations

import time

from prod_core.configs.governance import GovernanceConfig

LIMITS_OK = "limits_ok"


def day_of(ts_s: float) -> str:
    """UTC calendar day of a unix timestamp, 'YYYY-MM-DD'."""
    return time.strftime("%Y-%m-%d", time.gmtime(ts_s))


class GovernanceState:
    """R curve, daily counters, locks and switches of the paper account.

    A plain slotted class with a dataclass's constructor (every field a keyword with its default,
    or positional in field order), equality and repr; not a ``@dataclass`` because the compiled
    build makes it an extension type (ledger.pxd: its fields at fixed offsets for the pipeline and
    the fast lane), which the dataclass decorator cannot rebuild."""

    __slots__ = ("closed_r", "open_r", "peak_r", "max_dd_r", "dd_epoch", "dd_stopped", "throttled", "day",
                 "day_start_closed_r", "trades_today", "consecutive_losses", "lock_reason", "kill_switch", "holds",
                 "config_hash", "cash_usd")

    def __init__(self, closed_r: float = 0.0, open_r: float = 0.0, peak_r: float = 0.0, max_dd_r: float = 0.0,
                 dd_epoch: int = 0, dd_stopped: bool = False, throttled: bool = False, day: str = "",
                 day_start_closed_r: float = 0.0, trades_today: int = 0, consecutive_losses: int = 0,
                 lock_reason: str = LIMITS_OK, kill_switch: bool = False, holds: list[str] | None = None,
                 config_hash: str = "", cash_usd: float | None = None) -> None:
        self.closed_r = closed_r
        self.open_r = open_r
        self.peak_r = peak_r
        self.max_dd_r = max_dd_r
        self.dd_epoch = dd_epoch
        self.dd_stopped = dd_stopped
        self.throttled = throttled
        self.day = day
        self.day_start_closed_r = day_start_closed_r
        self.trades_today = trades_today
        self.consecutive_losses = consecutive_losses
        self.lock_reason = lock_reason
        self.kill_switch = kill_switch
        self.holds = [] if holds is None else holds
        self.config_hash = config_hash  # governance config in force (journaled when it changes)
        self.cash_usd = cash_usd

    def _values(self) -> tuple:
        return (self.closed_r, self.open_r, self.peak_r, self.max_dd_r, self.dd_epoch, self.dd_stopped, self.throttled,
                self.day, self.day_start_closed_r, self.trades_today, self.consecutive_losses, self.lock_reason,
                self.kill_switch, self.holds, self.config_hash, self.cash_usd)

    def _set_values(self, values: tuple) -> None:
        """Every field from a ``_values()`` tuple (a saved state put back)."""
        (self.closed_r, self.open_r, self.peak_r, self.max_dd_r, self.dd_epoch, self.dd_stopped, self.throttled,
         self.day, self.day_start_closed_r, self.trades_today, self.consecutive_losses, self.lock_reason,
         self.kill_switch, self.holds, self.config_hash, self.cash_usd) = values

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()

    def __repr__(self) -> str:
        fields_ = ", ".join(f"{name}={value!r}" for name, value in zip(_STATE_FIELDS, self._values()))
        return f"GovernanceState({fields_})"

    @property
    def pnl_cum_r(self) -> float:
        return self.closed_r + self.open_r

    @property
    def dd_state(self) -> float:
        return min(0.0, self.pnl_cum_r - self.peak_r)

    @property
    def day_r(self) -> float:
        return self.closed_r - self.day_start_closed_r + self.open_r

    def copy(self) -> "GovernanceState":
        """A copy to change before a commit (``holds`` copied): ``dataclasses.replace`` without its cost."""
        new = GovernanceState.__new__(GovernanceState)
        for name in _STATE_FIELDS:
            object.__setattr__(new, name, getattr(self, name))
        new.holds = list(self.holds)
        return new

    def to_dict(self) -> dict:
        """Every field (``holds`` copied): what ``asdict`` gives, without its deep-copy cost per fill."""
        out = {name: getattr(self, name) for name in _STATE_FIELDS}
        out["holds"] = list(self.holds)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "GovernanceState":
        known = {k: v for k, v in data.items() if k in _STATE_FIELDS}
        return cls(**known)


_STATE_FIELDS: tuple[str, ...] = GovernanceState.__slots__  # in the order of the constructor's arguments


def roll_day(state: GovernanceState, day: str) -> bool:
    """Start the daily counters for ``day``. Returns True when the day changed.

    The lock itself is NOT lifted here: in paper mode only an operator unlocks.
    """
    if state.day == day:
        return False
    state.day = day
    state.day_start_closed_r = state.closed_r
    state.trades_today = 0
    return True


def _engage(state: GovernanceState, reason: str) -> str | None:
    if state.lock_reason == LIMITS_OK:
        state.lock_reason = reason
        return reason
    return None


def ladder_step(state: GovernanceState, cfg: GovernanceConfig) -> None:
    """Update peak, drawdown, max drawdown and the ladder (normal -> throttled -> no entries)."""
    total = state.closed_r + state.open_r  # (``pnl_cum_r``, read as fields: a property is a look-up compiled)
    if total > state.peak_r:
        state.peak_r = total
    dd = total - state.peak_r
    if -dd > state.max_dd_r:
        state.max_dd_r = -dd
    ladder = cfg.drawdown  # (read once: a pydantic field read costs ~3 of the compiled build's plain reads)
    state.throttled = dd <= ladder.throttle_at_r
    if dd <= ladder.no_entries_at_r:
        state.dd_stopped = True


def mark_open_r(state: GovernanceState, open_r: float, cfg: GovernanceConfig) -> str | None:
    """Mark open positions; engage ``max_daily_loss`` when realised + open R of the day hits the limit."""
    state.open_r = open_r
    ladder_step(state, cfg)
    if state.closed_r - state.day_start_closed_r + state.open_r <= -cfg.daily_lock.max_daily_loss_r:  # ``day_r``
        return _engage(state, "max_daily_loss")
    return None


def on_entry_filled(state: GovernanceState, cfg: GovernanceConfig) -> str | None:
    state.trades_today += 1
    if state.trades_today >= cfg.daily_lock.max_trades:
        return _engage(state, "max_trades")
    return None


def on_trade_closed(state: GovernanceState, trade_r: float, open_r: float, cfg: GovernanceConfig) -> str | None:
    """Book a closed trade's R. Returns the lock reason if this trade engaged a lock."""
    state.closed_r += trade_r
    state.consecutive_losses = state.consecutive_losses + 1 if trade_r < 0 else 0
    engaged = mark_open_r(state, open_r, cfg)
    if engaged:
        return engaged
    if state.consecutive_losses >= cfg.daily_lock.max_consecutive_losses:
        return _engage(state, "max_consecutive_losses")
    return None
