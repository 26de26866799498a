"""Versioned, forward-only schema migrations for the storage DAO.

``MIGRATIONS`` is an ordered list of ``(version, description, sql)``. Each migration runs in
its own transaction together with the row that records it in ``schema_migrations``, so a
crash mid-upgrade leaves the database at the previous version, never half-way.

Portability: the SQL uses plain types (TEXT, BIGINT, DOUBLE PRECISION, INTEGER), CHECK
constraints and ``ON CONFLICT`` upserts, which PostgreSQL understands as well. The only
SQLite-specific construct is ``INTEGER PRIMARY KEY AUTOINCREMENT`` for surrogate ids (a
PostgreSQL DAO would use ``GENERATED ALWAYS AS IDENTITY``).
"""

from __future__ import annotations

import sqlite3
import time

from prod_core.storage.postgres import DB_ERRORS

__all__ = [
    "LATEST_VERSION",
    "MIGRATIONS",
    "StorageError",
    "apply_migrations",
    "current_version",
    "split_statements",
]


class StorageError(RuntimeError):
    """A storage problem. The message names the database and what the operator should do."""


# Tables whose rows belong to a run are tied to ``runs`` so that deleting an old run
# (cleanup) removes its rows. Positions are NOT cascaded: deleting a run that still owns a
# position is refused, which protects an open position carried over to the next run.
_V1_BASE = """
CREATE TABLE runs (
    run_id        TEXT PRIMARY KEY,
    mode          TEXT NOT NULL,
    feed          TEXT NOT NULL,
    started_at    DOUBLE PRECISION NOT NULL,
    ended_at      DOUBLE PRECISION,
    heartbeat_at  DOUBLE PRECISION,
    status        TEXT NOT NULL DEFAULT 'running'
                  CHECK (status IN ('running', 'stopped', 'failed', 'crashed')),
    config_hash   TEXT NOT NULL DEFAULT '',
    code_version  TEXT NOT NULL DEFAULT ''
);

CREATE TABLE feed_states (
    run_id      TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    feed        TEXT NOT NULL,
    health      INTEGER NOT NULL,
    updated_at  DOUBLE PRECISION NOT NULL,
    detail      TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (run_id, feed)
);

CREATE TABLE plans (
    run_id         TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    plan_id        TEXT NOT NULL,
    ts_ms          BIGINT NOT NULL,
    strategy       TEXT NOT NULL,
    symbol         TEXT NOT NULL,
    side           TEXT NOT NULL,
    entry          DOUBLE PRECISION NOT NULL,
    stop           DOUBLE PRECISION NOT NULL,
    target         DOUBLE PRECISION NOT NULL,
    reason         TEXT NOT NULL DEFAULT '',
    regime         INTEGER NOT NULL DEFAULT 0,
    decision       TEXT NOT NULL,
    qty            DOUBLE PRECISION NOT NULL,
    risk_usd       DOUBLE PRECISION NOT NULL,
    nominal_r_usd  DOUBLE PRECISION NOT NULL,
    status         TEXT NOT NULL
                   CHECK (status IN ('pending', 'filled', 'vetoed', 'cancelled', 'expired', 'rejected')),
    PRIMARY KEY (run_id, plan_id)
);

CREATE TABLE orders (
    run_id         TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    order_id       TEXT NOT NULL,
    plan_id        TEXT NOT NULL,
    ts_ms          BIGINT NOT NULL,
    symbol         TEXT NOT NULL,
    side           TEXT NOT NULL,
    qty            DOUBLE PRECISION NOT NULL,
    kind           TEXT NOT NULL,
    reason         TEXT NOT NULL,
    status         TEXT NOT NULL,
    reject_reason  TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (run_id, order_id)
);

CREATE TABLE fills (
    run_id     TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    fill_id    TEXT NOT NULL,
    order_id   TEXT NOT NULL,
    ts_ms      BIGINT NOT NULL,
    symbol     TEXT NOT NULL,
    side       TEXT NOT NULL,
    qty        DOUBLE PRECISION NOT NULL,
    price      DOUBLE PRECISION NOT NULL,
    fee_usd    DOUBLE PRECISION NOT NULL,
    reason     TEXT NOT NULL,
    liquidity  TEXT NOT NULL,
    PRIMARY KEY (run_id, fill_id)
);

CREATE TABLE positions (
    run_id         TEXT NOT NULL REFERENCES runs(run_id),
    position_id    TEXT PRIMARY KEY,
    plan_id        TEXT NOT NULL,
    strategy       TEXT NOT NULL,
    symbol         TEXT NOT NULL,
    side           TEXT NOT NULL,
    qty            DOUBLE PRECISION NOT NULL,
    entry_price    DOUBLE PRECISION NOT NULL,
    stop           DOUBLE PRECISION NOT NULL,
    target         DOUBLE PRECISION NOT NULL,
    ts_open_ms     BIGINT NOT NULL,
    nominal_r_usd  DOUBLE PRECISION NOT NULL,
    entry_fee_usd  DOUBLE PRECISION NOT NULL,
    last_price     DOUBLE PRECISION NOT NULL,
    status         TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
    ts_close_ms    BIGINT,
    exit_price     DOUBLE PRECISION,
    exit_reason    TEXT,
    pnl_usd        DOUBLE PRECISION,
    trade_r        DOUBLE PRECISION
);

CREATE TABLE equity (
    run_id              TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    ts_ms               BIGINT NOT NULL,
    equity_usd          DOUBLE PRECISION NOT NULL,
    cash_usd            DOUBLE PRECISION NOT NULL,
    pnl_cum_r           DOUBLE PRECISION NOT NULL,
    dd_state            DOUBLE PRECISION NOT NULL,
    max_dd_r            DOUBLE PRECISION NOT NULL,
    exposure_gross_pct  DOUBLE PRECISION NOT NULL,
    exposure_net_pct    DOUBLE PRECISION NOT NULL
);

CREATE TABLE governance_state (
    account     TEXT PRIMARY KEY,
    state_json  TEXT NOT NULL,
    updated_at  DOUBLE PRECISION NOT NULL
);

CREATE TABLE audit (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    ts            DOUBLE PRECISION NOT NULL,
    account       TEXT NOT NULL,
    run_id        TEXT,
    actor         TEXT NOT NULL,
    action        TEXT NOT NULL,
    comment       TEXT NOT NULL DEFAULT '',
    details_json  TEXT NOT NULL DEFAULT '{}'
);

CREATE TABLE commands (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    ts          DOUBLE PRECISION NOT NULL,
    command     TEXT NOT NULL,
    args_json   TEXT NOT NULL DEFAULT '{}',
    comment     TEXT NOT NULL DEFAULT '',
    actor       TEXT NOT NULL,
    status      TEXT NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'applied', 'refused')),
    result      TEXT NOT NULL DEFAULT '',
    applied_at  DOUBLE PRECISION,
    run_id      TEXT
);

CREATE TABLE events (
    run_id       TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    ts           DOUBLE PRECISION NOT NULL,
    kind         TEXT NOT NULL,
    severity     TEXT NOT NULL,
    component    TEXT NOT NULL,
    message      TEXT NOT NULL,
    fields_json  TEXT NOT NULL DEFAULT '{}'
);
"""

