"""telemetry.progress: a bar on a terminal (even one that reports a 0 x 0 size), nothing otherwise."""

from __future__ import annotations

import io
import os

import pytest

from prod_core.telemetry.progress import NullProgress, progress


def test_not_a_terminal_gets_a_null_progress() -> None:
    stream = io.StringIO()
    with progress(3, "x", stream=stream) as bar:
        bar.update(3)
    assert isinstance(bar, NullProgress) and stream.getvalue() == ""


def test_an_unsized_pty_still_shows_the_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh pty reports 0 columns and 0 rows (as under ``script``): the bar is drawn 80 wide, not blank."""
    monkeypatch.delenv("CRUPTO_PROGRESS", raising=False)
    master, slave = os.openpty()
    try:
        assert os.get_terminal_size(slave).columns == 0
        with os.fdopen(os.dup(slave), "w") as stream:
            with progress(4, "rotate", unit="run", stream=stream, mininterval=0) as bar:
                bar.update(4)
        out = os.read(master, 65536).decode("utf-8", "replace")
    finally:
        os.close(master)
        os.close(slave)
    assert "rotate: 100%|" in out and "4/4" in out and "run/s" in out
