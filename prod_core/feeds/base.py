"""The feed contract shared by all market-data adapters."""

from __future__ import annotations

from enum import IntEnum
from typing import Protocol, runtime_checkable

from prod_core.domain import Bar


class FeedHealth(IntEnum):
    HEALTHY = 1
    DEGRADED = 0
    PAUSED = -1


@runtime_checkable
class Feed(Protocol):
    """A source of closed bars.

    ``poll(now_s)`` returns the bars due by wall time ``now_s`` (possibly none), in
    time order. Bars with ``ts_ms < live_from_ms`` are history for warming indicators
    (no trading). ``exhausted`` is True when no bar will ever come again (replay end).
    """

    name: str
    symbols: tuple[str, ...]
    live_from_ms: int

    def start(self, now_s: float) -> None: ...

    def poll(self, now_s: float) -> list[Bar]: ...

    def next_due_s(self) -> float | None: ...

    def health(self, now_s: float) -> int: ...

    @property
    def exhausted(self) -> bool: ...

    def stop(self) -> None: ...
