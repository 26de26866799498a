"""PostgreSQL backend of ``Storage``: a psycopg 3 connection that speaks the subset of sqlite3 it uses.

``Storage`` keeps ONE set of SQL (written for SQLite); ``PgConnection`` runs it on PostgreSQL:

- parameters: ``?`` -> ``%s`` (a ``%`` in the text is escaped), ``True/False`` -> 1/0 (the
  schema keeps SQLite's integer flags) and NaN -> NULL (what SQLite stores for NaN);
- ``BEGIN IMMEDIATE`` -> ``BEGIN`` plus a transaction-scoped advisory lock: the database's ONE
  write lock, as in SQLite, so every invariant the account logic relies on (the lease checked
  in the same transaction as the fill it guards, the firm kill-switch epoch, a command handled
  once) holds unchanged. Waiting for it is bounded (``lock_timeout``) and reported as
  "database is locked", which ``Storage`` retries with backoff like a busy SQLite file.
  Readers never take it and never wait (MVCC), as with WAL.
- DDL: the same migrations, with ``INTEGER PRIMARY KEY AUTOINCREMENT`` -> ``BIGSERIAL PRIMARY
  KEY``, ``INTEGER`` -> ``BIGINT`` (millisecond timestamps, counters) and ``REAL`` -> ``DOUBLE
  PRECISION``; every table gets a ``rowid BIGSERIAL`` column (insertion order, which the code
  orders by, as SQLite's implicit rowid). Like SQLite's, that column never appears in a
  ``SELECT *`` result: the cursor drops it.
- ``sqlite_master`` -> the catalog of the current schema; ``PRAGMA table_info(t)`` -> the
  columns of ``t``; other PRAGMAs do nothing; ``lastrowid`` -> ``RETURNING id``.
- errors -> ``PgError`` with SQLite's wording for constraint failures (``FOREIGN KEY constraint
  failed: ...``) and for a busy database (``database is locked: ...``).

psycopg is imported on first use, so a SQLite-only process never loads it.
"""

from __future__ import annotations

import math
import re
import sqlite3
from functools import lru_cache
from typing import Any

__all__ = ["DB_ERRORS", "PgConnection", "PgError", "is_postgres_url", "redact_url", "translate"]

PG_SCHEMES = ("postgresql://", "postgres://")
# pg_advisory_xact_lock key of the database-wide write lock ('crupto' in ASCII).
WRITE_LOCK_KEY = 0x63727570746F
# How long one attempt waits for the write lock before it counts as busy (Storage retries).
LOCK_WAIT_MS = 500

# Tables whose INSERT reports ``lastrowid`` (their surrogate id column).
_ID_COLUMNS = {"audit": "id", "commands": "id", "exports": "id"}

_CATALOG = (
    "(SELECT c.relname::text AS name, c.relname::text AS tbl_name,"
    " CASE c.relkind WHEN 'r' THEN 'table' WHEN 'i' THEN 'index' WHEN 'v' THEN 'view' ELSE 'other' END AS type"
    " FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
    " WHERE n.nspname = current_schema()) AS sqlite_master"
)
_TABLE_INFO = (
    "SELECT ordinal_position - 1 AS cid, column_name::text AS name, upper(data_type)::text AS type,"
    " CASE is_nullable WHEN 'NO' THEN 1 ELSE 0 END AS notnull, column_default::text AS dflt_value, 0 AS pk"
    " FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = %s"
    " AND column_name <> 'rowid' ORDER BY ordinal_position"
)
_BEGIN_WRITE = (
    f"BEGIN; SET LOCAL lock_timeout = '{LOCK_WAIT_MS}ms'; SELECT pg_advisory_xact_lock({WRITE_LOCK_KEY});"
    " SET LOCAL lock_timeout = 0"
)


