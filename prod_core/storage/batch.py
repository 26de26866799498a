"""A flush as plain data: the operations of one write transaction, and the code that applies them.

``Storage`` turns its buffers into a list of operations (``ops``) of plain values only (strings,
numbers, ``None``, tuples and lists: what ``marshal`` writes), then applies them on a connection
with ``apply_ops``. The same list is what a replay's writer process receives
(``prod_core/storage/writer.py``), so both paths run this one code and write the same rows in the
same order.

This module imports the standard library only (and the crash points): the writer process runs
it without the rest of the package.
"""

from __future__ import annotations

import json
import sqlite3
import time
from itertools import chain
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # not imported at run time: the writer process keeps its imports few
    from collections.abc import Callable
    from typing import Any

try:
    from prod_core.storage.crash import crash_point
except ImportError:  # the writer process runs this directory's modules on their own
    from crash import crash_point  # type: ignore[no-redef]

# Operation codes: the first item of each operation tuple.
ROWS = 0  # (ROWS, insert_sql, rows): multi-row INSERTs (``insert_rows``)
MANY = 1  # (MANY, sql, rows): ``executemany``
MARKS = 2  # (MARKS, sql, rows): each row must hit one row; a miss is reported (its row[2]), not an error
CRASH = 3  # (CRASH, name): a test crash point
LEASE = 4  # (LEASE, account, run_id): the account's writer lease must still belong to run_id
CHECKED = 5  # (CHECKED, sql, rows, what): each row must hit exactly one row, else the batch fails
ONE = 6  # (ONE, sql, params)
JOURNAL = 7  # (JOURNAL, insert_sql, rows): as ROWS, after each row's last item, a fill body's values, is encoded


