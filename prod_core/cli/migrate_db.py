"""`migrate-db`: move a crupto database from a SQLite file to PostgreSQL, verified.

    python -m prod_core.cli migrate-db --from sqlite:storage/crupto.db --to postgresql://user@host/crupto

- The source is only read: one read-only SQLite connection, one snapshot (a read transaction)
  for every table. It must be a crupto database at this code's schema version, with no runner
  holding a live lease on any of its accounts, and every account in it must reconcile (its
  saved state is the fold of its journal); otherwise nothing is done (exit 2).
- The target is opened with ``Storage(url)`` (the same migrations create the schema) and must
  hold no crupto rows (nor tables of another application): it is never merged into.
- Every table is copied in insertion order (``ORDER BY rowid``), with its ids (journal seq,
  audit, commands and exports ids), by COPY in batches, inside ONE transaction on the target
  that holds its write lock; the id sequences are then moved past the copied ids so new rows
  continue after them.
- Before that transaction commits: the row count of every table is compared with the source,
  and every account is reconciled on the target (the fold of the target's journal against the
  target's saved state and against the source's saved state). Any difference rolls the whole
  transaction back: the target keeps its empty schema, the command exits 1 naming the table or
  the account. Exit 0 prints ``reconciled: AGREE`` per account.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from prod_core.account import compare, fold
from prod_core.cli.common import liveness
from prod_core.storage import LATEST_VERSION, Storage, StorageError, resolve_sqlite_path
from prod_core.storage.migrations import current_version
from prod_core.storage.postgres import DB_ERRORS, PgConnection, is_postgres_url, redact_url
from prod_core.telemetry.progress import progress

# Tables that are not data: the schema bookkeeping of each side (the target has its own).
_SKIP = {"schema_migrations", "sqlite_sequence"}
# Referenced by foreign keys (PostgreSQL checks them at once): copied first.
_FIRST = ("runs",)
# firm_state as a fresh schema creates it: the one row that does not make a database "used".
_FRESH_FIRM = {"id": 1, "kill_switch": 0, "epoch": 0, "actor": "", "comment": "", "updated_at": None}


class Refused(Exception):
    """The migration cannot start; nothing was written (exit 2)."""


class Mismatch(Exception):
    """The copy does not verify; the target transaction is rolled back (exit 1)."""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "migrate-db", help="copy a SQLite database (every account and its history) to PostgreSQL, verified",
        description="Copy every table of a crupto SQLite database into an empty PostgreSQL database in one "
                    "transaction (ids kept, sequences reset), then compare row counts and reconcile every "
                    "account on both sides before committing. Exit 0: migrated and AGREE; 1: verification "
                    "failed (rolled back); 2: refused (nothing written).")
    p.add_argument("--from", dest="source", required=True, metavar="SQLITE",
                   help="the SQLite database: sqlite:PATH, sqlite:///PATH or a plain path")
    p.add_argument("--to", dest="target", required=True, metavar="URL",
                   help="the PostgreSQL database: postgresql://user:password@host:port/db (empty or fresh)")
    p.add_argument("--batch", type=int, default=5000, help="rows read from the source per batch (default 5000)")
    p.set_defaults(func=run)


# ------------------------------------------------------------------ helpers


def _source_path(value: str) -> str:
    raw = value.strip()
    if is_postgres_url(raw):
        raise Refused(f"--from {redact_url(raw)} is a PostgreSQL URL: migrate-db copies FROM a SQLite file "
                      f"(--from sqlite:storage/crupto.db) TO PostgreSQL (--to postgresql://...)")
    if raw.lower().startswith("sqlite:") and not raw.lower().startswith("sqlite://"):
        raw = raw[len("sqlite:"):]
    try:
        return resolve_sqlite_path(raw)
    except StorageError as exc:
        raise Refused(f"--from {value}: {exc}") from None


def _rows(conn: Any, sql: str, params: tuple = ()) -> list[dict[str, Any]]:
    """A query on a sqlite3 or PgConnection connection, as dicts."""
    cur = conn.execute(sql, params)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def _tables(conn: Any) -> list[str]:
    names = [r["name"] for r in _rows(conn, "SELECT name FROM sqlite_master WHERE type = 'table'")]
    names = sorted(n for n in names if n not in _SKIP)
    return [t for t in _FIRST if t in names] + [t for t in names if t not in _FIRST]


def _columns(conn: Any, table: str) -> list[str]:
    return [r["name"] for r in _rows(conn, f"PRAGMA table_info({table})")]


def _count(conn: Any, table: str) -> int:
    return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])  # noqa: S608 - catalog names


def _accounts(conn: Any) -> list[str]:
    return [r["account"] for r in _rows(
        conn, "SELECT account FROM journal UNION SELECT account FROM governance_state ORDER BY account")]


def _account_side(conn: Any, account: str) -> tuple[list[dict[str, Any]], dict[str, Any] | None, list[dict[str, Any]]]:
    """(journal entries, saved state, open position rows) of one account, as ``Storage`` reads them."""
    entries = _rows(conn, "SELECT * FROM journal WHERE account = ? ORDER BY seq", (account,))
    for row in entries:
        row["body"] = json.loads(row.pop("body_json"))
    saved = _rows(conn, "SELECT state_json FROM governance_state WHERE account = ?", (account,))
    rows = _rows(conn, "SELECT * FROM positions WHERE status = 'open' AND account = ? ORDER BY ts_open_ms, rowid",
                 (account,))
    return entries, (json.loads(saved[0]["state_json"]) if saved else None), rows


def _open_source(path: str) -> sqlite3.Connection:
    file = Path(path).expanduser()
    if path == ":memory:" or not file.exists():
        raise Refused(f"--from {path}: the source database does not exist; pass the SQLite file the runner "
                      f"used (e.g. --from sqlite:storage/crupto.db)")
    if not file.is_file():
        raise Refused(f"--from {path} is not a file; pass the SQLite database file (e.g. storage/crupto.db)")
    with file.open("rb") as fh:
        header = fh.read(16)
    if header != b"SQLite format 3\x00":
        raise Refused(f"--from {path} is not an SQLite database (its first bytes are not 'SQLite format 3'), "
                      f"so it is not a crupto database; pass the runner's database file")
    try:
        conn = sqlite3.connect(file.resolve().as_uri() + "?mode=ro", uri=True, isolation_level=None,
                               check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 5000")
        tables = set(_tables(conn))
        version = current_version(conn)
    except sqlite3.Error as exc:
        raise Refused(f"--from {path}: cannot read it as a SQLite database ({exc}); pass the runner's database "
                      f"file") from None
    if version < 1 or "runs" not in tables:
        conn.close()
        raise Refused(f"--from {path} is an SQLite file but has no crupto schema, so it is not a crupto database "
                      f"(nothing was changed); pass the runner's database file")
    if version != LATEST_VERSION:
        conn.close()
        fix = (f"open it once with this crupto to upgrade it (e.g. `python -m prod_core.cli --db {path} status`)"
               if version < LATEST_VERSION else f"upgrade crupto to a version that knows schema {version}")
        raise Refused(f"--from {path} is at schema version {version}, this code's is {LATEST_VERSION}: {fix}, "
                      f"then migrate again")
    return conn


def _check_no_live_runner(src: sqlite3.Connection, path: str, now: float) -> None:
    from prod_core.runner.account import host_name, takeover_reason

    host = host_name()
    for lease in _rows(src, "SELECT * FROM leases ORDER BY account"):
        if takeover_reason(lease, host=host, now=now) is None:
            raise Refused(
                f"--from {path}: account {lease['account']} is held by a live runner (run {lease['run_id']}, pid "
                f"{lease['pid']} on {lease['host']}, heartbeat {max(0.0, now - float(lease['heartbeat_at'])):.0f} s "
                f"ago): stop it first (Ctrl+C or `kill -INT {lease['pid']}`), then migrate")
    for run in _rows(src, "SELECT * FROM runs WHERE status = 'running'"):
        if liveness(run, now)[0] == "alive":
            raise Refused(f"--from {path}: run {run['run_id']} is still running (heartbeat seconds ago): "
                          f"stop it first, then migrate")


def _secret_free(text: str, url: str) -> str:
    """Never echo a password, even if a driver message quotes the URL."""
    scheme, sep, rest = url.partition("://")
    creds, at, _ = rest.rpartition("@")
    if sep and at and ":" in creds:
        password = creds.split(":", 1)[1]
        if password:
            text = text.replace(password, "***")
    return text.replace(url, redact_url(url))


def _check_target_schema(url: str) -> None:
    """Refuse a database holding another application's tables (before the schema is created in it)."""
    shown = redact_url(url)
    try:
        conn = PgConnection(url)
    except DB_ERRORS as exc:
        raise Refused(_secret_free(
            f"--to {shown}: cannot reach the target database: {exc}; check the URL (host, port, user, "
            f"database, password), that the server runs and that the database exists (createdb)", url)) from None
    try:
        names = {r["name"] for r in _rows(conn, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        conn.close()
    foreign = sorted(n for n in names if n not in _CRUPTO_TABLES)
    if foreign:
        raise Refused(f"--to {shown} already holds tables that are not crupto's ({', '.join(foreign[:5])}): "
                      f"migrate into a new, empty database (createdb crupto) and pass its URL")


_CRUPTO_TABLES = {
    "runs", "feed_states", "plans", "orders", "fills", "positions", "equity", "governance_state", "audit",
    "commands", "events", "exports", "journal", "leases", "session_bars", "session_events", "firm_state",
    "firm_kills", "firm_exposure", "sweep_results", "sweep_journal", "schema_migrations",
}


def _used_tables(conn: Any, tables: list[str]) -> list[str]:
    used = []
    for table in tables:
        if table == "firm_state":
            rows = _rows(conn, "SELECT * FROM firm_state")
            if rows and rows != [_FRESH_FIRM]:
                used.append(table)
        elif conn.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone() is not None:  # noqa: S608
            used.append(table)
    return used


def _reset_sequences(pg: Any, tables: list[str]) -> None:
    """Move every serial id (journal.seq, audit/commands/exports.id) past the copied ids."""
    serials = pg.execute(
        "SELECT table_name::text, column_name::text FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND column_default LIKE 'nextval(%%' AND column_name <> 'rowid'"
    ).fetchall()
    for table, column in serials:
        if table in tables:
            pg.execute(
                f"SELECT setval(pg_get_serial_sequence(%s, %s), COALESCE((SELECT MAX({column}) FROM {table}), 0) + 1,"
                f" false)", (table, column))


# ------------------------------------------------------------------ the command


def run(args) -> int:
    try:
        return _migrate(args)
    except Refused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _migrate(args) -> int:
    if args.batch < 1:
        raise Refused(f"--batch must be >= 1, was {args.batch}")
    path = _source_path(args.source)
    url = args.target.strip()
    if not is_postgres_url(url):
        raise Refused(f"--to {redact_url(url)} is not a PostgreSQL URL: pass postgresql://user:password@host:port/db "
                      f"(a new, empty database)")
    shown = redact_url(url)
    src = _open_source(path)
    try:
        _check_no_live_runner(src, path, time.time())
        snap = _snapshot(src, path)
        _check_target_schema(url)
        try:
            target = Storage(url)
        except StorageError as exc:
            raise Refused(_secret_free(f"--to {shown}: {exc}", url)) from None
        with target:
            return _copy(src, path, snap, target, shown, args.batch)
    finally:
        src.close()


def _snapshot(src: sqlite3.Connection, path: str) -> tuple[list[str], dict[str, int], dict[str, tuple]]:
    """Open the read snapshot of the source (kept until the copy ends) and check its accounts reconcile."""
    src.execute("BEGIN")  # one read snapshot of every table
    tables = _tables(src)
    counts = {t: _count(src, t) for t in tables}
    sides = {a: _account_side(src, a) for a in _accounts(src)}
    bad = {a: compare(fold(a, e), s, r) for a, (e, s, r) in sides.items()}
    bad = {a: d for a, d in bad.items() if d}
    if bad:
        names = ", ".join(sorted(bad))
        first = next(iter(bad.values()))[0]
        raise Refused(f"--from {path}: account(s) {names} do not reconcile in the source (e.g. {first}): start "
                      f"their runner once (it repairs the saved state from the journal) or see "
                      f"`python -m prod_core.cli --db {path} reconcile --account <account>`, then migrate")
    return tables, counts, sides


def _copy(src: sqlite3.Connection, path: str, snap: tuple, target: Storage, shown: str, batch: int) -> int:
    tables, counts, source_sides = snap
    accounts = list(source_sides)
    import psycopg

    pg = target._conn  # the PgConnection: the translated SQL, and its psycopg connection for COPY
    raw = pg._pg
    target_tables = _tables(pg)
    if set(target_tables) != set(tables):
        raise Refused(f"--to {shown}: its tables ({', '.join(sorted(set(target_tables) ^ set(tables)))} differ) "
                      f"do not match the source's at schema {LATEST_VERSION}: migrate into a new, empty database")
    written: dict[str, int] = {}
    try:
        with target._tx():  # BEGIN + the database's write lock: all or nothing
            used = _used_tables(pg, tables)
            if used:
                raise Refused(f"--to {shown} already holds crupto rows (in {', '.join(used)}): migrate-db never "
                              f"merges into or overwrites a used database; create a new, empty one (createdb) "
                              f"and pass its URL")
            total = sum(counts.values())
            with progress(total=total, desc="migrate-db", unit="row", unit_scale=True) as bar:
                for table in tables:
                    columns = _columns(src, table)
                    missing = set(columns) - set(_columns(pg, table))
                    if missing:
                        raise Mismatch(f"table {table}: the target lacks the columns {sorted(missing)}")
                    if table == "firm_state":
                        pg.execute("DELETE FROM firm_state")  # the fresh schema's default row, replaced by the source's
                    cols = ", ".join(columns)
                    n = 0
                    cur = src.execute(f"SELECT {cols} FROM {table} ORDER BY rowid")  # noqa: S608
                    with raw.cursor() as pcur, pcur.copy(f"COPY {table} ({cols}) FROM STDIN") as copy:
                        while rows := cur.fetchmany(batch):
                            for row in rows:
                                copy.write_row(row)
                            n += len(rows)
                            bar.update(len(rows))
                    written[table] = n
            _reset_sequences(raw, tables)
            for table in tables:
                have = _count(pg, table)
                if have != counts[table] or written[table] != counts[table]:
                    raise Mismatch(f"table {table}: source {counts[table]} rows, target {have} rows")
            results = []
            for account in accounts:
                _, src_saved, src_rows = source_sides[account]
                entries, saved, rows = _account_side(pg, account)
                book = fold(account, entries)
                diffs = [f"target saved state: {d}" for d in compare(book, saved, rows)]
                diffs += [f"source saved state: {d}" for d in compare(book, src_saved, src_rows)]
                if len(entries) != len(source_sides[account][0]):
                    diffs.append(f"journal: source {len(source_sides[account][0])} entries, target {len(entries)}")
                if diffs:
                    raise Mismatch(f"account {account} does not reconcile on the target: {diffs[0]}"
                                   + (f" (+{len(diffs) - 1} more)" if len(diffs) > 1 else ""))
                results.append((account, book, len(rows)))
    except Mismatch as exc:
        print(f"error: migration of {path} to {shown} does not verify, rolled back (the target holds no crupto "
              f"rows): {exc}", file=sys.stderr)
        return 1
    except DB_ERRORS as exc:  # a row the target refused (a constraint, a type)
        print(f"error: migration of {path} to {shown} failed and was rolled back: {exc}", file=sys.stderr)
        return 1
    except (StorageError, psycopg.Error) as exc:
        print(f"error: migration of {path} to {shown} failed and was rolled back: {' '.join(str(exc).split())}",
              file=sys.stderr)
        return 1
    finally:
        src.execute("COMMIT")  # end the read snapshot

    width = max(len(t) for t in tables)
    print(f"copied {path} -> {shown} (schema {LATEST_VERSION}):")
    for table in tables:
        print(f"  {table:<{width}} {written[table]:>10} rows  (source {counts[table]}, target {counts[table]}: match)")
    for account, book, n_open in results:
        print(f"migrated account {account}: {book.entries} journal entries (last seq {book.last_seq}), "
              f"{n_open} open positions; reconciled: AGREE")
    after = {t: _count(src, t) for t in tables}
    changed = [t for t in tables if after[t] != counts[t]]
    if changed:
        print(f"error: the source changed during the migration (tables {', '.join(changed)}; did a runner start?): "
              f"the target holds the snapshot taken at the start; stop every runner, drop the target database "
              f"and migrate again", file=sys.stderr)
        return 1
    print(f"migrated {sum(counts.values())} rows in {len(tables)} tables, {len(results)} accounts: AGREE")
    return 0
