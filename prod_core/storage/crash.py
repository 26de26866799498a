"""Test-only crash points: ``CRUPTO_CRASH_AT=name[:n]`` SIGKILLs the process the n-th time
(default 1st) the storage reaches the named point. Unset (always, outside tests) it costs a
string comparison on the paths that commit fills, never on the per-bar path.

Points: ``after_fill_insert`` (fill row written, transaction open), ``before_commit`` (every
consequence written, COMMIT not yet issued), ``after_commit`` (committed, memory not yet
updated), ``mid_flush`` (a buffered flush half written).
"""

from __future__ import annotations

import os
import signal

POINTS = ("after_fill_insert", "before_commit", "after_commit", "mid_flush")


def _parse(value: str) -> tuple[str, int]:
    name, _, count = value.partition(":")
    name = name.strip()
    if not name:
        return "", 0
    if name not in POINTS:
        raise ValueError(f"CRUPTO_CRASH_AT={value!r}: unknown crash point; known: {', '.join(POINTS)}")
    return name, max(1, int(count)) if count.strip() else 1


_point, _left = _parse(os.environ.get("CRUPTO_CRASH_AT", ""))


def crash_point(name: str) -> None:
    """SIGKILL this process if the test asked to crash at ``name`` (and this is the n-th time)."""
    global _left
    if name != _point:
        return
    _left -= 1
    if _left <= 0:
        os.kill(os.getpid(), signal.SIGKILL)