_COMPAT_SQL = (
    "CREATE FUNCTION crupto_bool_sum(acc bigint, x boolean) RETURNS bigint LANGUAGE sql IMMUTABLE AS"
    " 'SELECT CASE WHEN x IS NULL THEN acc ELSE COALESCE(acc, 0) + x::int END'",
    "CREATE AGGREGATE sum(boolean) (SFUNC = crupto_bool_sum, STYPE = bigint)",
)


class PgError(Exception):
    """A PostgreSQL failure, worded like SQLite's where ``Storage`` or an operator reads the words."""

    def __init__(self, message: str, *, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


# What a storage call may raise from either backend's driver.
DB_ERRORS: tuple[type[BaseException], ...] = (sqlite3.Error, PgError)

_CONSTRAINT = {"23503": "FOREIGN KEY", "23505": "UNIQUE", "23514": "CHECK", "23502": "NOT NULL"}
_BUSY = {"40001", "40P01", "55P03", "57014"}


def is_postgres_url(value: Any) -> bool:
    return isinstance(value, str) and value.strip().lower().startswith(PG_SCHEMES)


def redact_url(url: str) -> str:
    """``postgresql://user:***@host/db``: a password never reaches a message or a log."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    creds, at, host = rest.rpartition("@")
    if at and ":" in creds:
        return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
    return url


def _map_error(exc: Exception) -> PgError:
    state = getattr(exc, "sqlstate", None)
    text = " ".join(str(exc).split()) or type(exc).__name__
    if state in _CONSTRAINT:
        text = f"{_CONSTRAINT[state]} constraint failed: {text}"
    elif state in _BUSY:
        text = f"database is locked (another writer holds it): {text}"
    return PgError(text, sqlstate=state)


_PLACEHOLDER = re.compile(r"'(?:[^']|'')*'|\?|%")
_DDL_TYPES = (
    (re.compile(r"\bINTEGER\s+PRIMARY\s+KEY\s+AUTOINCREMENT\b", re.I), "BIGSERIAL PRIMARY KEY"),
    (re.compile(r"\bINTEGER\b", re.I), "BIGINT"),
    (re.compile(r"\bREAL\b", re.I), "DOUBLE PRECISION"),
)
_CREATE_TABLE = re.compile(r"^\s*CREATE\s+TABLE\s+(IF\s+NOT\s+EXISTS\s+)?(\w+)\s*\(", re.I)
_INSERT = re.compile(r"^\s*INSERT\s+(OR\s+IGNORE\s+)?INTO\s+(\w+)", re.I)
_PRAGMA_TABLE_INFO = re.compile(r"^\s*PRAGMA\s+table_info\s*\(\s*(\w+)\s*\)\s*;?\s*$", re.I)


def _placeholders(sql: str) -> str:
    def sub(m: re.Match[str]) -> str:
        tok = m.group(0)
        if tok == "?":
            return "%s"
        if tok == "%":
            return "%%"
        return tok.replace("%", "%%")

    return _PLACEHOLDER.sub(sub, sql)


@lru_cache(maxsize=4096)
def translate(sql: str) -> tuple[str, str, Any]:
    """``(kind, pg_sql, extra)`` for one SQLite statement; cached per statement text.

    kind: ``sql`` (run ``pg_sql``; ``extra`` is the id column an INSERT returns, or None),
    ``begin_write``, ``noop`` (a PRAGMA), ``table_info`` (``extra``: the table).
    """
    head = sql.lstrip()[:32].upper()
    if head.startswith("PRAGMA"):
        m = _PRAGMA_TABLE_INFO.match(sql)
        return ("table_info", _TABLE_INFO, m.group(1)) if m else ("noop", "", None)
    if head.rstrip("; \n") in ("BEGIN IMMEDIATE", "BEGIN EXCLUSIVE"):
        return "begin_write", _BEGIN_WRITE, None
    out = sql
    if head.startswith(("CREATE", "ALTER")):
        for pattern, repl in _DDL_TYPES:
            out = pattern.sub(repl, out)
        m = _CREATE_TABLE.match(out)
        if m:  # SQLite's implicit rowid, made explicit: insertion order for ORDER BY rowid
            out = out[: m.end()] + "\n    rowid BIGSERIAL NOT NULL," + out[m.end():]
    out = out.replace("sqlite_master", _CATALOG) if "sqlite_master" in out else out
    returning = None
    m = _INSERT.match(out)
    if m:
        if m.group(1):
            out = out[: m.start(1)] + out[m.end(1):]
            out = out.rstrip().rstrip(";") + " ON CONFLICT DO NOTHING"
        returning = _ID_COLUMNS.get(m.group(2).lower())
        if returning and " RETURNING " not in out.upper():
            out = out.rstrip().rstrip(";") + f" RETURNING {returning}"
    return "sql", _placeholders(out), returning


# ``INSERT INTO table (a, b, ...) VALUES (?, ?, ...)`` and nothing else (what COPY can take).
_PLAIN_INSERT = re.compile(r"INSERT INTO (\w+) \(([\w, ]+)\) VALUES \(\?(?:, ?\?)*\)", re.IGNORECASE)


def _adapt(params: Any) -> Any:
    """bool -> int (SQLite's integer flags), NaN -> None (SQLite stores NaN as NULL)."""
    if not params:
        return ()
    if isinstance(params, dict):
        return params
    for v in params:
        if v is True or v is False or (type(v) is float and v != v):
            return tuple(int(v) if isinstance(v, bool) else (None if type(v) is float and math.isnan(v) else v)
                         for v in params)
    return params


def _numeric_loader() -> type:
    from psycopg.adapt import Loader

    class NumericLoader(Loader):
        """NUMERIC -> int when integral (SUM of integers), else float (AVG): no Decimal leaks out."""

        def load(self, data: Any) -> int | float:
            text = bytes(data)
            if text.lstrip(b"-").isdigit():
                return int(text)
            return float(text)

    return NumericLoader


class PgCursor:
    """The part of ``sqlite3.Cursor`` Storage uses: fetch*, iteration, rowcount, lastrowid, description."""

    __slots__ = ("_cur", "_drop", "_rows", "description", "lastrowid", "rowcount")

    def __init__(self, cur: Any = None, *, rows: list[tuple] | None = None, description: Any = None,
                 rowcount: int = -1, lastrowid: int | None = None) -> None:
        self._cur = cur
        self._rows = rows
        self._drop: int | None = None
        self.rowcount = rowcount
        self.lastrowid = lastrowid
        self.description = description
        if cur is not None:
            self.rowcount = cur.rowcount
            desc = cur.description
            if desc is not None:
                names = [d.name for d in desc]
                if "rowid" in names:  # SQLite never returns its implicit rowid from SELECT *
                    self._drop = names.index("rowid")
                    desc = [d for d in desc if d.name != "rowid"]
                self.description = [(d.name, None, None, None, None, None, None) for d in desc]

    def _fix(self, row: tuple | None) -> tuple | None:
        if row is None or self._drop is None:
            return row
        i = self._drop
        return row[:i] + row[i + 1:]

    def fetchone(self) -> tuple | None:
        if self._cur is None:
            return self._rows.pop(0) if self._rows else None
        try:
            return self._fix(self._cur.fetchone())
        except Exception as exc:  # noqa: BLE001 - psycopg.Error, mapped
            raise _map_error(exc) from exc

    def fetchmany(self, size: int = 1) -> list[tuple]:
        if self._cur is None:
            out, self._rows = (self._rows or [])[:size], (self._rows or [])[size:]
            return out
        rows = self._cur.fetchmany(size)
        return rows if self._drop is None else [self._fix(r) for r in rows]

    def fetchall(self) -> list[tuple]:
        if self._cur is None:
            out, self._rows = self._rows or [], []
            return out
        try:
            rows = self._cur.fetchall()
        except Exception as exc:  # noqa: BLE001
            raise _map_error(exc) from exc
        return rows if self._drop is None else [self._fix(r) for r in rows]

    def __iter__(self):
        while True:
            row = self.fetchone()
            if row is None:
                return
            yield row


class PgConnection:
    """One psycopg connection in autocommit mode; transactions are the explicit BEGIN/COMMIT Storage sends."""

    def __init__(self, url: str, *, connect_timeout: float = 10.0) -> None:
        import psycopg

        self.url = url
        self.label = redact_url(url)
        try:
            self._pg = psycopg.connect(url, autocommit=True, connect_timeout=int(max(1, connect_timeout)))
        except psycopg.Error as exc:
            raise PgError(f"cannot connect to {self.label}: {' '.join(str(exc).split())}") from None
        # SUM/AVG of integers are NUMERIC in PostgreSQL: read them as SQLite gives them (int, float).
        self._pg.adapters.register_loader("numeric", _numeric_loader())
        self._idle = psycopg.pq.TransactionStatus.IDLE
        self._psycopg_error = psycopg.Error

    @property
    def in_transaction(self) -> bool:
        return self._pg.info.transaction_status != self._idle

    def execute(self, sql: str, params: Any = ()) -> PgCursor:
        kind, text, extra = translate(sql)
        try:
            if kind == "sql":
                cur = self._pg.execute(text, _adapt(params))
                if extra is not None and cur.description is not None:
                    row = cur.fetchone()
                    return PgCursor(rows=[], rowcount=cur.rowcount, lastrowid=row[0] if row else None)
                return PgCursor(cur)
            if kind == "begin_write":
                try:
                    self._pg.execute(text)
                except self._psycopg_error:
                    if self.in_transaction:  # the lock wait timed out: nothing was done, end the attempt
                        self._pg.execute("ROLLBACK")
                    raise
                return PgCursor(rows=[], rowcount=-1)
            if kind == "table_info":
                return PgCursor(self._pg.execute(text, (extra.lower(),)))
            return PgCursor(rows=[], rowcount=-1)
        except self._psycopg_error as exc:
            raise _map_error(exc) from exc

    def copy_insert(self, sql: str, rows: list[Any]) -> bool:
        """Insert ``rows`` of a plain ``INSERT INTO t (cols) VALUES (?, ...)`` with one COPY (far fewer
        round trips and parses than multi-row INSERTs). False, with nothing done, when ``sql`` is not
        that plain form (a conflict clause, an expression among the values): the caller inserts."""
        m = _PLAIN_INSERT.fullmatch(sql.strip())
        if m is None:
            return False
        table, columns = m.group(1), m.group(2)
        try:
            with self._pg.cursor() as cur, cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(_adapt(row))
        except self._psycopg_error as exc:
            raise _map_error(exc) from exc
        return True

    def executemany(self, sql: str, seq_of_params: Any) -> PgCursor:
        kind, text, _ = translate(sql)
        rows = [_adapt(p) for p in seq_of_params]
        if kind != "sql":
            raise PgError(f"executemany of {sql[:40]!r} is not supported on PostgreSQL")
        if not rows:
            return PgCursor(rows=[], rowcount=0)
        try:
            with self._pg.cursor() as cur:
                cur.executemany(text, rows)
                return PgCursor(rows=[], rowcount=cur.rowcount)
        except self._psycopg_error as exc:
            raise _map_error(exc) from exc

    def install_compat(self) -> None:
        """SQLite idioms the report SQL uses, defined once per database: ``SUM(boolean)`` (SQLite's
        booleans are 0/1; NULL over no rows, as SQLite's SUM). Call under the migration lock."""
        if self.execute("SELECT 1 FROM pg_catalog.pg_proc WHERE proname = 'crupto_bool_sum'").fetchone():
            return
        self.execute("BEGIN")
        try:
            for stmt in _COMPAT_SQL:
                self._pg.execute(stmt)
            self.execute("COMMIT")
        except BaseException:
            self.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self._pg.close()

    @property
    def closed(self) -> bool:
        return self._pg.closed