class BatchError(Exception):
    """A batch that must not be committed: ``kind`` is ``lease`` (the lease was taken over) or ``storage``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


# Buffered inserts are written as multi-row ``INSERT ... VALUES (...), (...), ...`` statements of up
# to this many rows (a third less time per row than ``executemany``, which steps one statement per
# row): the same rows in the same order, so the same rowids and journal sequence numbers.
ROWS_PER_INSERT = 100
_multi_row_sql: dict[tuple[str, int], str] = {}


def insert_rows(conn: sqlite3.Connection, sql: str, rows: list[Any]) -> None:
    """``conn.executemany(sql, rows)`` for an ``INSERT ... VALUES (?, ...)`` (optionally followed by an
    ``ON CONFLICT`` clause, applied row by row as before), as multi-row statements."""
    copy = getattr(conn, "copy_insert", None)  # PostgreSQL: one COPY for a plain INSERT
    if copy is not None and rows and copy(sql, rows):
        return
    width = len(rows[0]) if rows else 0
    per = min(ROWS_PER_INSERT, max(1, 999 // max(width, 1)))  # 999: SQLite's smallest variable limit
    whole = len(rows) - len(rows) % per
    if whole:
        key = (sql, per)
        multi = _multi_row_sql.get(key)
        if multi is None:
            head, sep, rest = sql.partition(" VALUES (")
            group, _, tail = rest.partition(")")
            multi = _multi_row_sql[key] = f"{head}{sep[:-1]}{', '.join([f'({group})'] * per)}{tail}"
        for i in range(0, whole, per):
            conn.execute(multi, list(chain.from_iterable(rows[i:i + per])))
    if whole < len(rows):
        conn.executemany(sql, rows[whole:])


# ``json.dumps(body, sort_keys=True, default=str)``: every journal body's encoding (the encoder of
# ``prod_core.domain.encoding.json_encoder``, built here from the standard library: see the module doc)
_encode_body = json.JSONEncoder(sort_keys=True, default=str).encode


def fill_body_json(body: Any) -> str:
    """A journal row's body as stored: ``body`` itself when it is already JSON text, else the JSON of a
    fill body given by its values, ``(layout, day, lot values or None, state values, holds)`` with
    ``layout`` ``("fill", lot names, state names)`` (``prod_core.account.journal.FILL_BODY_LAYOUT``):
    byte for byte what ``FillBodies.opened``/``changed`` give for the same values."""
    if body.__class__ is str:
        return body
    (form, lot_names, state_names), day, lot, state, holds = body
    if form != "fill":
        raise BatchError("storage", f"unknown journal body layout {form!r}")
    values = dict(zip(state_names, state))
    values["holds"] = list(holds)
    out = {"day": day, "state": values}
    if lot is not None:
        out["lot"] = dict(zip(lot_names, lot))
    return _encode_body(out)


def journal_rows(rows: list[Any]) -> list[Any]:
    """``rows`` of the journal with each body encoded (``fill_body_json``; a row is a tuple, its body last)."""
    return [row if row[-1].__class__ is str else (*row[:-1], fill_body_json(row[-1])) for row in rows]


def apply_ops(conn: sqlite3.Connection, ops: list[tuple[Any, ...]], db: str, misses: list[str]) -> None:
    """Apply ``ops`` in order inside the caller's transaction; position ids whose mark hit no open row
    are appended to ``misses``. Raises ``BatchError`` (the caller rolls back) when a row that must
    hit exactly one row does not, or the lease is gone; database errors propagate as they are."""
    for op in ops:
        code = op[0]
        if code == ROWS:
            insert_rows(conn, op[1], op[2])
        elif code == MANY:
            conn.executemany(op[1], op[2])
        elif code == MARKS:
            sql = op[1]
            for mark in op[2]:
                # A mark that hits no open row is reported, never silently dropped; it does not fail
                # the flush, which would hold every other buffered row hostage.
                if conn.execute(sql, mark).rowcount != 1:
                    misses.append(mark[2])
        elif code == CRASH:
            crash_point(op[1])
        elif code == LEASE:
            account, run_id = op[1], op[2]
            row = conn.execute("SELECT run_id FROM leases WHERE account = ?", (account,)).fetchone()
            if row is None or row[0] != run_id:
                owner = row[0] if row else "nobody"
                raise BatchError("lease", f"account {account}: the writer lease now belongs to {owner}, not to run "
                                          f"{run_id}; this runner stops writing the account")
        elif code == CHECKED:
            sql, changes, what = op[1], op[2], op[3]
            if conn.executemany(sql, changes).rowcount != len(changes):
                raise BatchError("storage", f"database {db}: {what} a position matched no open position in a batch "
                                            f"of {len(changes)}; nothing of this batch was written: run "
                                            f"`python -m prod_core.cli reconcile`")
        elif code == ONE:
            conn.execute(op[1], op[2])
        elif code == JOURNAL:
            insert_rows(conn, op[1], journal_rows(op[2]))
        else:
            raise BatchError("storage", f"database {db}: unknown batch operation {code!r}")


def begin_immediate(conn: Any, db: str, window_s: float, errors: tuple[type[BaseException], ...],
                    on_retry: Callable[[int, float, str], None]) -> None:
    """BEGIN IMMEDIATE, retried with backoff while another process holds the write lock (a "locked" or
    "busy" error among ``errors``) for up to ``window_s``; each retry is reported to ``on_retry``. Raises
    ``BatchError("storage", ...)`` chained to the last error once the window is spent, or at once
    for any other error."""
    started = time.monotonic()
    delay = 0.05
    attempt = 0
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except errors as exc:
            waited = time.monotonic() - started
            text = str(exc).lower()
            if not ("locked" in text or "busy" in text) or waited >= window_s:
                raise BatchError("storage", f"database {db}: cannot start a write transaction"
                                            f"{f' after {waited:.0f} s of retries' if attempt else ''}: {exc}") from exc
            attempt += 1
            on_retry(attempt, waited, str(exc))
            time.sleep(min(delay, max(0.0, window_s - waited)))
            delay = min(delay * 2.0, 1.0)
