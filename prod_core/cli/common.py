"""Helpers shared by CLI commands."""

from __future__ import annotations

import getpass
import os
import time

from prod_core.configs import load_settings
from prod_core.storage import Storage


# The runner heartbeats every second; a `running` run silent for this long is not reporting.
STALE_HEARTBEAT_S = 10.0


def open_storage(args) -> Storage:
    """The runner's database (``--db``, else DB_URL, else DB_PATH from the settings); never creates one.

    A missing file, or one without crupto's schema, raises ``StorageError`` naming the path
    and the DB path the settings give, so a typo cannot queue commands no runner will see.
    """
    db = load_settings().database(getattr(args, "db", None))
    return Storage(db, create=False)


def liveness(run: dict | None, now: float) -> tuple[str, float | None]:
    """``(liveness, heartbeat age in seconds)`` of a run as the CLI judges it.

    ``alive``: recorded running with a fresh heartbeat; ``crashed/unresponsive``: recorded
    running (or already marked crashed) but silent for ``STALE_HEARTBEAT_S``; otherwise the
    recorded end status (``stopped``, ``failed``, ``crashed``); ``none`` without a run.
    """
    if run is None:
        return "none", None
    last = run.get("heartbeat_at") or run.get("started_at")
    age = max(0.0, now - last) if last else None
    if run["status"] != "running":
        return run["status"], age
    if age is None or age > STALE_HEARTBEAT_S:
        return "crashed/unresponsive", age
    return "alive", age


def actor() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return os.environ.get("USER") or os.environ.get("USERNAME") or "unknown"


def fmt_ts(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts)) if ts else "-"