# v2: the command line a run was started with, and the indexes the read paths use
# (per-run exports, account-wide open positions, pending plans/commands, audit by time).
_V2_ARGS_AND_INDEXES = """
ALTER TABLE runs ADD COLUMN args TEXT NOT NULL DEFAULT '';
CREATE INDEX idx_runs_status ON runs (status);
CREATE INDEX idx_plans_status ON plans (status);
CREATE INDEX idx_orders_run_ts ON orders (run_id, ts_ms);
CREATE INDEX idx_fills_run_ts ON fills (run_id, ts_ms);
CREATE INDEX idx_positions_status ON positions (status);
CREATE INDEX idx_positions_run ON positions (run_id);
CREATE INDEX idx_equity_run_ts ON equity (run_id, ts_ms);
CREATE INDEX idx_events_run_ts ON events (run_id, ts);
CREATE INDEX idx_audit_ts ON audit (ts);
CREATE INDEX idx_commands_status ON commands (status, id);
"""

# v3: where each run's rows were exported (``scripts/export_run.py``: kind ``report``) or
# archived before rotation deleted them (``scripts/vacuum_and_rotate.py``: kind ``archive``).
# No foreign key on purpose: the record outlives the rotated run and says where its rows went.
_V3_EXPORTS = """
CREATE TABLE exports (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id    TEXT NOT NULL,
    ts        DOUBLE PRECISION NOT NULL,
    kind      TEXT NOT NULL CHECK (kind IN ('report', 'archive')),
    path      TEXT NOT NULL,
    rows      INTEGER NOT NULL DEFAULT 0,
    actor     TEXT NOT NULL DEFAULT ''
);
CREATE INDEX idx_exports_run ON exports (run_id, ts);
"""

