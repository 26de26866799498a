"""Ctrl+C must always stop the runner: its signal handler sets the loop's wake-up event, and the
handler can run while the main thread holds that event's lock (inside ``wait`` or ``clear``)."""

from __future__ import annotations

import subprocess
import sys

from tests.runner.helpers import REPO

# The handler fires while the main thread holds the event's lock, as it can inside Event.wait/clear.
PROBE = """
import os, signal, threading
from prod_core.runner.app import SignalWake
wake = {make}
signal.signal(signal.SIGUSR1, lambda *_: wake.set())
with wake._cond:
    os.kill(os.getpid(), signal.SIGUSR1)
    for _ in range(100):  # the handler runs at one of these bytecodes
        pass
print("set" if wake.is_set() else "not set")
"""


def _probe(make: str, timeout: float) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run([sys.executable, "-c", PROBE.format(make=make)], cwd=REPO, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


def test_a_plain_event_set_from_a_signal_handler_deadlocks_the_probe() -> None:
    """The probe reproduces the hang (so the next test can fail): a plain Event never returns."""
    assert _probe("threading.Event()", timeout=5) is None


def test_the_runner_wake_is_set_from_a_signal_handler_while_its_lock_is_held() -> None:
    result = _probe("SignalWake()", timeout=120)
    assert result is not None, "SignalWake deadlocked in the signal handler"
    assert result.returncode == 0 and result.stdout.strip() == "set", result.stdout + result.stderr
