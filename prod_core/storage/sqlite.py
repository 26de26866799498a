"""SQLite DAO: buffered hot-path writes, durable fills, account-level governance state.

Threading: one ``Storage`` is used from ONE thread (the runner's). Other processes (the
CLI, export scripts) open their own ``Storage`` on the same file; WAL mode makes readers
and the single writer coexist, and ``busy_timeout`` makes short write overlaps wait.

Write paths:
- buffered (hot path): ``add_plan``, ``update_plan_status``, ``add_order``, ``add_equity``,
  ``add_event``, ``mark_positions`` only append a tuple to a list; ``flush`` writes every
  buffer in one transaction, ``maybe_flush`` does so every ``flush_rows`` rows or
  ``flush_interval_s`` seconds.
- the account journal: ``commit_account`` writes a fill (or a governance transition) with
  every consequence (journal entry, fill row, position insert/close, the account's saved
  snapshot) and the pending buffers in ONE transaction, so a fill is durable before it is
  reported anywhere else. A replay may pass ``immediate=False`` to batch them into the flush.
- immediate: everything else commits before returning.
Reads flush first, so a process always sees its own writes. A busy database (another process
holds the write lock) is retried with backoff for ``retry_window_s``; any other failure
raises ``StorageError`` at once and leaves the buffers for the next try.

Failed flush: the transaction is rolled back, the buffers are kept (nothing is lost
silently) and ``StorageError`` is raised; the next flush retries.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from types import TracebackType
from typing import Any

from prod_core.domain.encoding import json_encoder
from prod_core.domain.types import Fill, Order, Position
from prod_core.storage.batch import (
    CHECKED, CRASH, JOURNAL, LEASE, MANY, MARKS, ONE, ROWS, BatchError, apply_ops, begin_immediate, journal_rows,
)
from prod_core.storage.checkpoint import Checkpointer
from prod_core.storage.crash import crash_point
from prod_core.storage.migrations import MIGRATIONS, StorageError, apply_migrations, current_version
from prod_core.storage.postgres import DB_ERRORS, PgConnection, is_postgres_url
from prod_core.storage.writer import WriteBehind, WriterFailed, WriterGone

# How long opening a SQLite file keeps trying when it is answered "database is locked" without a wait
OPEN_BUSY_S = 15.0
OPEN_BUSY_RETRY_S = 0.05


def _busy(exc: BaseException | None) -> bool:
    """A SQLite error that says another connection holds the file (try again), not that it is bad."""
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc))


__all__ = [
    "EXPORT_TABLES",
    "RUN_TABLES",
    "AccountWrite",
    "FirmReservation",
    "LeaseLost",
    "Storage",
    "StorageError",
    "WriterLost",
    "journal_fill_row",
    "journal_row",
    "resolve_sqlite_path",
]

# A busy database (another process holds the write lock) is retried with backoff for this
# long before the write counts as failed. A lease is stale only well after this window.
RETRY_WINDOW_S = 20.0
BUSY_TIMEOUT_MS = 500


# An account whose writer lease has no heartbeat for this long is dead for the firm gross cap
# (the runner's STALE_RUN_S: the next start of that account marks its run crashed).
FIRM_STALE_S = 30.0


@dataclass(frozen=True, slots=True)
class FirmReservation:
    """The outcome of ``Storage.reserve_firm_gross``: whether the entry fits the firm cap, and the figures."""

    passed: bool
    other_usd: float  # the other (live) accounts' recorded gross
    own_usd: float  # this account's gross before the entry
    add_usd: float  # the entry's notional
    cap_usd: float
    skipped: tuple[str, ...] = ()  # accounts left out: their lease is stale (runner dead)

    @property
    def total_usd(self) -> float:
        return self.other_usd + self.own_usd + self.add_usd


class LeaseLost(StorageError):
    """Another runner took over this account's lease: this process must stop writing it."""


class WriterLost(StorageError):
    """A replay's writer process died with flushes not confirmed: the replay must stop (storage/writer.py)."""


@dataclass(slots=True)  # not frozen: built per fill, and a frozen dataclass takes ~3x longer to build
class AccountWrite:
    """One journal commit: entries plus every consequence, written in ONE transaction. Not changed
    once made (the storage may hold it until the next flush).

    ``entries`` are ``journal_row``/``journal_fill_row`` tuples. ``fill`` goes to the run's
    fills table, ``open_position`` is inserted (a duplicate id is an error), ``close`` is
    ``(position_id, ts_close_ms, exit_price, exit_reason, pnl_usd, trade_r)`` and must close
    exactly one open row, ``update_position`` rewrites one open row (a partial fill or a funding
    payment changed it), ``snapshot`` replaces the account's saved state (or a function that gives
    it: a replay's batch writes only the last saved state of each account, so the others need not
    be built).
    """

    account: str
    run_id: str
    ts: float
    entries: tuple[tuple[Any, ...], ...]
    snapshot: dict[str, Any] | Callable[[], dict[str, Any]]
    fill: Fill | None = None
    open_position: Position | None = None
    close: tuple[str, int, float, str, float, float] | None = None
    update_position: Position | None = None


# ``json.dumps(body, sort_keys=True, default=str)`` with its C encoder built once, not per call (the
# same output: prod_core/domain/encoding.py). A journal body is encoded per fill.
encode_body: Callable[[Any], str] = json_encoder(sort_keys=True, default=str)
# ``json.dumps(snapshot, sort_keys=True)``: the account's saved state.
_encode_snapshot: Callable[[Any], str] = json_encoder(sort_keys=True)


def _snapshot_json(w: AccountWrite) -> str:
    snapshot = w.snapshot
    return _encode_snapshot(snapshot if isinstance(snapshot, dict) else snapshot())


def journal_row(ts_ms: int, kind: str, event: str, body: dict[str, Any]) -> tuple[Any, ...]:
    """A journal entry that is not a fill (account opened, governance transition)."""
    return (int(ts_ms), kind, event, None, None, None, None, None, None, None, None, encode_body(body))  # fmt: skip


def journal_fill_row(fill: Fill, event: str, position_id: str, body: dict[str, Any] | str | tuple) -> tuple[Any, ...]:
    """A fill's journal entry: ``event`` is ``open``, ``increase``, ``reduce`` or ``close`` of ``position_id``.

    ``body`` is the entry's body (a dict), its JSON already encoded as ``encode_body`` writes it, or its
    values (a tuple: ``FillBodies.opened_values``), encoded when the entry is written (``batch.fill_body_json``)."""
    return (fill.ts_ms, "fill", event, fill.fill_id, position_id, fill.symbol, _val(fill.side), fill.qty,
            fill.price, fill.fee_usd, _val(fill.reason),
            body if body.__class__ is str or body.__class__ is tuple else encode_body(body))  # fmt: skip


def journal_funding_row(position: Position, funding_ts_ms: int, mark: float, amount: float,
                        body: dict[str, Any]) -> tuple[Any, ...]:
    """A funding payment of ``position`` at ``funding_ts_ms``: ``fee_usd`` is the amount paid
    (negative: received), ``price`` the mark it was computed at, ``qty`` the position's size."""
    return (int(funding_ts_ms), "funding", "funding", None, position.position_id, position.symbol,
            _val(position.side), position.qty, mark, amount, "funding", encode_body(body))  # fmt: skip

# Tables ``table_rows`` may export, each filtered by its run_id column.
EXPORT_TABLES: tuple[str, ...] = (
    "runs",
    "feed_states",
    "plans",
    "orders",
    "fills",
    "positions",
    "equity",
    "events",
    "audit",
    "commands",
    "session_bars",
    "session_events",
)


def _check_export_table(table: str) -> None:
    """``table`` goes into SQL text: it must be one of ``EXPORT_TABLES``, never user text."""
    if table not in EXPORT_TABLES:
        raise StorageError(f"table {table!r} cannot be exported; choose one of {', '.join(EXPORT_TABLES)}")

# Tables whose rows belong to ONE run and leave the database with it (``delete_runs``).
# governance_state, audit, commands and exports are account-level and never deleted.
RUN_TABLES: tuple[str, ...] = (
    "runs", "feed_states", "plans", "orders", "fills", "positions", "equity", "events", "session_bars", "session_events",
)

_EXPORT_KINDS = frozenset({"report", "archive"})
_RUN_STATUSES = frozenset({"running", "stopped", "failed", "crashed"})
_PLAN_STATUSES = frozenset({"pending", "filled", "vetoed", "cancelled", "expired", "rejected"})
_COMMAND_FINAL = frozenset({"applied", "refused"})

