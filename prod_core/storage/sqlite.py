"""SQLite DAO: buffered hot-path writes, durable fills, account-level governance state.

Threading: one ``Storage`` is used from ONE thread (the runner's). Other processes (the
CLI, export scripts) open their own ``Storage`` on the same file; WAL mode makes readers
and the single writer coexist, and ``busy_timeout`` makes short write overlaps wait.

Write paths:
- buffered (hot path): ``add_plan``, ``update_plan_status``, ``add_order``, ``add_equity``,
  ``add_event``, ``upsert_position`` only append a tuple to a list; ``flush`` writes every
  buffer in one transaction, ``maybe_flush`` does so every ``flush_rows`` rows or
  ``flush_interval_s`` seconds.
- immediate: everything else commits before returning. ``record_fill`` and
  ``close_position`` commit the pending buffers together with their own row, so a fill is
  durable before it is reported anywhere else and the buffered rows that led to it are too.
Reads flush first, so a process always sees its own writes.

Failed flush: the transaction is rolled back, the buffers are kept (nothing is lost
silently) and ``StorageError`` is raised; the next flush retries.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from prod_core.domain.types import Fill, Order, Position
from prod_core.storage.migrations import MIGRATIONS, StorageError, apply_migrations, current_version

__all__ = ["EXPORT_TABLES", "RUN_TABLES", "Storage", "StorageError", "resolve_sqlite_path"]

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
)

# Tables whose rows belong to ONE run and leave the database with it (``delete_runs``).
# governance_state, audit, commands and exports are account-level and never deleted.
RUN_TABLES: tuple[str, ...] = ("runs", "feed_states", "plans", "orders", "fills", "positions", "equity", "events")

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
    " reject_reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (run_id, order_id) DO UPDATE SET status = excluded.status,"
    " reject_reason = excluded.reject_reason, qty = excluded.qty"
)
# The position row belongs to the run that currently manages it (a restart carries it over).
# A closed position is never reopened by a late upsert.
_SQL_UPSERT_POSITION = (
    "INSERT INTO positions (run_id, position_id, plan_id, strategy, symbol, side, qty, entry_price,"
    " stop, target, ts_open_ms, nominal_r_usd, entry_fee_usd, last_price, status)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'open')"
    " ON CONFLICT (position_id) DO UPDATE SET run_id = excluded.run_id, qty = excluded.qty,"
    " entry_price = excluded.entry_price, stop = excluded.stop, target = excluded.target,"
    " nominal_r_usd = excluded.nominal_r_usd, entry_fee_usd = excluded.entry_fee_usd,"
    " last_price = excluded.last_price"
    " WHERE positions.status = 'open'"
)
_SQL_INSERT_EQUITY = (
    "INSERT INTO equity (run_id, ts_ms, equity_usd, cash_usd, pnl_cum_r, dd_state, max_dd_r,"
    " exposure_gross_pct, exposure_net_pct) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SQL_INSERT_EVENT = (
    "INSERT INTO events (run_id, ts, kind, severity, component, message, fields_json)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_SQL_INSERT_FILL = (
    "INSERT INTO fills (run_id, fill_id, order_id, ts_ms, symbol, side, qty, price, fee_usd, reason,"
    " liquidity) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _val(x: Any) -> Any:
    """Enum -> its ``.value``; anything else unchanged."""
    return getattr(x, "value", x)


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
                f"DB={_redact(raw)}: only sqlite is implemented yet ({scheme} is planned); "
                f"use a file path such as storage/crupto.db or sqlite:///storage/crupto.db"
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

        self.path = check_db_path(path_or_url, create=create)
        self.flush_rows = flush_rows
        self.flush_interval_s = flush_interval_s
        self._closed = True
        self._conn = self._open(self.path, create=create)
        self._closed = False
        # Hot-path buffers: lists of parameter tuples; positions keep only their latest state.
        self._plans: list[tuple[Any, ...]] = []
        self._plan_updates: list[tuple[str, str, str]] = []
        self._orders: list[tuple[Any, ...]] = []
        self._positions: dict[str, tuple[Any, ...]] = {}
        self._equity: list[tuple[Any, ...]] = []
        self._events: list[tuple[Any, ...]] = []
        self._buffered = 0
        self._last_flush_s: float | None = None

    # ------------------------------------------------------------------ open / close

    def _open(self, path: str, *, create: bool = True) -> sqlite3.Connection:
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

    def close(self) -> None:
        """Flush the buffers and close the connection. Safe to call twice."""
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self._closed = True
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
        return self._conn

    # ------------------------------------------------------------------ transactions

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE: take the write lock up front, wait busy_timeout)."""
        conn = self._db()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StorageError(f"database {self.path}: cannot start a write transaction: {exc}") from exc
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise StorageError(f"database {self.path}: write failed and was rolled back: {exc}") from exc
            raise

    def _write_buffers(self, conn: sqlite3.Connection) -> None:
        # Order matters: a plan insert precedes its status updates; orders before fills.
        if self._plans:
            conn.executemany(_SQL_INSERT_PLAN, self._plans)
        if self._plan_updates:
            conn.executemany(_SQL_UPDATE_PLAN, self._plan_updates)
        if self._orders:
            conn.executemany(_SQL_UPSERT_ORDER, self._orders)
        if self._positions:
            conn.executemany(_SQL_UPSERT_POSITION, self._positions.values())
        if self._equity:
            conn.executemany(_SQL_INSERT_EQUITY, self._equity)
        if self._events:
            conn.executemany(_SQL_INSERT_EVENT, self._events)

    def _clear_buffers(self) -> None:
        self._plans = []
        self._plan_updates = []
        self._orders = []
        self._positions = {}
        self._equity = []
        self._events = []
        self._buffered = 0

    @property
    def buffered_rows(self) -> int:
        """Rows waiting in the buffers (a position updated twice counts twice)."""
        return self._buffered

    def flush(self) -> None:
        """Write every buffered row in ONE transaction. No-op when nothing is buffered."""
        if self._buffered:
            with self._tx() as conn:
                self._write_buffers(conn)
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
    ) -> None:
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO runs (run_id, mode, feed, started_at, heartbeat_at, status, config_hash,"
                " code_version, args) VALUES (?, ?, ?, ?, ?, 'running', ?, ?, ?)",
                (run_id, mode, feed, ts, ts, config_hash, code_version, args),
            )

    def heartbeat(self, run_id: str, ts: float) -> None:
        with self._tx() as conn:
            conn.execute("UPDATE runs SET heartbeat_at = ? WHERE run_id = ?", (ts, run_id))

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

    def list_runs(self, limit: int = 10) -> list[dict[str, Any]]:
        """Newest first."""
        return self._query("SELECT * FROM runs ORDER BY started_at DESC, rowid DESC LIMIT ?", (int(limit),))

    def mark_stale_runs(self, now_s: float, max_age_s: float) -> list[str]:
        """Runs still ``running`` with no heartbeat for ``max_age_s`` become ``crashed``; return their ids."""
        cutoff = now_s - max_age_s
        with self._tx() as conn:
            stale = [
                r[0]
                for r in conn.execute(
                    "SELECT run_id FROM runs WHERE status = 'running'"
                    " AND COALESCE(heartbeat_at, started_at) < ? ORDER BY started_at",
                    (cutoff,),
                )
            ]
            if stale:
                conn.executemany(
                    "UPDATE runs SET status = 'crashed', ended_at = COALESCE(heartbeat_at, started_at)"
                    " WHERE run_id = ? AND status = 'running'",
                    [(r,) for r in stale],
                )
        return stale

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
        self._orders.append(
            (
                run_id, order.order_id, order.plan_id, order.ts_ms, order.symbol, _val(order.side),
                order.qty, order.kind, _val(order.reason), _val(order.status), order.reject_reason,
            )
        )  # fmt: skip
        self._buffered += 1

    def orders(self, run_id: str) -> list[dict[str, Any]]:
        return self._query("SELECT * FROM orders WHERE run_id = ? ORDER BY ts_ms, rowid", (run_id,))

    def record_fill(self, run_id: str, fill: Fill) -> None:
        """Commit the pending buffers and the fill in one transaction before returning."""
        with self._tx() as conn:
            self._write_buffers(conn)
            conn.execute(
                _SQL_INSERT_FILL,
                (
                    run_id, fill.fill_id, fill.order_id, fill.ts_ms, fill.symbol, _val(fill.side),
                    fill.qty, fill.price, fill.fee_usd, _val(fill.reason), fill.liquidity,
                ),
            )  # fmt: skip
        self._clear_buffers()

    def fills(self, run_id: str | None = None) -> list[dict[str, Any]]:
        if run_id is None:
            return self._query("SELECT * FROM fills ORDER BY ts_ms, rowid")
        return self._query("SELECT * FROM fills WHERE run_id = ? ORDER BY ts_ms, rowid", (run_id,))

    # ------------------------------------------------------------------ positions

    def upsert_position(self, run_id: str, pos: Position) -> None:
        """Buffer the position's current state (only the latest state per position is written)."""
        self._positions[pos.position_id] = (
            run_id, pos.position_id, pos.plan_id, pos.strategy, pos.symbol, _val(pos.side), pos.qty,
            pos.entry_price, pos.stop, pos.target, pos.ts_open_ms, pos.nominal_r_usd, pos.entry_fee_usd,
            pos.last_price,
        )  # fmt: skip
        self._buffered += 1

    def close_position(
        self,
        run_id: str,
        position_id: str,
        *,
        ts_close_ms: int,
        exit_price: float,
        exit_reason: Any,
        pnl_usd: float,
        trade_r: float,
    ) -> bool:
        """Close an open position durably (with the pending buffers); False if it was not open."""
        with self._tx() as conn:
            self._write_buffers(conn)
            cur = conn.execute(
                "UPDATE positions SET run_id = ?, status = 'closed', ts_close_ms = ?, exit_price = ?,"
                " last_price = ?, exit_reason = ?, pnl_usd = ?, trade_r = ?"
                " WHERE position_id = ? AND status = 'open'",
                (run_id, ts_close_ms, exit_price, exit_price, _val(exit_reason), pnl_usd, trade_r, position_id),
            )
            closed = cur.rowcount == 1
        self._clear_buffers()
        return closed

    def open_positions(self) -> list[dict[str, Any]]:
        """Open positions of the whole account (every run)."""
        return self._query("SELECT * FROM positions WHERE status = 'open' ORDER BY ts_open_ms, rowid")

    def closed_trades(self, run_id: str | None = None) -> list[dict[str, Any]]:
        if run_id is None:
            return self._query("SELECT * FROM positions WHERE status = 'closed' ORDER BY ts_close_ms, rowid")
        return self._query(
            "SELECT * FROM positions WHERE status = 'closed' AND run_id = ? ORDER BY ts_close_ms, rowid",
            (run_id,),
        )

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

    def enqueue_command(self, command: str, *, args: dict[str, Any], comment: str, actor: str, ts: float) -> int:
        with self._tx() as conn:
            cur = conn.execute(
                "INSERT INTO commands (ts, command, args_json, comment, actor, status) VALUES (?, ?, ?, ?, ?, 'pending')",
                (ts, command, json.dumps(args, sort_keys=True, default=str), comment, actor),
            )
            return int(cur.lastrowid or 0)

    def pending_commands(self) -> list[dict[str, Any]]:
        """Pending commands in the order they were enqueued; ``args`` decoded from ``args_json``."""
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

    # ------------------------------------------------------------------ exports

    def tables(self) -> tuple[str, ...]:
        """Tables ``table_rows`` can export for one run."""
        return EXPORT_TABLES

    def table_rows(self, table: str, run_id: str) -> list[dict[str, Any]]:
        """Every row of ``table`` for ``run_id`` (raw columns), in insertion order."""
        if table not in EXPORT_TABLES:
            raise StorageError(f"table {table!r} cannot be exported; choose one of {', '.join(EXPORT_TABLES)}")
        # ``table`` is from the whitelist above, never from user text.
        return self._query(f"SELECT * FROM {table} WHERE run_id = ? ORDER BY rowid", (run_id,))  # noqa: S608

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
        except sqlite3.Error as exc:
            raise StorageError(
                f"database {self.path}: VACUUM failed: {exc}; stop other writers (the runner) and retry"
            ) from exc

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"buffered={self._buffered}"
        return f"Storage({self.path!r}, {state})"

