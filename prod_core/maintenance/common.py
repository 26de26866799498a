"""Shared plumbing of the maintenance commands (export, rotate, cleanup).

Settings resolve like the runner's (flag > environment > ``.env``/``ENV_FILE`` > default);
bad input raises ``UsageError`` whose message names the value and what to do (exit 2).
"""

from __future__ import annotations

import os
from pathlib import Path

from prod_core.cli.common import actor
from prod_core.configs import ConfigError
from prod_core.configs.settings import parse_env_file
from prod_core.storage import StorageError, resolve_sqlite_path

__all__ = ["FRESH_HEARTBEAT_S", "UsageError", "actor", "existing_db", "setting"]

# A ``running`` run whose heartbeat is younger than this is alive (the runner beats every second).
FRESH_HEARTBEAT_S = 60.0


class UsageError(Exception):
    """Bad input: the message names the value and what to do; exit code 2."""


def setting(flag: str | None, env_key: str, default: str) -> str:
    """Flag > environment variable > ``.env`` (or ENV_FILE) > default."""
    if flag:
        return flag
    if os.environ.get(env_key):
        return os.environ[env_key]
    env_file = Path(os.environ.get("ENV_FILE", ".env"))
    try:
        value = parse_env_file(env_file).get(env_key)
    except ConfigError as exc:
        raise UsageError(f"{exc}; fix {env_file} or pass the value as a flag") from exc
    return value or default


def existing_db(flag: str | None) -> str:
    """Path of an existing database file (never creates one).

    ``flag`` is the ``--db`` value (None: DB_PATH, then ``storage/crupto.db``); a missing file
    raises ``UsageError`` naming the path, the working directory and the fix."""
    raw = setting(flag, "DB_PATH", "storage/crupto.db")
    try:
        path = resolve_sqlite_path(raw)
    except StorageError as exc:
        raise UsageError(str(exc)) from exc
    if path == ":memory:" or not Path(path).is_file():
        raise UsageError(
            f"database {raw} not found (working directory {Path.cwd()}): run from the repo root, "
            f"or pass --db PATH (or set DB_PATH) to the database the runner wrote"
        )
    return path
