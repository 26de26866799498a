"""Helpers of the maintenance tests that work on both backends (a SQLite file or a PostgreSQL URL)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from prod_core.storage import Storage
from prod_core.storage.postgres import is_postgres_url

# Tables that belong to the account, not to a run: rotation never deletes from them.
ACCOUNT_TABLES = ("governance_state", "audit", "commands", "journal")


def account_rows(target: str) -> dict[str, list]:
    """Rows of the account-level tables, to prove they are never touched."""
    with Storage(target, create=False) as st:
        return {t: st.query(f"SELECT * FROM {t} ORDER BY rowid") for t in ACCOUNT_TABLES}  # noqa: S608


def snapshot(target: str) -> Any:
    """Something that changes whenever the database is written: the file's digest (SQLite) or every
    table's rows with their hidden rowid and the transaction counters (PostgreSQL)."""
    if not is_postgres_url(target):
        return hashlib.sha256(Path(target).read_bytes()).hexdigest()
    import psycopg

    with psycopg.connect(target) as raw:
        tables = [r[0] for r in raw.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename").fetchall()]
        return {t: raw.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall() for t in tables}  # noqa: S608


def with_password(url: str, password: str = "s3cret") -> str:
    """``url`` with a password (the throwaway server trusts local connections and ignores it)."""
    return url.replace("crupto@", f"crupto:{password}@", 1)
