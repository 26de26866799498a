"""Helpers shared by CLI commands."""

from __future__ import annotations

import getpass
import os
import time

from prod_core.configs import load_settings
from prod_core.storage import Storage


def open_storage(args) -> Storage:
    db = getattr(args, "db", None) or load_settings().db_path
    return Storage(db)


def actor() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return os.environ.get("USER") or os.environ.get("USERNAME") or "unknown"


def fmt_ts(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts)) if ts else "-"