# v4: the account is its journal.
# - journal: every fill (with its consequences) and every governance transition of an account,
#   sequence-numbered; never deleted with a run (rotation keeps it), so the account can always
#   be rebuilt. fill_id is unique for the life of the database.
# - leases: one writer per account (run id, pid, host, heartbeat).
# - positions gains the account it belongs to and a 'void' status (a saved position the journal
#   does not know, voided by reconciliation instead of being deleted).
_V4_JOURNAL = """
CREATE TABLE journal (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    account      TEXT NOT NULL,
    run_id       TEXT NOT NULL,
    ts_ms        BIGINT NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('open', 'fill', 'governance')),
    event        TEXT NOT NULL,
    fill_id      TEXT UNIQUE,
    position_id  TEXT,
    symbol       TEXT,
    side         TEXT,
    qty          DOUBLE PRECISION,
    price        DOUBLE PRECISION,
    fee_usd      DOUBLE PRECISION,
    reason       TEXT,
    body_json    TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX idx_journal_account ON journal (account, seq);

CREATE TABLE leases (
    account       TEXT PRIMARY KEY,
    run_id        TEXT NOT NULL,
    pid           INTEGER NOT NULL,
    host          TEXT NOT NULL,
    acquired_at   DOUBLE PRECISION NOT NULL,
    heartbeat_at  DOUBLE PRECISION NOT NULL
);

CREATE TABLE positions_v4 (
    run_id         TEXT NOT NULL REFERENCES runs(run_id),
    account        TEXT NOT NULL DEFAULT 'paper',
    position_id    TEXT PRIMARY KEY,
    plan_id        TEXT NOT NULL,
    strategy       TEXT NOT NULL,
    symbol         TEXT NOT NULL,
    side           TEXT NOT NULL,
    qty            DOUBLE PRECISION NOT NULL,
    entry_price    DOUBLE PRECISION NOT NULL,
    stop           DOUBLE PRECISION NOT NULL,
    target         DOUBLE PRECISION NOT NULL,
    ts_open_ms     BIGINT NOT NULL,
    nominal_r_usd  DOUBLE PRECISION NOT NULL,
    entry_fee_usd  DOUBLE PRECISION NOT NULL,
    last_price     DOUBLE PRECISION NOT NULL,
    status         TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed', 'void')),
    ts_close_ms    BIGINT,
    exit_price     DOUBLE PRECISION,
    exit_reason    TEXT,
    pnl_usd        DOUBLE PRECISION,
    trade_r        DOUBLE PRECISION
);
INSERT INTO positions_v4 (run_id, account, position_id, plan_id, strategy, symbol, side, qty, entry_price, stop,
    target, ts_open_ms, nominal_r_usd, entry_fee_usd, last_price, status, ts_close_ms, exit_price, exit_reason,
    pnl_usd, trade_r)
SELECT p.run_id,
       CASE WHEN r.feed = 'replay' THEN 'replay:' || p.run_id ELSE 'paper' END,
       p.position_id, p.plan_id, p.strategy, p.symbol, p.side, p.qty, p.entry_price, p.stop, p.target, p.ts_open_ms,
       p.nominal_r_usd, p.entry_fee_usd, p.last_price, p.status, p.ts_close_ms, p.exit_price, p.exit_reason,
       p.pnl_usd, p.trade_r
FROM positions p LEFT JOIN runs r ON r.run_id = p.run_id;
DROP TABLE positions;
ALTER TABLE positions_v4 RENAME TO positions;
CREATE INDEX idx_positions_status ON positions (status);
CREATE INDEX idx_positions_run ON positions (run_id);
CREATE INDEX idx_positions_account ON positions (account, status);
"""