_SQL_INSERT_PLAN = (
    "INSERT INTO plans (run_id, plan_id, ts_ms, strategy, symbol, side, entry, stop, target, reason,"
    " regime, decision, qty, risk_usd, nominal_r_usd, status)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SQL_UPDATE_PLAN = "UPDATE plans SET status = ? WHERE run_id = ? AND plan_id = ?"
# An order may be written again when its status changes (submitted -> filled / rejected).
_SQL_UPSERT_ORDER = (
    "INSERT INTO orders (run_id, order_id, plan_id, ts_ms, symbol, side, qty, kind, reason, status,"
    " reject_reason, filled_qty, done_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (run_id, order_id) DO UPDATE SET status = excluded.status,"
    " reject_reason = excluded.reject_reason, qty = excluded.qty, filled_qty = excluded.filled_qty,"
    " done_ms = excluded.done_ms"
)
# Position rows: inserted by the opening fill's commit (a repeated id is an error), marked on
# the heartbeat, closed by the closing fill's commit. The row belongs to the run that manages
# it now (a restart adopts it). Each write must hit exactly one open row.
_SQL_INSERT_POSITION = (
    "INSERT INTO positions (run_id, account, position_id, plan_id, strategy, symbol, side, qty, entry_price,"
    " stop, target, ts_open_ms, nominal_r_usd, entry_fee_usd, last_price, leverage, maint_margin_rate,"
    " funding_usd, funding_ts_ms, realized_usd, status)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'open')"
)
# A position row with every column: a replay's batch inserts a position opened and closed within it
# as it ended (status and close columns set), the row an insert and then the close's UPDATE leave.
_SQL_INSERT_POSITION_ROW = (
    "INSERT INTO positions (run_id, account, position_id, plan_id, strategy, symbol, side, qty, entry_price,"
    " stop, target, ts_open_ms, nominal_r_usd, entry_fee_usd, last_price, leverage, maint_margin_rate,"
    " funding_usd, funding_ts_ms, realized_usd, status, ts_close_ms, exit_price, exit_reason, pnl_usd, trade_r)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_POS_STATUS = 20  # index of ``status`` in its parameters
_SQL_UPDATE_POSITION = (
    "UPDATE positions SET run_id = ?, qty = ?, entry_price = ?, entry_fee_usd = ?, last_price = ?, funding_usd = ?,"
    " funding_ts_ms = ?, realized_usd = ? WHERE position_id = ? AND status = 'open'"
)
_SQL_MARK_POSITION = "UPDATE positions SET last_price = ?, run_id = ? WHERE position_id = ? AND status = 'open'"
_SQL_CLOSE_POSITION = (
    "UPDATE positions SET run_id = ?, status = 'closed', ts_close_ms = ?, exit_price = ?, last_price = ?,"
    " exit_reason = ?, pnl_usd = ?, trade_r = ? WHERE position_id = ? AND status = 'open'"
)
_SQL_INSERT_JOURNAL = (
    "INSERT INTO journal (account, run_id, ts_ms, kind, event, fill_id, position_id, symbol, side, qty, price,"
    " fee_usd, reason, body_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SQL_UPSERT_SNAPSHOT = (
    "INSERT INTO governance_state (account, state_json, updated_at) VALUES (?, ?, ?)"
    " ON CONFLICT (account) DO UPDATE SET state_json = excluded.state_json, updated_at = excluded.updated_at"
)
_SQL_HEARTBEAT = "UPDATE runs SET heartbeat_at = ? WHERE run_id = ?"
_SQL_INSERT_EQUITY = (
    "INSERT INTO equity (run_id, ts_ms, equity_usd, cash_usd, pnl_cum_r, dd_state, max_dd_r,"
    " exposure_gross_pct, exposure_net_pct) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SQL_INSERT_EVENT = (
    "INSERT INTO events (run_id, ts, kind, severity, component, message, fields_json)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_SQL_INSERT_SESSION_BAR = (
    "INSERT INTO session_bars (run_id, seq, symbol, ts_ms, open, high, low, close, volume)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SQL_INSERT_SESSION_EVENT = (
    "INSERT INTO session_events (run_id, seq, after_bar, kind, payload_json) VALUES (?, ?, ?, ?, ?)"
)
_SQL_INSERT_FILL = (
    "INSERT INTO fills (run_id, fill_id, order_id, ts_ms, symbol, side, qty, price, fee_usd, reason,"
    " liquidity, ref_price) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _val(x: Any) -> Any:
    """Enum -> its ``.value``; anything else unchanged. (``_value_`` is the member's plain attribute:
    ``.value`` goes through an enum property, several times slower on the per-fill path.)"""
    return x._value_ if isinstance(x, Enum) else x


def resolve_sqlite_path(path_or_url: str) -> str:
    """Map ``storage/crupto.db`` or ``sqlite:///storage/crupto.db`` to a file path.

    URL form follows the SQLAlchemy convention: ``sqlite:///relative.db`` and
    ``sqlite:////absolute.db``. ``:memory:`` is accepted (tests). Any other scheme is refused.
    """
    raw = str(path_or_url).strip()
    if not raw:
        raise StorageError("DB is empty: set DB to a file path such as storage/crupto.db or sqlite:///storage/crupto.db")
    if "://" in raw:
        scheme = raw.split("://", 1)[0].lower()
        if scheme != "sqlite":
            raise StorageError(
                f"DB={_redact(raw)}: {scheme} is not supported: use a file path such as storage/crupto.db or "
                f"sqlite:///storage/crupto.db (SQLite), or a postgresql://user@host/db URL (PostgreSQL)"
            )
        if not raw.lower().startswith("sqlite:///") or len(raw) <= len("sqlite:///"):
            raise StorageError(f"DB={raw}: a sqlite URL looks like sqlite:///storage/crupto.db (three slashes, then the path)")
        raw = raw[len("sqlite:///") :]
    return raw


def _redact(url: str) -> str:
    """Hide a password in ``scheme://user:pass@host`` before putting a URL in a message."""
    scheme, _, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if at and ":" in creds:
        creds = creds.split(":", 1)[0] + ":***"
        return f"{scheme}://{creds}@{host}"
    return url


class Storage:
    """SQLite storage for runs, trading records, governance state, audit and commands."""

    def __init__(
        self, path_or_url: str, *, flush_rows: int = 1000, flush_interval_s: float = 1.0, create: bool = True
    ) -> None:
        """Open (``create=True``: or create) the database and bring its schema up to date.

        ``create=False`` is for tools that must find the runner's database (the operator
        CLI): a missing file, or one without crupto's schema, is refused with
        ``StorageError`` and nothing is created on disk (no file, directory or -wal/-shm).
        """
        if flush_rows < 1:
            raise StorageError(f"flush_rows must be >= 1, was {flush_rows}")
        if flush_interval_s < 0:
            raise StorageError(f"flush_interval_s must be >= 0, was {flush_interval_s}")
        from prod_core.storage.paths import check_db_path

        # postgresql://... selects PostgreSQL (``path`` is the URL without its password); else SQLite.
        self._url: str | None = str(path_or_url).strip() if is_postgres_url(path_or_url) else None
        self.path = _redact(self._url) if self._url else check_db_path(path_or_url, create=create)
        self.flush_rows = flush_rows
        self.flush_interval_s = flush_interval_s
        self._closed = True
        self._conn = self._open(self.path, create=create)
        self._closed = False
        # Hot-path buffers: lists of parameter tuples; positions keep only their latest state.
        self._plans: list[tuple[Any, ...]] = []
        self._plan_at: dict[tuple[str, str], int] = {}  # (run_id, plan_id) -> index in _plans (buffered inserts)
        self._plan_updates: list[tuple[str, str, str]] = []
        # (run_id, order_id) -> the order as it was last buffered: an order buffered twice is written once,
        # as it ended (its row is built at the flush: an ``Order`` is immutable)
        self._orders: dict[tuple[str, str], Order] = {}
        self._marks: list[tuple[Any, ...]] = []
        self._equity: list[tuple[Any, ...]] = []
        self._events: list[tuple[Any, ...]] = []
        self._session_bars: list[tuple[Any, ...]] = []
        self._session_events: list[tuple[Any, ...]] = []
        self._account_writes: list[AccountWrite] = []
        self._beat: tuple[float, str] | None = None  # a replay's heartbeat sent with the next flush
        self._buffered = 0
        self._last_flush_s: float | None = None
        # Busy-database retries: counted (a metric), reported through ``on_retry`` (a log line).
        self.retry_window_s = RETRY_WINDOW_S
        self.retries = 0
        self.on_retry: Callable[[int, float, str], None] | None = None
        self._lease: tuple[str, str] | None = None  # (account, run_id) this process holds
        self._checkpointer: Checkpointer | None = None  # ``checkpoint_in_background``
        self.mark_misses: list[str] = []  # position ids whose mark matched no open row
        self._writer: WriteBehind | None = None  # ``write_behind``: a replay's flushes in a writer process
        self._writer_lost: str | None = None  # why the writer is gone: buffered rows are dropped since
        self.dropped_rows = 0
        self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")

    # ------------------------------------------------------------------ open / close

    @property
    def backend(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return "postgresql" if self._url else "sqlite"

    def _open_postgres(self, create: bool) -> PgConnection:
        """Connect, refuse a database without crupto's schema (``create=False``) and migrate it."""
        assert self._url is not None
        try:
            conn = PgConnection(self._url)
        except DB_ERRORS as exc:
            raise StorageError(
                f"cannot open database {self.path}: {exc}; check DB_URL (host, port, user, database, password) "
                f"and that the PostgreSQL server is running"
            ) from None
        try:
            if not create and current_version(conn) < 1:
                raise StorageError(
                    f"database {self.path} has no crupto schema, so it is not the runner's database "
                    f"(nothing was changed); check DB_URL or --db"
                )
            conn.execute("SELECT pg_advisory_lock(1)")  # one migrating process at a time (a fresh database)
            try:
                apply_migrations(conn, MIGRATIONS, db_label=f"database {self.path}")
                conn.install_compat()
            finally:
                conn.execute("SELECT pg_advisory_unlock(1)")
        except DB_ERRORS as exc:
            conn.close()
            raise StorageError(f"cannot open database {self.path}: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        return conn

    def _open(self, path: str, *, create: bool = True) -> sqlite3.Connection:
        if self._url:
            return self._open_postgres(create)  # type: ignore[return-value]  # the sqlite3 subset Storage uses
        memory = path == ":memory:"
        if not create:
            from prod_core.storage.paths import require_crupto_schema

            require_crupto_schema(path)
        if create and not memory:
            parent = Path(path).expanduser().resolve().parent
            try:
                parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageError(
                    f"cannot create the directory {parent} for database {path}: {exc.strerror or exc}; "
                    f"create it with write permission or point DB at a writable location"
                ) from exc
        # Another process opening the same new file at the same moment (two runners started together)
        # can make the journal-mode switch answer "database is locked" at once, without waiting on the
        # busy timeout: such an open is tried again for up to OPEN_BUSY_S.
        deadline = time.monotonic() + OPEN_BUSY_S
        while True:
            try:
                return self._connect(path, create=create, memory=memory)
            except StorageError as exc:
                if not _busy(exc.__cause__) or time.monotonic() >= deadline:
                    raise
            time.sleep(OPEN_BUSY_RETRY_S)

    @staticmethod
    def _connect(path: str, *, create: bool, memory: bool) -> sqlite3.Connection:
        """One attempt of ``_open`` on a SQLite file: connect, set the pragmas, migrate."""
        try:
            if create or memory:
                conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            else:  # mode=rw: never create the file, even if it vanished since the check
                uri = Path(path).expanduser().resolve().as_uri() + "?mode=rw"
                conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StorageError(
                f"cannot open database {path}: {exc}; check the path and its permissions or point DB elsewhere"
            ) from exc
        try:
            conn.execute("PRAGMA busy_timeout = 5000")
            conn.execute("PRAGMA journal_mode = WAL").fetchone()
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            apply_migrations(conn, MIGRATIONS, db_label=f"database {path}")
        except sqlite3.DatabaseError as exc:
            conn.close()
            if "not a database" in str(exc) or "malformed" in str(exc):
                raise StorageError(
                    f"{path} is not a usable SQLite database ({exc}); move it away (or restore a backup) "
                    f"and start again, or point DB at another file"
                ) from exc
            raise StorageError(f"cannot open database {path}: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        return conn

    def checkpoint_in_background(self) -> None:
        """SQLite: WAL checkpoints on a thread of their own after each commit instead of inside the
        commits (``storage/checkpoint.py``), for a writer of large batches (a replay). No-op on
        PostgreSQL and in memory."""
        if self._url or self.path == ":memory:" or self._checkpointer is not None or self._closed:
            return
        self._conn.execute("PRAGMA wal_autocheckpoint = 0")
        self._checkpointer = Checkpointer(self.path)

    def write_behind(self) -> bool:
        """SQLite file: every later flush is applied by a writer process while this one goes on
        (``storage/writer.py``: one transaction per flush, in order; reads and immediate writes wait
        for the writer first). For a replay, which can be rerun: a dead writer stops it. No-op on
        PostgreSQL and in memory. Raises ``StorageError`` (flushes stay in this process) when the
        writer cannot start."""
        if self._url or self.path == ":memory:" or self._writer is not None or self._closed:
            return False
        self.flush()
        try:
            self._writer = WriteBehind(self.path, self.retry_window_s, BUSY_TIMEOUT_MS)
        except (WriterGone, OSError) as exc:
            raise StorageError(f"database {self.path}: {exc}") from None
        self._writer.on_retry = self._retried
        return True

    def _writer_call(self, w: WriteBehind, call: Callable[[], None]) -> None:
        """``call`` on the writer, its failures as this module's errors (and its mark misses taken over)."""
        try:
            call()
        except WriterFailed as exc:
            if exc.kind == "lease":
                raise LeaseLost(str(exc)) from None
            if exc.kind == "db":
                raise StorageError(f"database {self.path}: write failed and was rolled back: {exc}") from None
            raise StorageError(str(exc)) from None
        except WriterGone as exc:
            self._release_writer()
            dropped = self._buffered
            self._clear_buffers()
            self.dropped_rows += dropped
            self._writer_lost = (
                f"database {self.path}: {exc}; it holds this run's rows up to the last confirmed flush (whole "
                f"flushes, the journal a prefix of the account's commits) and nothing after them is written "
                f"({dropped} buffered rows dropped): the replay stops; run it again"
            )
            raise WriterLost(self._writer_lost) from None
        finally:
            if w.misses:
                self.mark_misses.extend(w.misses)
                w.misses.clear()

    def _stop_writer(self) -> None:
        """Wait for the writer's flushes and let it exit; raises as a failed flush does."""
        w = self._writer
        if w is not None:
            try:
                self._writer_call(w, w.drain)
            finally:
                self._release_writer()

    def _release_writer(self) -> None:
        """Let the writer exit without waiting for confirmations (flushes it cannot commit stay unwritten)."""
        w, self._writer = self._writer, None
        if w is not None:
            w.close()

    def _stop_checkpointer(self) -> None:
        ckpt, self._checkpointer = self._checkpointer, None
        if ckpt is not None:
            ckpt.stop()

    def close(self) -> None:
        """Flush the buffers and close the connection. Safe to call twice."""
        if self._closed:
            return
        try:
            self.flush()
            self._stop_writer()
        finally:
            self._closed = True
            self._release_writer()  # after a failed flush: its unconfirmed flushes stay unwritten
            self._stop_checkpointer()
            self._conn.close()  # the last connection to close checkpoints the WAL

    def close_quietly(self) -> None:
        """Close after a failure: try to flush, and close the connection whatever happens."""
        if self._closed:
            return
        try:
            self.flush()
            self._stop_writer()
        except StorageError:
            pass
        finally:
            self._closed = True
            self._release_writer()  # after a failed flush: its unconfirmed flushes stay unwritten
            self._stop_checkpointer()
            self._conn.close()

    def __enter__(self) -> Storage:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def schema_version(self) -> int:
        return current_version(self._db())

    def _db(self) -> sqlite3.Connection:
        if self._closed:
            raise StorageError(f"storage {self.path} is closed; open a new Storage")
        w = self._writer
        if w is not None:  # read your writes: the writer's flushes first
            self._writer_call(w, w.drain)
        return self._conn

    # ------------------------------------------------------------------ transactions

    def _begin(self, conn: sqlite3.Connection) -> None:
        """BEGIN IMMEDIATE, retried with backoff while another process holds the write lock."""
        try:
            begin_immediate(conn, self.path, self.retry_window_s, DB_ERRORS, self._retried)
        except BatchError as exc:
            raise StorageError(str(exc)) from exc.__cause__

    def _retried(self, attempt: int, waited: float, error: str) -> None:
        """A busy database retried (by this process or the writer): counted, and told ``on_retry``."""
        self.retries += 1
        if self.on_retry is not None:
            self.on_retry(attempt, waited, error)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE: take the write lock up front, retry while busy)."""
        conn = self._db()
        self._begin(conn)
        try:
            yield conn
            conn.execute("COMMIT")
            if self._checkpointer is not None:
                self._checkpointer.kick()
        except BaseException as exc:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except DB_ERRORS:
                    pass
            if isinstance(exc, DB_ERRORS):
                raise StorageError(f"database {self.path}: write failed and was rolled back: {exc}") from exc
            raise

    def _write_buffers(self, conn: sqlite3.Connection) -> None:
        """Every buffered row, inside the caller's transaction (``_batch``, applied by ``apply_ops``)."""
        if self._buffered:
            self._apply(conn, self._batch())

    def _apply(self, conn: sqlite3.Connection, ops: list[tuple[Any, ...]]) -> None:
        try:
            apply_ops(conn, ops, self.path, self.mark_misses)
        except BatchError as exc:
            raise (LeaseLost if exc.kind == "lease" else StorageError)(str(exc)) from None

    def _batch(self) -> list[tuple[Any, ...]]:
        """The buffers as the operations of one transaction: plain values only (storage/batch.py)."""
        # Order matters: a plan insert precedes its status updates; orders before fills;
        # journal commits keep the order they were made in.
        ops: list[tuple[Any, ...]] = []
        if self._plans:
            ops.append((ROWS, _SQL_INSERT_PLAN, self._plans))
        if self._plan_updates:
            ops.append((MANY, _SQL_UPDATE_PLAN, self._plan_updates))
        if self._orders:
            ops.append((ROWS, _SQL_UPSERT_ORDER, [
                (run_id, order.order_id, order.plan_id, order.ts_ms, order.symbol, _val(order.side), order.qty,
                 order.kind, _val(order.reason), _val(order.status), order.reject_reason, order.filled_qty,
                 order.done_ms or None) for (run_id, _), order in self._orders.items()]))  # fmt: skip
        if self._marks:
            ops.append((MARKS, _SQL_MARK_POSITION, self._marks))
        ops.append((CRASH, "mid_flush"))
        if self._equity:
            ops.append((ROWS, _SQL_INSERT_EQUITY, self._equity))
        if self._events:
            ops.append((MANY, _SQL_INSERT_EVENT, self._events))
        if self._session_bars:
            ops.append((MANY, _SQL_INSERT_SESSION_BAR, self._session_bars))
        if self._session_events:
            ops.append((MANY, _SQL_INSERT_SESSION_EVENT, self._session_events))
        if self._account_writes:
            self._account_ops(self._account_writes, ops)
        if self._beat is not None:
            ops.append((ONE, _SQL_HEARTBEAT, self._beat))
        return ops

    def _clear_buffers(self) -> None:
        self._plans = []
        self._plan_at = {}
        self._plan_updates = []
        self._orders = {}
        self._marks = []
        self._equity = []
        self._events = []
        self._session_bars = []
        self._session_events = []
        self._account_writes = []
        self._beat = None
        self._buffered = 0

    @property
    def buffered_rows(self) -> int:
        """Rows waiting in the buffers (a position updated twice counts twice)."""
        return self._buffered

    def flush(self) -> None:
        """Write every buffered row in ONE transaction. No-op when nothing is buffered."""
        if self._buffered:
            w = self._writer
            if w is not None:
                self._send(w)
                return
            if self._writer_lost is not None:  # rows after flushes that may be missing: never written
                self.dropped_rows += self._buffered
                self._clear_buffers()
                return
            with self._tx() as conn:
                self._write_buffers(conn)
            self._clear_buffers()

    def _send(self, w: WriteBehind) -> None:
        """The buffers to the writer process as one flush (written here when ``marshal`` cannot carry them)."""
        ops = self._batch()
        try:
            self._writer_call(w, lambda: w.send(ops))
        except ValueError:  # a value marshal cannot write (a numpy scalar): after the writer's flushes, here
            with self._tx() as conn:
                self._apply(conn, ops)
        self._clear_buffers()

    def maybe_flush(self, now_s: float) -> bool:
        """Flush when ``flush_rows`` rows are buffered or ``flush_interval_s`` passed; True if flushed.

        ``now_s`` should be a wall or monotonic clock (not the simulated replay clock), since
        the interval bounds how much a crash can lose.
        """
        last = self._last_flush_s
        if last is None:
            self._last_flush_s = last = now_s
        if self._buffered and (self._buffered >= self.flush_rows or now_s - last >= self.flush_interval_s):
            self.flush()
            self._last_flush_s = now_s
            return True
        if not self._buffered:
            self._last_flush_s = now_s
        return False

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        """A read query (buffered rows flushed first) as dicts: for aggregates and small results."""
        return self._query(sql, params)

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        self.flush()
        cur = self._db().execute(sql, params)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    # ------------------------------------------------------------------ runs

    def start_run(
        self,
        run_id: str,
        *,
        mode: str,
        feed: str,
        config_hash: str,
        code_version: str,
        ts: float,
        args: str = "",
        account: str | None = None,
    ) -> None:
        """Record a new ``running`` run of ``account`` (default: ``replay:<run_id>`` for a replay, else ``paper``)."""
        if account is None:
            account = f"replay:{run_id}" if feed == "replay" else "paper"
        if self._db().execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone():
            raise StorageError(
                f"run id {run_id!r} already exists in database {self.path}: run ids are unique for the life of "
                f"the database; pass another --run-id or omit it for a fresh one"
            )
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO runs (run_id, mode, feed, started_at, heartbeat_at, status, config_hash,"
                " code_version, args, account) VALUES (?, ?, ?, ?, ?, 'running', ?, ?, ?, ?)",
                (run_id, mode, feed, ts, ts, config_hash, code_version, args, account),
            )

    def heartbeat(self, run_id: str, ts: float) -> None:
        """Heartbeat the run (and renew the account lease this process holds); writes the buffers too.

        Raises ``LeaseLost`` when another runner took the lease over meanwhile.
        """
        if self._writer is not None and self._lease is None:  # a replay: with the next flush, without waiting
            self._beat = (ts, run_id)
            self._buffered += 1
            self.flush()
            return
        with self._tx() as conn:
            self._write_buffers(conn)
            conn.execute(_SQL_HEARTBEAT, (ts, run_id))
            if self._lease is not None:
                account, owner = self._lease
                cur = conn.execute(
                    "UPDATE leases SET heartbeat_at = ? WHERE account = ? AND run_id = ?", (ts, account, owner)
                )
                if cur.rowcount != 1:
                    row = conn.execute("SELECT run_id, pid, host FROM leases WHERE account = ?", (account,)).fetchone()
                    raise LeaseLost(
                        f"account {account}: the writer lease was taken over by "
                        f"{'run %s (pid %s on %s)' % row if row else 'nobody'}; run {owner} stops writing the account"
                    )
        self._clear_buffers()

    def end_run(self, run_id: str, *, status: str, ts: float) -> None:
        """Flush everything, then mark the run ``stopped``, ``failed`` or ``crashed``."""
        if status not in _RUN_STATUSES - {"running"}:
            raise StorageError(f"end_run status must be stopped, failed or crashed, was {status!r}")
        self.flush()
        with self._tx() as conn:
            conn.execute(
                "UPDATE runs SET status = ?, ended_at = ?, heartbeat_at = ? WHERE run_id = ?",
                (status, ts, ts, run_id),
            )

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        rows = self._query("SELECT * FROM runs WHERE run_id = ?", (run_id,))
        return rows[0] if rows else None

    def list_runs(self, limit: int = 10, *, account: str | None = None) -> list[dict[str, Any]]:
        """Newest first; of one account when ``account`` is given."""
        if account is not None:
            return self._query("SELECT * FROM runs WHERE account = ? ORDER BY started_at DESC, rowid DESC LIMIT ?",
                               (account, int(limit)))
        return self._query("SELECT * FROM runs ORDER BY started_at DESC, rowid DESC LIMIT ?", (int(limit),))

    def latest_run(self, account: str) -> dict[str, Any] | None:
        """The newest run of ``account``, or None."""
        rows = self.list_runs(1, account=account)
        return rows[0] if rows else None

    def known_accounts(self, *, replays: bool = False) -> list[str]:
        """Every account this database knows (saved state, lease, journal or run), sorted; replays'
        own accounts (``replay:<run_id>``) only with ``replays``."""
        rows = self._query(
            "SELECT account FROM governance_state UNION SELECT account FROM leases"
            " UNION SELECT account FROM runs UNION SELECT DISTINCT account FROM journal ORDER BY account"
        )
        return [r["account"] for r in rows if replays or not r["account"].startswith("replay:")]

    def mark_stale_runs(self, now_s: float, max_age_s: float, *, keep: str | None = None) -> list[tuple[str, float]]:
        """Runs still ``running`` with no heartbeat for ``max_age_s`` become ``crashed``.

        Returns ``(run_id, seconds since its last heartbeat)`` for each. ``keep`` (a run id) is
        never marked. Their pending plans, which no process will fill any more, are cancelled.
        """
        cutoff = now_s - max_age_s
        with self._tx() as conn:
            stale = [
                (r[0], now_s - float(r[1]))
                for r in conn.execute(
                    "SELECT run_id, COALESCE(heartbeat_at, started_at) FROM runs WHERE status = 'running'"
                    " AND COALESCE(heartbeat_at, started_at) < ? AND run_id != ? ORDER BY started_at",
                    (cutoff, keep or ""),
                )
            ]
            for run_id, _ in stale:
                conn.execute(
                    "UPDATE runs SET status = 'crashed', ended_at = COALESCE(heartbeat_at, started_at)"
                    " WHERE run_id = ? AND status = 'running'",
                    (run_id,),
                )
        return stale

    def mark_crashed(self, run_id: str, *, ts: float) -> bool:
        """A ``running`` run whose process is known to be gone -> ``crashed`` (ended at ``ts``)."""
        with self._tx() as conn:
            cur = conn.execute(
                "UPDATE runs SET status = 'crashed', ended_at = ? WHERE run_id = ? AND status = 'running'",
                (ts, run_id),
            )
            return cur.rowcount == 1

    def cancel_orphan_plans(self) -> dict[str, int]:
        """Pending plans of runs that are no longer running -> cancelled; return counts per run."""
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT run_id, COUNT(*) FROM plans WHERE status = 'pending' AND run_id IN"
                " (SELECT run_id FROM runs WHERE status != 'running') GROUP BY run_id"
            ).fetchall()
            for run_id, _ in rows:
                conn.execute("UPDATE plans SET status = 'cancelled' WHERE run_id = ? AND status = 'pending'", (run_id,))
        return {r[0]: int(r[1]) for r in rows}

    # ------------------------------------------------------------------ feeds

    def set_feed_state(self, run_id: str, feed: str, health: int, ts: float, detail: str = "") -> None:
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO feed_states (run_id, feed, health, updated_at, detail) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (run_id, feed) DO UPDATE SET health = excluded.health,"
                " updated_at = excluded.updated_at, detail = excluded.detail",
                (run_id, feed, int(health), ts, detail),
            )

    def feed_states(self, run_id: str) -> list[dict[str, Any]]:
        return self._query("SELECT * FROM feed_states WHERE run_id = ? ORDER BY feed", (run_id,))

    # ------------------------------------------------------------------ plans (buffered)

    def add_plan(
        self,
        run_id: str,
        *,
        plan_id: str,
        ts_ms: int,
        strategy: str,
        symbol: str,
        side: Any,
        entry: float,
        stop: float,
        target: float,
        reason: str,
        regime: int,
        decision: str,
        qty: float,
        risk_usd: float,
        nominal_r_usd: float,
        status: str,
    ) -> None:
        if status not in _PLAN_STATUSES:
            raise StorageError(f"plan status must be one of {sorted(_PLAN_STATUSES)}, was {status!r}")
        self._plan_at[(run_id, plan_id)] = len(self._plans)
        self._plans.append(
            (
                run_id, plan_id, ts_ms, strategy, symbol, _val(side), entry, stop, target, reason,
                int(regime), decision, qty, risk_usd, nominal_r_usd, status,
            )
        )  # fmt: skip
        self._buffered += 1

    def update_plan_status(self, run_id: str, plan_id: str, status: str) -> None:
        if status not in _PLAN_STATUSES:
            raise StorageError(f"plan status must be one of {sorted(_PLAN_STATUSES)}, was {status!r}")
        at = self._plan_at.get((run_id, plan_id))
        if at is not None:  # still buffered: it is inserted with its latest status
            self._plans[at] = (*self._plans[at][:-1], status)
            return
        self._plan_updates.append((status, run_id, plan_id))
        self._buffered += 1

    def pending_plans(self, run_id: str | None = None) -> list[dict[str, Any]]:
        if run_id is None:
            return self._query("SELECT * FROM plans WHERE status = 'pending' ORDER BY ts_ms, rowid")
        return self._query(
            "SELECT * FROM plans WHERE status = 'pending' AND run_id = ? ORDER BY ts_ms, rowid", (run_id,)
        )

    def cancel_pending_plans(self, run_id: str) -> int:
        """Pending plans of ``run_id`` -> cancelled (buffered ones included); return how many."""
        with self._tx() as conn:
            self._write_buffers(conn)
            cur = conn.execute(
                "UPDATE plans SET status = 'cancelled' WHERE run_id = ? AND status = 'pending'", (run_id,)
            )
            count = cur.rowcount
        self._clear_buffers()
        return count

    def plans(self, run_id: str) -> list[dict[str, Any]]:
        return self._query("SELECT * FROM plans WHERE run_id = ? ORDER BY ts_ms, rowid", (run_id,))

    # ------------------------------------------------------------------ orders and fills

    def add_order(self, run_id: str, order: Order) -> None:
        """Buffer an order; adding the same ``order_id`` again updates its status."""
        key = (run_id, order.order_id)
        if key not in self._orders:
            self._buffered += 1
        self._orders[key] = order

    def orders(self, run_id: str) -> list[dict[str, Any]]:
        return self._query("SELECT * FROM orders WHERE run_id = ? ORDER BY ts_ms, rowid", (run_id,))

    def fills(self, run_id: str | None = None) -> list[dict[str, Any]]:
        if run_id is None:
            return self._query("SELECT * FROM fills ORDER BY ts_ms, rowid")
        return self._query("SELECT * FROM fills WHERE run_id = ? ORDER BY ts_ms, rowid", (run_id,))

    # ------------------------------------------------------------------ the account journal

    def _account_ops(self, writes: list[AccountWrite], ops: list[tuple[Any, ...]]) -> None:
        """Buffered journal commits (a replay), inside one transaction, a table at a time.

        The same rows as ``_write_account`` per commit, in an order that keeps every dependency:
        fills and journal entries in commit order, every opened position before the updates and
        closes (each position's updates keep their order and precede its close), and only the
        last saved state of each account (each commit's would replace the one before). The lease
        is checked once: this transaction holds the database's write lock.
        """
        lease = self._lease
        if lease is not None and any(w.account == lease[0] for w in writes):
            ops.append((LEASE, lease[0], lease[1]))
        fills = [w for w in writes if w.fill is not None]
        if fills:
            ops.append((ROWS, _SQL_INSERT_FILL, [
                (w.run_id, f.fill_id, f.order_id, f.ts_ms, f.symbol, _val(f.side), f.qty, f.price, f.fee_usd,
                 _val(f.reason), f.liquidity, f.ref_price or None) for w in fills for f in (w.fill,)]))
            ops.append((CRASH, "after_fill_insert"))
        ops.append((JOURNAL, _SQL_INSERT_JOURNAL, [(w.account, w.run_id, *e) for w in writes for e in w.entries]))
        # A position opened in this batch is inserted as the batch leaves it (its updates and its close
        # applied to the row in commit order): the same row as an insert followed by UPDATEs, written
        # once. The others are updated and closed by SQL, updates first, each checked to hit one open row.
        rows: list[list[Any]] = []
        at: dict[str, list[Any]] = {}  # position_id -> its row in ``rows``
        updates: list[tuple[Any, ...]] = []
        closes: list[tuple[Any, ...]] = []
        for w in writes:
            p = w.open_position
            if p is not None:
                row = [w.run_id, w.account, p.position_id, p.plan_id, p.strategy, p.symbol, _val(p.side), p.qty,
                       p.entry_price, p.stop, p.target, p.ts_open_ms, p.nominal_r_usd, p.entry_fee_usd, p.last_price,
                       p.leverage, p.maint_margin_rate, p.funding_usd, p.funding_ts_ms, p.realized_usd, "open",
                       None, None, None, None, None]  # fmt: skip
                rows.append(row)
                at.setdefault(p.position_id, row)  # a second insert of the id fails as it did
            u = w.update_position
            if u is not None:
                row = at.get(u.position_id)
                if row is not None and row[_POS_STATUS] == "open":
                    row[0], row[7], row[8], row[13], row[14], row[17], row[18], row[19] = (
                        w.run_id, u.qty, u.entry_price, u.entry_fee_usd, u.last_price, u.funding_usd, u.funding_ts_ms,
                        u.realized_usd)  # fmt: skip
                else:
                    updates.append((w.run_id, u.qty, u.entry_price, u.entry_fee_usd, u.last_price, u.funding_usd,
                                    u.funding_ts_ms, u.realized_usd, u.position_id))
            c = w.close
            if c is not None:
                row = at.get(c[0])
                if row is not None and row[_POS_STATUS] == "open":
                    row[0], row[14], row[20:] = w.run_id, c[2], ["closed", c[1], c[2], c[3], c[4], c[5]]
                else:
                    closes.append((w.run_id, c[1], c[2], c[2], c[3], c[4], c[5], c[0]))
        if rows:
            ops.append((ROWS, _SQL_INSERT_POSITION_ROW, rows))
        for sql, changes, what in ((_SQL_UPDATE_POSITION, updates, "updating"), (_SQL_CLOSE_POSITION, closes, "closing")):
            if changes:
                ops.append((CHECKED, sql, changes, what))
        last: dict[str, AccountWrite] = {}
        for w in writes:
            last[w.account] = w
        for w in last.values():
            ops.append((ONE, _SQL_UPSERT_SNAPSHOT, (w.account, _snapshot_json(w), w.ts)))
        if fills:
            ops.append((CRASH, "before_commit"))

    def _write_account(self, conn: sqlite3.Connection, w: AccountWrite) -> None:
        """Every row of one journal commit; raises (and the caller rolls back) on any mismatch."""
        if self._lease is not None and self._lease[0] == w.account:
            row = conn.execute("SELECT run_id FROM leases WHERE account = ?", (w.account,)).fetchone()
            if row is None or row[0] != self._lease[1]:
                owner = row[0] if row else "nobody"
                raise LeaseLost(
                    f"account {w.account}: the writer lease now belongs to {owner}, not to run {self._lease[1]}; "
                    f"this runner stops writing the account"
                )
        fill = w.fill
        if fill is not None:
            conn.execute(
                _SQL_INSERT_FILL,
                (
                    w.run_id, fill.fill_id, fill.order_id, fill.ts_ms, fill.symbol, _val(fill.side),
                    fill.qty, fill.price, fill.fee_usd, _val(fill.reason), fill.liquidity, fill.ref_price or None,
                ),
            )  # fmt: skip
            crash_point("after_fill_insert")
        conn.executemany(_SQL_INSERT_JOURNAL, journal_rows([(w.account, w.run_id, *entry) for entry in w.entries]))
        pos = w.open_position
        if pos is not None:
            conn.execute(
                _SQL_INSERT_POSITION,
                (
                    w.run_id, w.account, pos.position_id, pos.plan_id, pos.strategy, pos.symbol, _val(pos.side),
                    pos.qty, pos.entry_price, pos.stop, pos.target, pos.ts_open_ms, pos.nominal_r_usd,
                    pos.entry_fee_usd, pos.last_price, pos.leverage, pos.maint_margin_rate, pos.funding_usd,
                    pos.funding_ts_ms, pos.realized_usd,
                ),
            )  # fmt: skip
        upd = w.update_position
        if upd is not None:
            cur = conn.execute(
                _SQL_UPDATE_POSITION,
                (w.run_id, upd.qty, upd.entry_price, upd.entry_fee_usd, upd.last_price, upd.funding_usd,
                 upd.funding_ts_ms, upd.realized_usd, upd.position_id),
            )  # fmt: skip
            if cur.rowcount != 1:
                raise StorageError(
                    f"database {self.path}: updating position {upd.position_id} matched no open position; nothing "
                    f"of this entry was written: run `python -m prod_core.cli reconcile --account {w.account}`"
                )
        if w.close is not None:
            position_id, ts_close_ms, exit_price, exit_reason, pnl_usd, trade_r = w.close
            cur = conn.execute(
                _SQL_CLOSE_POSITION,
                (w.run_id, ts_close_ms, exit_price, exit_price, exit_reason, pnl_usd, trade_r, position_id),
            )
            if cur.rowcount != 1:
                raise StorageError(
                    f"database {self.path}: closing position {position_id} matched no open position; nothing of "
                    f"this fill was written: run `python -m prod_core.cli reconcile --account {w.account}`"
                )
        conn.execute(_SQL_UPSERT_SNAPSHOT, (w.account, _snapshot_json(w), w.ts))
        if fill is not None:
            crash_point("before_commit")

    def commit_account(self, write: AccountWrite, *, immediate: bool = True) -> None:
        """Journal ``write`` with the pending buffers in ONE transaction (``immediate``), or buffer
        it for the next flush (a replay, which can be rerun, batches its commits)."""
        if not immediate:
            self._account_writes.append(write)
            self._buffered += 1
            return
        with self._tx() as conn:
            self._write_buffers(conn)
            self._write_account(conn, write)
        self._clear_buffers()
        if write.fill is not None:
            crash_point("after_commit")

    def journal(self, account: str) -> list[dict[str, Any]]:
        """The account's journal in sequence order; ``body`` decoded from ``body_json``."""
        rows = self._query("SELECT * FROM journal WHERE account = ? ORDER BY seq", (account,))
        for row in rows:
            row["body"] = json.loads(row.pop("body_json"))
        return rows

    def funding_payments(self, run_id: str) -> list[dict[str, Any]]:
        """Funding payments journaled by one run, in time order (``fee_usd``: paid, negative: received)."""
        return self._query(
            "SELECT seq, account, ts_ms, position_id, symbol, side, qty, price, fee_usd, body_json FROM journal"
            " WHERE run_id = ? AND kind = 'funding' ORDER BY seq", (run_id,)
        )

    def journal_size(self, account: str) -> int:
        (n,) = self._db().execute("SELECT COUNT(*) FROM journal WHERE account = ?", (account,)).fetchone()
        return int(n)

    def accounts(self) -> list[str]:
        """Accounts that have a journal or a saved state."""
        rows = self._query(
            "SELECT account FROM journal UNION SELECT account FROM governance_state ORDER BY account"
        )
        return [r["account"] for r in rows]

    # ------------------------------------------------------------------ positions

    def mark_positions(self, run_id: str, positions: list[Position]) -> None:
        """Buffer the marks of open positions (written with the next flush or commit)."""
        for p in positions:
            self._marks.append((p.last_price, run_id, p.position_id))
        self._buffered += len(positions)

    def open_positions(self, account: str | None = None) -> list[dict[str, Any]]:
        """Open positions of one account, or of every account."""
        if account is None:
            return self._query("SELECT * FROM positions WHERE status = 'open' ORDER BY ts_open_ms, rowid")
        return self._query(
            "SELECT * FROM positions WHERE status = 'open' AND account = ? ORDER BY ts_open_ms, rowid", (account,)
        )

    def closed_trades(self, run_id: str | None = None) -> list[dict[str, Any]]:
        if run_id is None:
            return self._query("SELECT * FROM positions WHERE status = 'closed' ORDER BY ts_close_ms, rowid")
        return self._query(
            "SELECT * FROM positions WHERE status = 'closed' AND run_id = ? ORDER BY ts_close_ms, rowid",
            (run_id,),
        )

    def repair_positions(
        self, account: str, run_id: str, *, void: list[str], insert: list[Position], ts: float
    ) -> None:
        """Make the position rows agree with the journal: void rows it does not know, insert the
        ones it has, and hand every open row to ``run_id``. One transaction."""
        with self._tx() as conn:
            for position_id in void:
                cur = conn.execute(
                    "UPDATE positions SET status = 'void', run_id = ?, ts_close_ms = ?, exit_reason = 'void_reconcile'"
                    " WHERE position_id = ? AND account = ? AND status = 'open'",
                    (run_id, int(ts * 1000), position_id, account),
                )
                if cur.rowcount != 1:
                    raise StorageError(f"database {self.path}: position {position_id} to void is not open")
            for pos in insert:
                conn.execute("DELETE FROM positions WHERE position_id = ? AND status = 'void'", (pos.position_id,))
                conn.execute(
                    _SQL_INSERT_POSITION,
                    (
                        run_id, account, pos.position_id, pos.plan_id, pos.strategy, pos.symbol, _val(pos.side),
                        pos.qty, pos.entry_price, pos.stop, pos.target, pos.ts_open_ms, pos.nominal_r_usd,
                        pos.entry_fee_usd, pos.last_price, pos.leverage, pos.maint_margin_rate, pos.funding_usd,
                        pos.funding_ts_ms, pos.realized_usd,
                    ),
                )  # fmt: skip
            conn.execute("UPDATE positions SET run_id = ? WHERE account = ? AND status = 'open'", (run_id, account))

    # ------------------------------------------------------------------ writer lease

    def acquire_lease(
        self,
        account: str,
        run_id: str,
        *,
        pid: int,
        host: str,
        now: float,
        takeover: Callable[[dict[str, Any]], str | None],
    ) -> tuple[bool, dict[str, Any] | None, str]:
        """Become the one writer of ``account``.

        Returns ``(acquired, previous_holder, why)``. A lease held by another run is taken over
        only when ``takeover(holder)`` gives a reason (owner dead, heartbeat stale); otherwise
        nothing changes and ``acquired`` is False.
        """
        with self._tx() as conn:
            cur = conn.execute("SELECT * FROM leases WHERE account = ?", (account,))
            names = [d[0] for d in cur.description]
            row = cur.fetchone()
            holder = dict(zip(names, row, strict=True)) if row else None
            why = ""
            if holder is not None and holder["run_id"] != run_id:
                why = takeover(holder) or ""
                if not why:
                    return False, holder, ""
            conn.execute(
                "INSERT INTO leases (account, run_id, pid, host, acquired_at, heartbeat_at) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (account) DO UPDATE SET run_id = excluded.run_id, pid = excluded.pid,"
                " host = excluded.host, acquired_at = excluded.acquired_at, heartbeat_at = excluded.heartbeat_at",
                (account, run_id, pid, host, now, now),
            )
        self._lease = (account, run_id)
        return True, holder, why

    def release_lease(self, account: str, run_id: str) -> None:
        with self._tx() as conn:
            conn.execute("DELETE FROM leases WHERE account = ? AND run_id = ?", (account, run_id))
        self._lease = None

    def lease(self, account: str) -> dict[str, Any] | None:
        rows = self._query("SELECT * FROM leases WHERE account = ?", (account,))
        return rows[0] if rows else None

    # ------------------------------------------------------------------ equity and events (buffered)

    def add_equity(
        self,
        run_id: str,
        *,
        ts_ms: int,
        equity_usd: float,
        cash_usd: float,
        pnl_cum_r: float,
        dd_state: float,
        max_dd_r: float,
        exposure_gross_pct: float,
        exposure_net_pct: float,
    ) -> None:
        self._equity.append(
            (run_id, ts_ms, equity_usd, cash_usd, pnl_cum_r, dd_state, max_dd_r, exposure_gross_pct, exposure_net_pct)
        )
        self._buffered += 1

    def add_equity_rows(self, rows: list[tuple]) -> None:
        """Buffer equity rows already laid out as ``add_equity`` lays them out (the replay's fast lane)."""
        self._equity.extend(rows)
        self._buffered += len(rows)

    def equity_curve(self, run_id: str) -> list[dict[str, Any]]:
        return self._query("SELECT * FROM equity WHERE run_id = ? ORDER BY ts_ms, rowid", (run_id,))

    def add_event(
        self,
        run_id: str,
        *,
        ts: float,
        kind: str,
        severity: str,
        component: str,
        message: str,
        fields: dict[str, Any],
    ) -> None:
        self._events.append(
            (run_id, ts, kind, severity, component, message, json.dumps(fields, sort_keys=True, default=str))
        )
        self._buffered += 1

    def events(self, run_id: str) -> list[dict[str, Any]]:
        rows = self._query("SELECT * FROM events WHERE run_id = ? ORDER BY ts, rowid", (run_id,))
        for row in rows:
            row["fields"] = json.loads(row["fields_json"])
        return rows

    # ------------------------------------------------------------------ recorded session (buffered)

    def add_session_bar(self, run_id: str, seq: int, bar: Any) -> None:
        """Record a received closed bar (``seq``: its arrival number in the run, from 0)."""
        self._session_bars.append(
            (run_id, seq, bar.symbol, bar.ts_ms, bar.open, bar.high, bar.low, bar.close, bar.volume)
        )
        self._buffered += 1

    def add_session_event(self, run_id: str, seq: int, *, after_bar: int, kind: str, payload: dict[str, Any]) -> None:
        """Record a control event that took effect after ``after_bar`` received bars."""
        self._session_events.append(
            (run_id, seq, after_bar, kind, json.dumps(payload, sort_keys=True, default=str))
        )
        self._buffered += 1

    def session_bars(self, run_id: str) -> list[dict[str, Any]]:
        return self._query("SELECT * FROM session_bars WHERE run_id = ? ORDER BY seq", (run_id,))

    def session_events(self, run_id: str) -> list[dict[str, Any]]:
        rows = self._query("SELECT * FROM session_events WHERE run_id = ? ORDER BY seq", (run_id,))
        for row in rows:
            row["payload"] = json.loads(row.pop("payload_json"))
        return rows

    # ------------------------------------------------------------------ governance and audit (account-level)

    def load_governance_state(self, account: str = "paper") -> dict[str, Any] | None:
        row = self._db().execute("SELECT state_json FROM governance_state WHERE account = ?", (account,)).fetchone()
        return None if row is None else json.loads(row[0])

    def save_governance_state(self, state: dict[str, Any], *, ts: float, account: str = "paper") -> None:
        payload = json.dumps(state, sort_keys=True)
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO governance_state (account, state_json, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT (account) DO UPDATE SET state_json = excluded.state_json,"
                " updated_at = excluded.updated_at",
                (account, payload, ts),
            )

    def add_audit(
        self,
        *,
        ts: float,
        actor: str,
        action: str,
        comment: str,
        details: dict[str, Any],
        run_id: str | None = None,
        account: str = "paper",
    ) -> int:
        with self._tx() as conn:
            cur = conn.execute(
                "INSERT INTO audit (ts, account, run_id, actor, action, comment, details_json)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (ts, account, run_id, actor, action, comment, json.dumps(details, sort_keys=True, default=str)),
            )
            return int(cur.lastrowid or 0)

    def audit_log(self, limit: int = 50) -> list[dict[str, Any]]:
        """Newest first; each row also carries ``details`` decoded from ``details_json``."""
        rows = self._query("SELECT * FROM audit ORDER BY ts DESC, id DESC LIMIT ?", (int(limit),))
        for row in rows:
            row["details"] = json.loads(row["details_json"])
        return rows

    # ------------------------------------------------------------------ operator commands

    def enqueue_command(self, command: str, *, args: dict[str, Any], comment: str, actor: str, ts: float,
                        account: str = "paper") -> int:
        with self._tx() as conn:
            cur = conn.execute(
                "INSERT INTO commands (ts, command, args_json, comment, actor, status, account)"
                " VALUES (?, ?, ?, ?, ?, 'pending', ?)",
                (ts, command, json.dumps(args, sort_keys=True, default=str), comment, actor, account),
            )
            return int(cur.lastrowid or 0)

    def pending_commands(self, account: str | None = None) -> list[dict[str, Any]]:
        """Pending commands (of one account, or of all) in the order they were enqueued; ``args``
        decoded from ``args_json``."""
        if account is not None:
            rows = self._query("SELECT * FROM commands WHERE status = 'pending' AND account = ? ORDER BY id",
                               (account,))
        else:
            rows = self._query("SELECT * FROM commands WHERE status = 'pending' ORDER BY id")
        for row in rows:
            row["args"] = json.loads(row["args_json"])
        return rows

    def mark_command(self, cmd_id: int, *, status: str, result: str, ts: float, run_id: str | None) -> bool:
        """Pending -> applied/refused; False if the command was not pending (already handled)."""
        if status not in _COMMAND_FINAL:
            raise StorageError(f"command status must be applied or refused, was {status!r}")
        with self._tx() as conn:
            cur = conn.execute(
                "UPDATE commands SET status = ?, result = ?, applied_at = ?, run_id = ?"
                " WHERE id = ? AND status = 'pending'",
                (status, result, ts, run_id, int(cmd_id)),
            )
            return cur.rowcount == 1

    def get_command(self, cmd_id: int) -> dict[str, Any] | None:
        rows = self._query("SELECT * FROM commands WHERE id = ?", (int(cmd_id),))
        if not rows:
            return None
        rows[0]["args"] = json.loads(rows[0]["args_json"])
        return rows[0]

    # ------------------------------------------------------------------ firm-wide kill-switch

    def firm_state(self) -> dict[str, Any]:
        """The firm-wide kill-switch: ``kill_switch`` (bool), ``epoch`` (counts its changes), ``actor``,
        ``comment``, ``updated_at``."""
        rows = self._query("SELECT kill_switch, epoch, actor, comment, updated_at FROM firm_state WHERE id = 1")
        if not rows:
            return {"kill_switch": False, "epoch": 0, "actor": "", "comment": "", "updated_at": None}
        row = rows[0]
        row["kill_switch"] = bool(row["kill_switch"])
        return row

    def set_firm_kill_switch(self, on: bool, *, actor: str, comment: str, ts: float) -> tuple[bool, dict[str, Any]]:
        """Turn the firm-wide kill-switch on or off and audit it (one transaction). Returns
        ``(changed, state)``; setting the state it already has changes nothing."""
        with self._tx() as conn:
            (was,) = conn.execute("SELECT kill_switch FROM firm_state WHERE id = 1").fetchone()
            changed = bool(was) != on
            if changed:
                conn.execute(
                    "UPDATE firm_state SET kill_switch = ?, epoch = epoch + 1, actor = ?, comment = ?, updated_at = ?"
                    " WHERE id = 1",
                    (1 if on else 0, actor, comment, ts),
                )
                conn.execute(
                    "INSERT INTO audit (ts, account, run_id, actor, action, comment, details_json)"
                    " VALUES (?, '*', NULL, ?, 'firm-kill-switch', ?, ?)",
                    (ts, actor, comment, json.dumps({"state": "on" if on else "off"})),
                )
        return changed, self.firm_state()

    def firm_kill(self, account: str) -> dict[str, Any] | None:
        """The record that the firm-wide kill-switch turned ``account``'s kill-switch on, or None."""
        rows = self._query("SELECT * FROM firm_kills WHERE account = ?", (account,))
        return rows[0] if rows else None

    def record_firm_kill(self, account: str, *, epoch: int, run_id: str, ts: float) -> None:
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO firm_kills (account, epoch, run_id, ts) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (account) DO UPDATE SET epoch = excluded.epoch, run_id = excluded.run_id, ts = excluded.ts",
                (account, epoch, run_id, ts),
            )

    def clear_firm_kill(self, account: str) -> None:
        with self._tx() as conn:
            conn.execute("DELETE FROM firm_kills WHERE account = ?", (account,))

    # ------------------------------------------------------------------ firm-level gross exposure

    def reserve_firm_gross(self, account: str, *, own_usd: float, add_usd: float, cap_usd: float, ts: float,
                           stale_s: float = FIRM_STALE_S) -> FirmReservation:
        """Check a new entry against the firm-wide gross cap and reserve it, in ONE write transaction.

        ``own_usd`` is this account's gross now (positions at their marks plus working entries),
        ``add_usd`` the new entry's notional. The other accounts' recorded gross is read under the
        write lock (BEGIN IMMEDIATE on SQLite, the database-wide advisory lock on PostgreSQL), so two
        runners reserving at once are serialised: the second sees the first's reservation. When
        ``other + own + add <= cap`` this account's row becomes ``own + add`` (the reservation);
        otherwise it becomes ``own`` (kept current) and the entry must not be sent.

        An other account's row counts unless its runner is dead: an account holding a writer lease
        whose heartbeat is older than ``stale_s`` is skipped (its runner crashed; the row would block
        the firm forever). An account without a lease (its runner stopped cleanly) counts with the
        gross it recorded at the stop: its open positions are real and the next start restores them.
        """
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT f.account, f.gross_usd, l.heartbeat_at FROM firm_exposure f"
                " LEFT JOIN leases l ON l.account = f.account WHERE f.account <> ?",
                (account,),
            ).fetchall()
            other = 0.0
            skipped: list[str] = []
            for acc, gross, hb in rows:
                if hb is not None and float(hb) < ts - stale_s:
                    skipped.append(acc)
                    continue
                other += float(gross)
            total = other + own_usd + add_usd
            passed = total <= cap_usd
            mine = own_usd + add_usd if passed else own_usd
            conn.execute(
                "INSERT INTO firm_exposure (account, gross_usd, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT (account) DO UPDATE SET gross_usd = excluded.gross_usd, updated_at = excluded.updated_at",
                (account, max(0.0, mine), ts),
            )
        return FirmReservation(passed=passed, other_usd=other, own_usd=own_usd, add_usd=add_usd, cap_usd=cap_usd,
                               skipped=tuple(skipped))

    def set_firm_gross(self, account: str, gross_usd: float, *, ts: float) -> None:
        """Record ``account``'s gross now (heartbeat save, clean stop: 0 when flat)."""
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO firm_exposure (account, gross_usd, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT (account) DO UPDATE SET gross_usd = excluded.gross_usd, updated_at = excluded.updated_at",
                (account, max(0.0, gross_usd), ts),
            )

    def firm_exposure(self) -> list[dict[str, Any]]:
        """Every account's recorded gross (``account``, ``gross_usd``, ``updated_at``), by account."""
        return self._query("SELECT account, gross_usd, updated_at FROM firm_exposure ORDER BY account")

    # ------------------------------------------------------------------ exports

    def tables(self) -> tuple[str, ...]:
        """Tables ``table_rows`` can export for one run."""
        return EXPORT_TABLES

    def table_rows(self, table: str, run_id: str) -> list[dict[str, Any]]:
        """Every row of ``table`` for ``run_id`` (raw columns), in insertion order."""
        _check_export_table(table)
        # ``table`` is from the whitelist above, never from user text.
        return self._query(f"SELECT * FROM {table} WHERE run_id = ? ORDER BY rowid", (run_id,))  # noqa: S608

    def iter_table(self, table: str, run_id: str, batch: int = 2_000) -> tuple[list[tuple[str, str]], Iterator[list[tuple]]]:
        """``table_rows`` in bounded memory: the (name, declared type) columns and batches of row tuples."""
        _check_export_table(table)
        columns = [(r["name"], r["type"]) for r in self._query(f"PRAGMA table_info({table})")]  # noqa: S608
        return columns, self.iter_rows(f"SELECT * FROM {table} WHERE run_id = ? ORDER BY rowid", (run_id,),  # noqa: S608
                                       batch=batch)

    def iter_rows(self, sql: str, params: tuple[Any, ...] = (), batch: int = 10_000) -> Iterator[list[tuple]]:
        """Rows of a read query as batches of tuples (a long run's tables never sit in memory whole)."""
        self.flush()
        cur = self._db().execute(sql, params)
        while True:
            rows = cur.fetchmany(batch)
            if not rows:
                return
            yield rows

    def count_rows(self, table: str, run_id: str) -> int:
        _check_export_table(table)
        return int(self._query(f"SELECT COUNT(*) AS n FROM {table} WHERE run_id = ?", (run_id,))[0]["n"])  # noqa: S608

    def record_sweep(self, sweep_id: str, results: list[dict[str, Any]],
                     journal: list[dict[str, Any]] | None = None, *, ts: float | None = None) -> None:
        """A sweep's results (``sweep_results`` rows: sweep_id, task_id, params_json, symbol,
        window_start/end, bars, closed_trades, fills, pnl_r, max_dd_r, equity_end, status, error) and
        journal rows (``sweep_journal``: sweep_id, task_id, seq, ts_ms, kind, row_json), in one transaction."""
        now = time.time() if ts is None else ts
        with self._tx() as conn:
            conn.executemany(
                "INSERT INTO sweep_results (sweep_id, task_id, params_json, symbol, window_start, window_end, bars,"
                " closed_trades, fills, pnl_r, max_dd_r, equity_end, status, error, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(sweep_id, r["task_id"], r["params_json"], r.get("symbol"), r.get("window_start"),
                  r.get("window_end"), r.get("bars"), r.get("closed_trades"), r.get("fills"), r.get("pnl_r"),
                  r.get("max_dd_r"), r.get("equity_end"), r["status"], r.get("error") or "", now) for r in results],
            )
            if journal:
                conn.executemany(
                    "INSERT INTO sweep_journal (sweep_id, task_id, seq, ts_ms, kind, row_json) VALUES (?, ?, ?, ?, ?, ?)",
                    [(sweep_id, j["task_id"], j["seq"], j.get("ts_ms"), j.get("kind"), j["row_json"]) for j in journal],
                )

    def record_export(self, run_id: str, *, kind: str, path: str, rows: int, ts: float, actor: str = "") -> int:
        """Record that ``run_id`` was exported (``report``) or archived before deletion (``archive``)."""
        if kind not in _EXPORT_KINDS:
            raise StorageError(f"export kind must be report or archive, was {kind!r}")
        with self._tx() as conn:
            cur = conn.execute(
                "INSERT INTO exports (run_id, ts, kind, path, rows, actor) VALUES (?, ?, ?, ?, ?, ?)",
                (run_id, ts, kind, str(path), int(rows), actor),
            )
            return int(cur.lastrowid or 0)

    def exports(self, run_id: str | None = None) -> list[dict[str, Any]]:
        """Export records, oldest first (all runs, or one)."""
        if run_id is None:
            return self._query("SELECT * FROM exports ORDER BY ts, id")
        return self._query("SELECT * FROM exports WHERE run_id = ? ORDER BY ts, id", (run_id,))

    # ------------------------------------------------------------------ rotation

    @staticmethod
    def _count_run_rows(conn: sqlite3.Connection, run_id: str) -> dict[str, int]:
        # ``table`` comes from RUN_TABLES, never from user text.
        return {
            table: int(conn.execute(f"SELECT COUNT(*) FROM {table} WHERE run_id = ?", (run_id,)).fetchone()[0])  # noqa: S608
            for table in RUN_TABLES
        }

    def run_row_counts(self, run_id: str) -> dict[str, int]:
        """Rows ``run_id`` owns in each of ``RUN_TABLES``."""
        self.flush()
        return self._count_run_rows(self._db(), run_id)

    def delete_runs(
        self,
        run_ids: list[str],
        *,
        expected: dict[str, dict[str, int]] | None = None,
        live_after: float | None = None,
    ) -> dict[str, dict[str, int]]:
        """Delete runs and every row they own in ONE transaction; return the rows deleted per run and table.

        Refused with ``StorageError`` (and nothing deleted) when a run is unknown, still owns an
        open position (positions belong to the account), is ``running`` with a heartbeat at or
        after ``live_after``, or when ``expected`` (row counts per run and table, e.g. those of
        an archive just written) differs from what the database holds now. Account-level tables
        (governance_state, audit, commands, exports) are never touched.
        """
        self.flush()
        deleted: dict[str, dict[str, int]] = {}
        with self._tx() as conn:
            for run_id in run_ids:
                row = conn.execute(
                    "SELECT status, COALESCE(heartbeat_at, started_at) FROM runs WHERE run_id = ?", (run_id,)
                ).fetchone()
                if row is None:
                    raise StorageError(f"run {run_id!r} is not in database {self.path}; nothing was deleted")
                if live_after is not None and row[0] == "running" and row[1] >= live_after:
                    raise StorageError(
                        f"run {run_id} is still running (fresh heartbeat); nothing was deleted: "
                        f"stop it and wait for it to finish before deleting it"
                    )
                (open_n,) = conn.execute(
                    "SELECT COUNT(*) FROM positions WHERE run_id = ? AND status = 'open'", (run_id,)
                ).fetchone()
                if open_n:
                    raise StorageError(
                        f"run {run_id} still owns {open_n} open position(s), which belong to the account and "
                        f"are never deleted; nothing was deleted: close them or let a newer run take them over first"
                    )
                counts = self._count_run_rows(conn, run_id)
                if expected is not None:
                    want = {table: int((expected.get(run_id) or {}).get(table, 0)) for table in RUN_TABLES}
                    if run_id not in expected or want != counts:
                        raise StorageError(
                            f"run {run_id}: the database holds {counts} rows but {want} were expected "
                            f"(written meanwhile?); nothing was deleted: archive the run again and retry"
                        )
                conn.execute("DELETE FROM positions WHERE run_id = ?", (run_id,))
                conn.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))  # the rest cascades
                left = {t: n for t, n in self._count_run_rows(conn, run_id).items() if n}
                if left:
                    raise StorageError(f"run {run_id}: rows left after delete {left}; nothing was deleted")
                deleted[run_id] = counts
        return deleted

    def delete_run(
        self, run_id: str, *, expected: dict[str, int] | None = None, live_after: float | None = None
    ) -> dict[str, int]:
        """Delete one run and its rows in one transaction (see ``delete_runs``); return rows per table."""
        exp = None if expected is None else {run_id: expected}
        return self.delete_runs([run_id], expected=exp, live_after=live_after)[run_id]

    def vacuum(self) -> None:
        """Flush, rebuild the file (VACUUM) and truncate the WAL, so freed pages leave the disk."""
        self.flush()
        conn = self._db()
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            conn.execute("VACUUM")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except DB_ERRORS as exc:
            raise StorageError(
                f"database {self.path}: VACUUM failed: {exc}; stop other writers (the runner) and retry"
            ) from exc

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"buffered={self._buffered}"
        return f"Storage({self.path!r}, {state})"

