"""Wait for an event, not for a wall-clock window: tests poll for what they need (a log line, a
request seen by a fake exchange, a DB row, a metric) with a generous upper bound, so they pass on
a busy machine (Python start-up and imports alone take seconds under load) and stay fast on an
idle one (the wait ends as soon as the event is there).

``EVENT_TIMEOUT_S`` is the default bound for events that need a runner process to start."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

EVENT_TIMEOUT_S = 120.0


def wait_until(predicate: Callable[[], T], timeout: float = EVENT_TIMEOUT_S, what: str = "the event", *,
               interval: float = 0.1, proc: subprocess.Popen | None = None,
               output: Callable[[], str] | None = None) -> T:
    """Poll ``predicate`` until it returns a truthy value (returned); fail after ``timeout`` s,
    or as soon as ``proc`` (when given) has exited without the event (with ``output()`` if given)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = predicate()
        if last:
            return last
        if proc is not None and proc.poll() is not None:
            last = predicate()  # the event may have landed just before the exit
            if last:
                return last
            raise AssertionError(f"process exited ({proc.returncode}) before {what}{_tail(output)}")
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} not seen within {timeout:g} s (last: {last!r}){_tail(output)}")
        time.sleep(interval)


def _tail(output: Callable[[], str] | None) -> str:
    return f"\n{output()}" if output is not None else ""