# v5: the recorded session of a run: every closed bar it received, in arrival order, and the
# control events (start state, feed health, operator commands, reloads, day rolls) at the bar
# they took effect, so that the session can be replayed (``--feed replay --data
# reports/run_<id>/bars.parquet``). Rows belong to the run and leave with it.
_V5_SESSION = """
CREATE TABLE session_bars (
    run_id   TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    seq      INTEGER NOT NULL,
    symbol   TEXT NOT NULL,
    ts_ms    BIGINT NOT NULL,
    open     DOUBLE PRECISION,  -- NULL: the bar arrived with NaN (recorded as received)
    high     DOUBLE PRECISION,
    low      DOUBLE PRECISION,
    close    DOUBLE PRECISION,
    volume   DOUBLE PRECISION,
    PRIMARY KEY (run_id, seq)
);

CREATE TABLE session_events (
    run_id        TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    seq           INTEGER NOT NULL,
    after_bar     INTEGER NOT NULL,
    kind          TEXT NOT NULL,
    payload_json  TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (run_id, seq)
);
"""

# v6: margined perpetuals and funding.
# - journal.kind gains 'funding' (a funding payment of an open perp position; fee_usd is the
#   amount paid, negative when received); fill events gain 'increase' and 'reduce' (partial
#   fills). The table is rebuilt to widen its CHECK; seq values are kept.
# - positions gain the margin terms (leverage 0 = fully funded, as spot and every position
#   opened before v6), the funding paid so far, the last funding time settled and the net pnl
#   of partial exits.
# - orders gain what was filled and when the order ended; fills the reference price their
#   slippage is measured from.
_V6_MARGIN = """
CREATE TABLE journal_v6 (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    account      TEXT NOT NULL,
    run_id       TEXT NOT NULL,
    ts_ms        BIGINT NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('open', 'fill', 'funding', 'governance')),
    event        TEXT NOT NULL,
    fill_id      TEXT UNIQUE,
    position_id  TEXT,
    symbol       TEXT,
    side         TEXT,
    qty          DOUBLE PRECISION,
    price        DOUBLE PRECISION,
    fee_usd      DOUBLE PRECISION,
    reason       TEXT,
    body_json    TEXT NOT NULL DEFAULT '{}'
);
INSERT INTO journal_v6 (seq, account, run_id, ts_ms, kind, event, fill_id, position_id, symbol, side, qty, price,
    fee_usd, reason, body_json)
SELECT seq, account, run_id, ts_ms, kind, event, fill_id, position_id, symbol, side, qty, price, fee_usd, reason,
       body_json
FROM journal;
DROP TABLE journal;
ALTER TABLE journal_v6 RENAME TO journal;
CREATE INDEX idx_journal_account ON journal (account, seq);
ALTER TABLE positions ADD COLUMN leverage DOUBLE PRECISION NOT NULL DEFAULT 0;
ALTER TABLE positions ADD COLUMN maint_margin_rate DOUBLE PRECISION NOT NULL DEFAULT 0;
ALTER TABLE positions ADD COLUMN funding_usd DOUBLE PRECISION NOT NULL DEFAULT 0;
ALTER TABLE positions ADD COLUMN funding_ts_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE positions ADD COLUMN realized_usd DOUBLE PRECISION NOT NULL DEFAULT 0;
ALTER TABLE orders ADD COLUMN filled_qty DOUBLE PRECISION NOT NULL DEFAULT 0;
ALTER TABLE orders ADD COLUMN done_ms BIGINT;
ALTER TABLE fills ADD COLUMN ref_price DOUBLE PRECISION;
"""

