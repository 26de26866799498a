"""Progress bars for long operator commands (replay, export, rotation, fetch-history).

A bar with a rate and an ETA is drawn (by tqdm) on stderr only when stderr is a terminal;
piped or redirected output, a log file, CI: nothing at all, not even a final line. The
caller never branches on that: ``progress(...)`` always returns an object with
``update(n)``, ``set_postfix_str(text)`` and ``close()``, and is a context manager.

    with progress(total=len(runs), desc="rotate", unit="run") as bar:
        for run in runs:
            ...
            bar.update(1)
"""

from __future__ import annotations

import os
import sys
from typing import IO, Any

__all__ = ["NullProgress", "progress", "wants_progress"]


class NullProgress:
    """What ``progress`` returns when there is no terminal: every call does nothing."""

    n = 0

    def update(self, n: float = 1) -> None:
        pass

    def set_postfix_str(self, text: str = "", refresh: bool = True) -> None:
        pass

    def set_description_str(self, text: str = "", refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> NullProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


def wants_progress(stream: IO[str] | None = None) -> bool:
    """True when ``stream`` (default stderr) is a terminal and ``CRUPTO_PROGRESS`` is not ``0``."""
    if os.environ.get("CRUPTO_PROGRESS", "") == "0":
        return False
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or not a file
        return False


def progress(total: float | None, desc: str, unit: str = "it", *, stream: IO[str] | None = None,
             unit_scale: bool = False, mininterval: float = 0.5) -> Any:
    """A tqdm bar on a terminal, else a ``NullProgress``.

    ``total`` None draws a counter with a rate but no ETA. ``unit_scale`` shows 1.2M instead of
    1200000 (bars, rows)."""
    stream = sys.stderr if stream is None else stream
    if not wants_progress(stream):
        return NullProgress()
    from tqdm import tqdm  # imported only on a terminal: a piped run does not pay for it

    # A terminal that reports a 0 x 0 size (a pty nobody sized: ``script``, some CI runners and ssh
    # sessions) gets nothing at all from a size-following bar: draw it 80 x 24 instead.
    if _columns(stream) == 0:
        size: dict[str, Any] = {"dynamic_ncols": False, "ncols": 80, "nrows": 24}
    else:
        size = {"dynamic_ncols": True}
    return tqdm(total=total, desc=desc, unit=unit, file=stream, unit_scale=unit_scale, mininterval=mininterval,
                leave=True, **size)


def _columns(stream: IO[str]) -> int | None:
    """The terminal width of ``stream``; None when it has no file descriptor to ask (a test double)."""
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError and a ValueError
        return None
