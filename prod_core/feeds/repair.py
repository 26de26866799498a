"""Bar repair for polled feeds: a rejected or missing closed bar is re-requested, not skipped.

Pure and IO-free: the feed hands ``BarRepair`` the candle rows it fetched (``[ts_ms, o, h,
l, c, v]``) with the current time, releases the bars it gets back, and asks it which window
to re-request (``wanted``) and when (``due`` / ``next_attempt_s``, exponential backoff).

Per symbol:
- every row is checked with ``feeds.hygiene`` (``is_clean`` / ``classify``); a malformed row
  is counted ONCE by kind (``rejected``) and opens a *hole* at its timestamp; a missing
  timestamp (a gap between two rows) opens a hole too (counted in ``gaps``);
- bars after the first open hole are HELD, so the released series has no hole behind the
  feed's back; rows at or before the newest timestamp seen that fill no hole are counted as
  ``duplicate`` / ``out_of_order`` (normal rows) or ignored (the overlap of a re-request);
- a clean row for a hole fills it (``repaired``) and the held bars are released in order;
- after ``max_attempts`` re-requests that did not fill it, or ``max_hold_s`` after it opened,
  a hole is given up (``given_up``, an event for the caller to log) and the held bars are
  released: the feed never stalls.

Released bars are clean and strictly increasing in time per symbol, so the pipeline's own
hygiene sees none of these anomalies: the caller adds ``rejected`` to
``data_anomalies_total{feed,kind}``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from prod_core.domain import Bar, timeframe_to_ms
from prod_core.feeds.hygiene import classify, is_clean

GAP = "gap"
REPAIRED = "repaired"
GIVEN_UP = "given_up"

_NAN = math.nan


@dataclass(frozen=True, slots=True)
class RepairPolicy:
    """How hard to try: re-request budget, backoff between attempts, how long bars may be held."""

    max_attempts: int = 3
    retry_base_s: float = 1.0
    retry_factor: float = 2.0
    retry_max_s: float = 30.0
    max_hold_s: float = 120.0
    max_gap_bars: int = 120
    max_window_bars: int = 1000

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"repair.max_attempts must be >= 1, was {self.max_attempts}; it counts re-requests per hole")
        if not (self.retry_base_s > 0 and self.retry_max_s >= self.retry_base_s and self.retry_factor >= 1):
            raise ValueError(
                f"repair backoff needs retry_base_s > 0, retry_max_s >= retry_base_s, retry_factor >= 1; was "
                f"{self.retry_base_s}, {self.retry_max_s}, {self.retry_factor}"
            )
        if not self.max_hold_s > 0:
            raise ValueError(f"repair.max_hold_s must be > 0, was {self.max_hold_s}; held bars must be released")
        if self.max_gap_bars < 0 or self.max_window_bars < 1:
            raise ValueError(
                f"repair.max_gap_bars must be >= 0 and max_window_bars >= 1, was {self.max_gap_bars}, "
                f"{self.max_window_bars}"
            )


@dataclass(frozen=True, slots=True)
class RepairEvent:
    """What became of a hole: ``repaired`` (a clean bar filled it) or ``given_up`` (released without it).

    ``cause`` is the anomaly kind that opened the hole, or ``gap``; ``attempts`` the re-requests
    it took (0: the row came back on the normal fetch); ``bars`` > 1 only for a
    gap too large to re-request (given up at once, ``ts_ms`` its first missing bar).
    """

    symbol: str
    ts_ms: int
    outcome: str
    cause: str
    attempts: int
    bars: int = 1


class _Hole:
    __slots__ = ("cause", "counted", "attempts", "opened_s")

    def __init__(self, cause: str, counted: bool, opened_s: float) -> None:
        self.cause = cause
        self.counted = counted
        self.attempts = 0
        self.opened_s = opened_s


@dataclass(slots=True)
class _Stream:
    cursor_ms: int | None = None  # newest timestamp seen (good or bad)
    held: dict[int, Bar] = field(default_factory=dict)
    holes: dict[int, _Hole] = field(default_factory=dict)
    next_at_s: float | None = None


def _num(x) -> float:
    if x is None:
        return _NAN
    try:
        return float(x)
    except (TypeError, ValueError):
        return _NAN


def _ts(x) -> int | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return int(v) if math.isfinite(v) else None


class BarRepair:
    """Holds back bars behind a rejected or missing one until it is re-fetched or given up."""

    def __init__(self, timeframe: str | int, policy: RepairPolicy | None = None) -> None:
        self.tf_ms = timeframe_to_ms(timeframe) if isinstance(timeframe, str) else int(timeframe)
        if self.tf_ms <= 0:
            raise ValueError(f"timeframe must be positive, was {timeframe!r}")
        self.policy = policy or RepairPolicy()
        self.rejected: dict[str, int] = {}
        self.repaired = 0
        self.given_up = 0
        self.gaps = 0
        self._streams: dict[str, _Stream] = {}
        self._events: list[RepairEvent] = []

    # ------------------------------------------------------------ feeding
    def offer(
        self,
        symbol: str,
        rows: Iterable[Sequence],
        *,
        now_s: float,
        repair: bool = False,
        window: tuple[int, int] | None = None,
    ) -> list[Bar]:
        """Take fetched closed-candle rows; return the bars now releasable, in time order.

        ``repair=True``: the rows answer a re-request of ``window`` (default: ``wanted(symbol)``
        as it is now); each hole in the window that stays open uses one attempt.
        """
        st = self._streams.get(symbol)
        if st is None:
            st = self._streams[symbol] = _Stream()
        if repair:
            win = window if window is not None else self.wanted(symbol)
            for row in rows:
                self._repair_row(st, symbol, row)
            if win is not None:
                self._attempted(st, symbol, win, now_s)
        else:
            for row in rows:
                self._row(st, symbol, row, now_s)
        return self._settle(st, symbol, now_s)

    def expire(self, symbol: str, now_s: float) -> list[Bar]:
        """Give up holes older than ``max_hold_s`` (call when no rows came); return released bars."""
        st = self._streams.get(symbol)
        return [] if st is None else self._settle(st, symbol, now_s)

    def give_up(self, symbol: str) -> list[Bar]:
        """Give up every open hole of a symbol now (e.g. the feed stops); return the held bars."""
        st = self._streams.get(symbol)
        if st is None:
            return []
        for ts in sorted(st.holes):
            self._drop(st, symbol, ts)
        st.next_at_s = None
        return self._release(st)

    # ------------------------------------------------------------ queries
    def wanted(self, symbol: str) -> tuple[int, int] | None:
        """The window to re-request, ``(since_ms, until_ms)`` with ``since_ms <= ts < until_ms``, or None."""
        st = self._streams.get(symbol)
        if st is None or not st.holes:
            return None
        first, last = min(st.holes), max(st.holes)
        return first, min(last + self.tf_ms, first + self.policy.max_window_bars * self.tf_ms)

    def next_attempt_s(self, symbol: str) -> float | None:
        """When the next re-request is due (None: nothing to repair)."""
        st = self._streams.get(symbol)
        return None if st is None or not st.holes else st.next_at_s

    def due(self, symbol: str, now_s: float) -> bool:
        """True when a re-request of ``wanted(symbol)`` should be sent now."""
        at = self.next_attempt_s(symbol)
        return at is not None and now_s >= at

    def due_symbols(self, now_s: float) -> list[str]:
        """Symbols whose re-request is due now."""
        return [s for s in self._streams if self.due(s, now_s)]

    def cursor_ms(self, symbol: str) -> int | None:
        """Newest timestamp seen for the symbol: the normal fetch continues after it."""
        st = self._streams.get(symbol)
        return None if st is None else st.cursor_ms

    def held(self, symbol: str) -> int:
        """How many clean bars are held back behind an open hole."""
        st = self._streams.get(symbol)
        return 0 if st is None else len(st.held)

    def pop_events(self) -> list[RepairEvent]:
        """Repaired and given-up holes since the last call (for the caller to log)."""
        events, self._events = self._events, []
        return events

    # ------------------------------------------------------------ internals
    def _count(self, kind: str) -> None:
        self.rejected[kind] = self.rejected.get(kind, 0) + 1

    def _open(self, st: _Stream, ts: int, cause: str, counted: bool, now_s: float) -> None:
        if not st.holes:
            st.next_at_s = now_s + self.policy.retry_base_s
        st.holes[ts] = _Hole(cause, counted, now_s)

    def _row(self, st: _Stream, symbol: str, row: Sequence, now_s: float) -> None:
        ts = _ts(row[0]) if len(row) else None
        if ts is None:
            self._count("nan")  # no slot to re-request; the gap it leaves is found by the next row
            return
        bar = Bar(symbol, ts, *(_num(row[i]) if i < len(row) else _NAN for i in range(1, 6)))
        cursor = st.cursor_ms
        if cursor is not None and ts <= cursor:
            hole = st.holes.get(ts)
            if hole is not None:
                self._fill(st, symbol, ts, hole, bar)
            else:
                self._count(classify(bar, cursor) or "out_of_order")
            return
        if cursor is not None and ts > cursor + self.tf_ms:
            missing = range(cursor + self.tf_ms, ts, self.tf_ms)
            self.gaps += len(missing)
            if len(missing) > self.policy.max_gap_bars:  # an outage, not a lost row: do not re-request
                self.given_up += len(missing)
                self._events.append(RepairEvent(symbol, missing[0], GIVEN_UP, GAP, 0, len(missing)))
            else:
                for slot in missing:
                    self._open(st, slot, GAP, False, now_s)
        st.cursor_ms = ts
        if is_clean(bar, ts - 1):
            st.held[ts] = bar
        else:
            kind = classify(bar, ts - 1) or "nan"
            self._count(kind)
            self._open(st, ts, kind, True, now_s)

    def _repair_row(self, st: _Stream, symbol: str, row: Sequence) -> None:
        ts = _ts(row[0]) if len(row) else None
        hole = None if ts is None else st.holes.get(ts)
        if hole is None:
            return  # overlap with bars already held or released
        bar = Bar(symbol, ts, *(_num(row[i]) if i < len(row) else _NAN for i in range(1, 6)))
        self._fill(st, symbol, ts, hole, bar, attempt=1)

    def _fill(self, st: _Stream, symbol: str, ts: int, hole: _Hole, bar: Bar, attempt: int = 0) -> None:
        """A row for a hole: a clean one fills it (``attempt`` 1 when it answers a re-request)."""
        if is_clean(bar, ts - 1):
            del st.holes[ts]
            st.held[ts] = bar
            self.repaired += 1
            self._events.append(RepairEvent(symbol, ts, REPAIRED, hole.cause, hole.attempts + attempt))
        elif not hole.counted:  # a gap whose re-fetched row is malformed: counted once, like any bad row
            kind = classify(bar, ts - 1) or "nan"
            self._count(kind)
            hole.counted = True
            hole.cause = kind

    def _attempted(self, st: _Stream, symbol: str, window: tuple[int, int], now_s: float) -> None:
        since, until = window
        for ts in sorted(st.holes):
            if since <= ts < until:
                hole = st.holes[ts]
                hole.attempts += 1
                if hole.attempts >= self.policy.max_attempts:
                    self._drop(st, symbol, ts)
        if st.holes:
            p = self.policy
            tries = st.holes[min(st.holes)].attempts
            st.next_at_s = now_s + min(p.retry_max_s, p.retry_base_s * p.retry_factor**tries)

    def _drop(self, st: _Stream, symbol: str, ts: int) -> None:
        hole = st.holes.pop(ts)
        self.given_up += 1
        self._events.append(RepairEvent(symbol, ts, GIVEN_UP, hole.cause, hole.attempts))

    def _settle(self, st: _Stream, symbol: str, now_s: float) -> list[Bar]:
        if st.holes:
            limit = now_s - self.policy.max_hold_s
            for ts in sorted(st.holes):
                if st.holes[ts].opened_s <= limit:
                    self._drop(st, symbol, ts)
        return self._release(st)

    def _release(self, st: _Stream) -> list[Bar]:
        held = st.held
        if not held:
            return []
        stop = min(st.holes) if st.holes else None
        out = []
        for ts in sorted(held):
            if stop is not None and ts > stop:
                break
            out.append(held.pop(ts))
        return out