# v7: many accounts on one database.
# - commands.account: the account a command is for (a runner applies only its own); the
#   commands queued before v7 were all for the one account there was, 'paper'.
# - runs.account: the account a run traded; replays trade their own 'replay:<run_id>'.
# - firm_state: the firm-wide kill-switch (one row), with who set it, why and when; epoch
#   counts its changes so that a runner notices each one once.
# - firm_kills: the accounts whose kill-switch the firm-wide one turned on (lifted with it,
#   unlike a kill-switch the account's own operator command or the drawdown turned on).
_V7_ACCOUNTS = """
ALTER TABLE commands ADD COLUMN account TEXT NOT NULL DEFAULT 'paper';
CREATE INDEX idx_commands_account ON commands (account, status, id);
ALTER TABLE runs ADD COLUMN account TEXT NOT NULL DEFAULT 'paper';
UPDATE runs SET account = 'replay:' || run_id WHERE feed = 'replay';
CREATE INDEX idx_runs_account ON runs (account, started_at);
CREATE TABLE firm_state (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    kill_switch  INTEGER NOT NULL DEFAULT 0 CHECK (kill_switch IN (0, 1)),
    epoch        INTEGER NOT NULL DEFAULT 0,
    actor        TEXT NOT NULL DEFAULT '',
    comment      TEXT NOT NULL DEFAULT '',
    updated_at   DOUBLE PRECISION
);
INSERT INTO firm_state (id, kill_switch, epoch) VALUES (1, 0, 0);
CREATE TABLE firm_kills (
    account  TEXT PRIMARY KEY,
    epoch    INTEGER NOT NULL,
    run_id   TEXT,
    ts       DOUBLE PRECISION NOT NULL
);
"""

# v8: a firm-level gross exposure cap across accounts.
# - firm_exposure: each paper account's last recorded gross notional (open positions at their
#   marks plus what working entries still want), in USD. An entry's reservation reads the other
#   accounts' rows and writes its own in ONE write transaction (the database-wide write lock),
#   so two runners cannot both pass the cap; each runner rewrites its row at every heartbeat
#   save and at a clean stop (0 when flat).
_V8_FIRM_EXPOSURE = """
CREATE TABLE firm_exposure (
    account     TEXT PRIMARY KEY,
    gross_usd   DOUBLE PRECISION NOT NULL CHECK (gross_usd >= 0),
    updated_at  DOUBLE PRECISION NOT NULL
);
"""

# v9: replay sweeps written to the database (``cli sweep --db``).
# - sweep_results: one row per replay of a sweep: its parameters (JSON), symbol (NULL: every
#   file), date window (UTC ISO dates, NULL: the whole data), the figures and the status.
# - sweep_journal: with --journal, every replay's journal rows, each as JSON (its kind and ts_ms
#   as columns to filter on). Not tied to ``runs``: a sweep's replays ran in scratch databases.
_V9_SWEEP = """
CREATE TABLE sweep_results (
    sweep_id       TEXT NOT NULL,
    task_id        TEXT NOT NULL,
    params_json    TEXT NOT NULL,
    symbol         TEXT,
    window_start   TEXT,
    window_end     TEXT,
    bars           INTEGER,
    closed_trades  INTEGER,
    fills          INTEGER,
    pnl_r          DOUBLE PRECISION,
    max_dd_r       DOUBLE PRECISION,
    equity_end     DOUBLE PRECISION,
    status         TEXT NOT NULL,
    error          TEXT NOT NULL DEFAULT '',
    created_at     DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (sweep_id, task_id)
);
CREATE TABLE sweep_journal (
    sweep_id  TEXT NOT NULL,
    task_id   TEXT NOT NULL,
    seq       INTEGER NOT NULL,
    ts_ms     BIGINT,
    kind      TEXT,
    row_json  TEXT NOT NULL,
    PRIMARY KEY (sweep_id, task_id, seq)
);
"""

