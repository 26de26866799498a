"""Shared plumbing of the maintenance commands (export, rotate, cleanup).

Settings resolve like the runner's (flag > environment > ``.env``/``ENV_FILE`` > default);
bad input raises ``UsageError`` whose message names the value and what to do (exit 2).

The database is the runner's too: ``--db`` > DB_URL (PostgreSQL) > DB_PATH (SQLite) >
``storage/crupto.db``. ``existing_db`` returns a SQLite file path or a ``postgresql://`` URL
(``Storage`` opens either); ``db_label`` is what a message may show (the URL without its
password); ``connect_readonly`` is a connection that cannot write, on either backend.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

from prod_core.cli.common import actor
from prod_core.configs import ConfigError
from prod_core.configs.settings import parse_env_file

from prod_core.storage import StorageError, resolve_sqlite_path
from prod_core.storage.postgres import PgConnection, is_postgres_url, redact_url

__all__ = [
    "FRESH_HEARTBEAT_S",
    "UsageError",
    "actor",
    "connect_readonly",
    "db_label",
    "db_setting",
    "existing_db",
    "is_postgres_url",
    "setting",
]

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


def db_setting(flag: str | None) -> str:
    """The database as the runner resolves it: ``--db`` > DB_URL > DB_PATH > ``storage/crupto.db``."""
    if flag:
        return flag
    url = setting(None, "DB_URL", "").strip()
    if url and not is_postgres_url(url):
        # never echo the value: it may hold a password
        raise UsageError("DB_URL must be a postgresql://user:password@host:port/database URL (value not shown); "
                         "for SQLite set DB_PATH instead and leave DB_URL empty")
    return url or setting(None, "DB_PATH", "storage/crupto.db")


def db_label(target: str) -> str:
    """``target`` as a message may show it: a PostgreSQL URL without its password, a path as given."""
    return redact_url(target.strip()) if is_postgres_url(target) else target


def existing_db(flag: str | None) -> str:
    """Path of an existing database file (never creates one), or a PostgreSQL URL.

    ``flag`` is the ``--db`` value (None: DB_URL, then DB_PATH, then ``storage/crupto.db``); a
    ``postgresql://`` URL is returned as is (``Storage(url, create=False)`` refuses a database
    without crupto's schema); a missing file raises ``UsageError`` naming the path, the working
    directory and the fix."""
    raw = db_setting(flag)
    if is_postgres_url(raw):
        return raw.strip()
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


def connect_readonly(target: str) -> Any:
    """A connection to ``target`` (a SQLite path or a PostgreSQL URL) that can never write.

    SQLite: a ``mode=ro`` URI (not even a migration or a -wal file is written). PostgreSQL: a
    session whose transactions are all ``READ ONLY`` (a write fails). Both wait up to 5 s for a
    lock. Raises the driver's error (one of ``prod_core.storage.postgres.DB_ERRORS``)."""
    if is_postgres_url(target):
        conn = PgConnection(target)
        try:
            conn.execute("SET default_transaction_read_only = on")
            conn.execute("SET lock_timeout = '5s'")
        except BaseException:
            conn.close()
            raise
        return conn
    uri = Path(target).resolve().as_uri() + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout = 5000")
    except BaseException:
        conn.close()
        raise
    return conn