MIGRATIONS: list[tuple[int, str, str]] = [
    (1, "base schema: runs, feeds, plans, orders, fills, positions, equity, governance, audit, commands, events", _V1_BASE),
    (2, "runs.args column and read-path indexes", _V2_ARGS_AND_INDEXES),
    (3, "exports table: report exports and rotation archives of runs", _V3_EXPORTS),
    (4, "account journal, writer leases, positions.account and the void status", _V4_JOURNAL),
    (5, "recorded session: bars in arrival order and control events", _V5_SESSION),
    (6, "margined perps: journal funding entries, position margin/funding/partial-exit columns", _V6_MARGIN),
    (7, "many accounts: commands.account, runs.account, firm-wide kill-switch state", _V7_ACCOUNTS),
    (8, "firm_exposure: each account's recorded gross, reserved under the write lock", _V8_FIRM_EXPOSURE),
    (9, "sweep_results and sweep_journal: the replays of a parameter sweep (cli sweep --db)", _V9_SWEEP),
]

LATEST_VERSION: int = MIGRATIONS[-1][0]

_SCHEMA_MIGRATIONS_DDL = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version      INTEGER PRIMARY KEY,
    description  TEXT NOT NULL,
    applied_at   DOUBLE PRECISION NOT NULL
)
"""


def _check_order(migrations: list[tuple[int, str, str]]) -> None:
    versions = [v for v, _, _ in migrations]
    if versions != sorted(set(versions)) or (versions and versions[0] < 1):
        raise StorageError(f"migration versions must be unique, increasing and >= 1, were {versions}")


_check_order(MIGRATIONS)


def split_statements(sql: str) -> list[str]:
    """Split a migration script into single statements (semicolons inside strings are safe)."""
    statements: list[str] = []
    buf = ""
    for line in sql.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            stmt = buf.strip()
            if stmt.rstrip(";").strip():
                statements.append(stmt)
            buf = ""
    if buf.strip():
        raise StorageError(f"migration SQL ends with an incomplete statement: {buf.strip()[:80]!r}")
    return statements


def current_version(conn: sqlite3.Connection) -> int:
    """Highest applied migration version, 0 for a database without migrations."""
    row = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
    ).fetchone()
    if row is None:
        return 0
    (version,) = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
    return int(version or 0)


def apply_migrations(
    conn: sqlite3.Connection,
    migrations: list[tuple[int, str, str]] | None = None,
    *,
    db_label: str = "database",
    now: float | None = None,
) -> list[int]:
    """Bring ``conn`` up to the last of ``migrations``; return the versions applied now.

    ``conn`` must be in autocommit mode (``isolation_level=None``): this function issues its
    own ``BEGIN IMMEDIATE`` / ``COMMIT`` per migration. Another process may migrate the same
    file concurrently: each version is re-checked under the write lock, so it runs once.
    A database newer than the code is refused (forward-only: never downgrade).
    """
    migrations = MIGRATIONS if migrations is None else migrations
    _check_order(migrations)
    latest = migrations[-1][0] if migrations else 0
    found = current_version(conn)
    if found > latest:
        raise StorageError(
            f"{db_label} is at schema version {found} but this code only knows up to version "
            f"{latest}: upgrade crupto to a version that knows schema {found}, or point DB at "
            f"another file (migrations are forward-only, never downgrade)"
        )
    if found == latest:
        return []
    conn.execute(_SCHEMA_MIGRATIONS_DDL)
    applied: list[int] = []
    for version, description, sql in migrations:
        if version <= found:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute("SELECT 1 FROM schema_migrations WHERE version = ?", (version,)).fetchone()
            if row is None:
                for stmt in split_statements(sql):
                    conn.execute(stmt)
                conn.execute(
                    "INSERT INTO schema_migrations (version, description, applied_at) VALUES (?, ?, ?)",
                    (version, description, time.time() if now is None else now),
                )
                applied.append(version)
            conn.execute("COMMIT")
        except BaseException as exc:
            conn.execute("ROLLBACK")
            if isinstance(exc, DB_ERRORS):
                raise StorageError(
                    f"{db_label}: migration {version} ({description}) failed and was rolled back: {exc}; "
                    f"the database is still at version {current_version(conn)}"
                ) from exc
            raise
    return applied
