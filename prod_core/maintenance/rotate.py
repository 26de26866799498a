"""Rotate the database: archive old runs to Parquet + CSV, delete them, then VACUUM.

The logic of ``scripts/vacuum_and_rotate.py`` (see its docstring for the flags and the
guarantees). The steps are separate functions:

- ``plan_rotation`` (read-only connection from ``connect_ro``): every run with ``keep`` /
  ``skip`` / ``rotate`` and why;
- ``archive_runs`` / ``write_archive``: each run to rotate into ``<out>/run_<run_id>/``
  (Parquet + CSV per table, ``manifest.json``), read back and counted;
- ``delete_archived``: delete the archived runs in one transaction that re-checks the row
  counts, record each archive in the ``exports`` table, VACUUM.

The database is a SQLite file or a PostgreSQL URL (``--db`` > DB_URL > DB_PATH): the same SQL
runs on both (``prod_core.storage.postgres``). On PostgreSQL the read-only connection is a
``READ ONLY`` session, an archive is read in one ``REPEATABLE READ`` snapshot, sizes are
``pg_database_size`` and VACUUM is PostgreSQL's plain VACUUM (space made reusable, rarely
given back to the operating system; the summary line says so).

On a terminal a progress bar (``prod_core.telemetry.progress``) advances one step per run
archived and stays open through the delete and VACUUM; piped or redirected, nothing is drawn.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from prod_core.maintenance.common import (
    FRESH_HEARTBEAT_S,
    UsageError,
    actor,
    connect_readonly,
    db_label,
    existing_db,
    is_postgres_url,
    setting,
)
from prod_core.storage import RUN_TABLES, Storage, StorageError
from prod_core.storage.postgres import DB_ERRORS
from prod_core.telemetry.progress import NullProgress, progress

__all__ = [
    "DAY_S",
    "archive_runs",
    "build_parser",
    "connect_ro",
    "delete_archived",
    "main",
    "plan_rotation",
    "print_plan",
    "rotate",
    "write_archive",
]

PROG = "python scripts/vacuum_and_rotate.py"
Archives = dict[str, tuple[Path, dict[str, int]]]

DAY_S = 86400.0


def non_negative_days(text: str) -> float:
    """argparse type: a finite number of days >= 0; the error names the value given."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of days >= 0 (e.g. 30), was {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: a whole number >= 0; the error names the value given."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0 (e.g. 5), was {text!r}")
    return value


def db_size(path: str) -> int:
    """Bytes on disk of the database with its WAL."""
    return sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))


def pg_size(conn: Any) -> int:
    """Bytes of the current PostgreSQL database (``pg_database_size``), through a connection or a ``Storage``."""
    if isinstance(conn, Storage):
        return int(conn.query("SELECT pg_database_size(current_database()) AS n")[0]["n"])
    return int(conn.execute("SELECT pg_database_size(current_database())").fetchone()[0])


def human(n: float) -> str:
    """Bytes as ``512 B`` / ``1.5 MiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def connect_ro(path: str) -> Any:
    """A read-only connection (SQLite file or PostgreSQL URL): planning never writes, not even a migration."""
    if is_postgres_url(path):
        try:
            conn = connect_readonly(path)
        except DB_ERRORS as exc:  # the message names the URL without its password
            raise UsageError(
                f"{exc}; check --db or DB_URL (host, port, user, database, password) and that the server is running"
            ) from None
        try:
            conn.execute("SELECT COUNT(*) FROM runs").fetchone()
        except DB_ERRORS as exc:
            conn.close()
            raise UsageError(
                f"{db_label(path)} is not a crupto database ({exc}); pass --db URL (or set DB_URL) to the database "
                f"the runner wrote"
            ) from None
        return conn
    try:
        conn = connect_readonly(path)
        conn.execute("SELECT COUNT(*) FROM runs").fetchone()
    except sqlite3.Error as exc:
        raise UsageError(
            f"{path} is not a crupto database ({exc}); pass --db PATH to the database the runner wrote"
        ) from exc
    return conn


# ---------------------------------------------------------------------- plan


def plan_rotation(
    conn: Any, *, now: float, keep_days: float, keep_runs: int
) -> list[dict[str, Any]]:
    """Every run, newest first, with ``action`` (keep / skip / rotate), ``why`` and its row counts."""
    runs = conn.execute(
        "SELECT run_id, status, started_at, ended_at, heartbeat_at FROM runs ORDER BY started_at DESC, rowid DESC"
    ).fetchall()
    has_exports = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'exports'"
    ).fetchone() is not None
    cutoff = now - keep_days * DAY_S
    plan: list[dict[str, Any]] = []
    for index, (run_id, status, started, ended, beat) in enumerate(runs):
        last = ended or beat or started
        entry: dict[str, Any] = {"run_id": run_id, "status": status, "last_activity": last}
        entry["rows"] = {
            t: conn.execute(f"SELECT COUNT(*) FROM {t} WHERE run_id = ?", (run_id,)).fetchone()[0]  # noqa: S608
            for t in RUN_TABLES
        }
        entry["exported"] = bool(
            has_exports
            and conn.execute("SELECT 1 FROM exports WHERE run_id = ? AND kind = 'report'", (run_id,)).fetchone()
        )
        open_n = conn.execute(
            "SELECT COUNT(*) FROM positions WHERE run_id = ? AND status = 'open'", (run_id,)
        ).fetchone()[0]
        heartbeat_age = now - (beat or started)
        if index < keep_runs:
            entry["action"], entry["why"] = "keep", f"one of the {keep_runs} newest runs"
        elif last >= cutoff:
            entry["action"], entry["why"] = "keep", f"active within the last {keep_days:g} days"
        elif status == "running" and heartbeat_age < FRESH_HEARTBEAT_S:
            entry["action"] = "skip"
            entry["why"] = (
                f"still running (heartbeat {heartbeat_age:.0f} s ago): let it finish, export it with "
                f"scripts/export_run.py, then rotate again"
            )
        elif open_n:
            entry["action"] = "skip"
            entry["why"] = (
                f"owns {open_n} open position(s), which belong to the account and are never deleted: "
                f"rotate after they are closed or taken over by a newer run"
            )
        else:
            entry["action"] = "rotate"
            entry["why"] = f"inactive for {(now - last) / DAY_S:.1f} days"
            if status == "running":
                entry["why"] += f" (marked running, but no heartbeat for {heartbeat_age:.0f} s: the runner died)"
        plan.append(entry)
    return plan


def print_plan(plan: list[dict[str, Any]], *, dry_run: bool) -> None:
    """One line per run of ``plan``: its status, last activity, rows, action and why."""
    if not plan:
        print("no runs in the database")
        return
    verb = "would archive + delete" if dry_run else "archive + delete"
    for e in plan:
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(e["last_activity"]))
        action = verb if e["action"] == "rotate" else e["action"]
        exported = "" if e["exported"] else " (no report: not stopped cleanly, never exported; the archive keeps every row)"
        note = exported if e["action"] == "rotate" else ""
        print(
            f"  run {e['run_id']} [{e['status']}, last active {when}, {sum(e['rows'].values())} rows]: "
            f"{action} - {e['why']}{note}"
        )


# ---------------------------------------------------------------------- archive


def _arrow_type(declared: str) -> pa.DataType:
    declared = declared.upper()
    if "INT" in declared:
        return pa.int64()
    if any(k in declared for k in ("DOUBLE", "REAL", "FLOAT", "NUMERIC")):
        return pa.float64()
    return pa.string()


def _arrow_column(values: list[Any], declared: str) -> pa.Array:
    try:
        return pa.array(values, type=_arrow_type(declared))
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        # SQLite is dynamically typed: a value that does not fit the declared type is kept as text.
        return pa.array([None if v is None else str(v) for v in values], type=pa.string())


def _csv_rows(path: Path) -> int:
    with path.open(newline="", encoding="utf-8") as fh:
        return max(sum(1 for _ in csv.reader(fh)) - 1, 0)


def write_archive(conn: Any, run_id: str, folder: Path, *, db: str, now: float) -> dict[str, int]:
    """Write every per-run table of ``run_id`` to ``folder`` (Parquet + CSV), read back and check; return rows per table."""
    folder.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    # one read snapshot for all tables of the run (PostgreSQL's default READ COMMITTED is one per statement)
    conn.execute("BEGIN" if isinstance(conn, sqlite3.Connection) else "BEGIN ISOLATION LEVEL REPEATABLE READ")
    try:
        for table in RUN_TABLES:
            declared = {r[1]: r[2] for r in conn.execute(f"PRAGMA table_info({table})")}
            cur = conn.execute(f"SELECT * FROM {table} WHERE run_id = ? ORDER BY rowid", (run_id,))  # noqa: S608
            columns = [d[0] for d in cur.description]
            rows = cur.fetchall()
            with (folder / f"{table}.csv").open("w", newline="", encoding="utf-8") as fh:
                writer = csv.writer(fh)
                writer.writerow(columns)
                writer.writerows(rows)
            arrays = [_arrow_column([r[i] for r in rows], declared.get(c, "")) for i, c in enumerate(columns)]
            pq.write_table(pa.Table.from_arrays(arrays, names=columns), folder / f"{table}.parquet")
            counts[table] = len(rows)
    finally:
        conn.execute("ROLLBACK")
    for table, expected in counts.items():
        in_parquet = pq.read_metadata(folder / f"{table}.parquet").num_rows
        in_csv = _csv_rows(folder / f"{table}.csv")
        if in_parquet != expected or in_csv != expected:
            raise StorageError(
                f"archive of run {run_id} is incomplete: {table} has {expected} rows in the database but "
                f"{in_parquet} in Parquet and {in_csv} in CSV under {folder}; nothing was deleted: "
                f"check the disk and run the rotation again"
            )
    manifest = {
        "run_id": run_id,
        "archived_at": now,
        "archived_at_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        "database": db_label(db) if is_postgres_url(db) else str(Path(db).resolve()),
        "rows": counts,
        "files": [f"{t}.{ext}" for t in RUN_TABLES for ext in ("parquet", "csv")],
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return counts


def archive_runs(
    conn: Any, plan: list[dict[str, Any]], out: Path, *, db: str, now: float, bar: Any = None
) -> Archives:
    """Archive every run of ``plan`` whose action is ``rotate`` to ``out/run_<run_id>/``.

    Returns ``{run_id: (folder, rows per table)}`` in plan order. Nothing is deleted here.
    ``bar`` (a ``progress`` object) advances one step per run archived."""
    bar = bar if bar is not None else NullProgress()
    archives: Archives = {}
    for e in plan:
        if e["action"] != "rotate":
            continue
        bar.set_postfix_str(f"archive {e['run_id']}")
        folder = out / f"run_{e['run_id']}"
        archives[e["run_id"]] = (folder, write_archive(conn, e["run_id"], folder, db=db, now=now))
        bar.update(1)
    return archives


def delete_archived(storage: Storage, archives: Archives, *, now: float, bar: Any = None) -> dict[str, dict[str, int]]:
    """Delete the archived runs in one transaction, record each archive, then VACUUM.

    The transaction re-checks every run's row counts against its archive and refuses a run that
    turned live or owns an open position (``StorageError``, nothing deleted). Returns the rows
    deleted per run and table."""
    bar = bar if bar is not None else NullProgress()
    deleted: dict[str, dict[str, int]] = {}
    if archives:
        bar.set_postfix_str(f"delete {len(archives)} run(s)")
        deleted = storage.delete_runs(
            list(archives),
            expected={rid: counts for rid, (_, counts) in archives.items()},
            live_after=now - FRESH_HEARTBEAT_S,
        )
        for rid, (folder, counts) in archives.items():
            storage.record_export(rid, kind="archive", path=str(folder), rows=sum(counts.values()),
                                  ts=now, actor=actor())
    bar.set_postfix_str("VACUUM")
    storage.vacuum()
    return deleted


# ---------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``scripts/vacuum_and_rotate.py``."""
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Archive old runs to Parquet/CSV, delete them from the database, then VACUUM.",
    )
    p.add_argument(
        "--db", default=None,
        help="SQLite file or postgresql:// URL (default: DB_URL, else DB_PATH from env/.env, else storage/crupto.db)",
    )
    p.add_argument("--out", default=None, help="archive root (default: <REPORTS_DIR or reports>/archive)")
    p.add_argument(
        "--keep-days", type=non_negative_days, default=30.0,
        help="keep runs active within this many days (default 30)",
    )
    p.add_argument(
        "--keep-runs", type=non_negative_int, default=5,
        help="always keep this many newest runs, whatever their age (default 5)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the plan only; the database is opened read-only")
    return p


def rotate(args: argparse.Namespace, now: float) -> int:
    """Resolve ``--db``/``--out``, plan, and (unless ``--dry-run``) archive, delete and VACUUM, printing each step."""
    db = existing_db(args.db)
    out = Path(args.out) if args.out else Path(setting(None, "REPORTS_DIR", "reports")) / "archive"
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a directory: pass an archive directory such as reports/archive")
    postgres = is_postgres_url(db)
    label = db_label(db)
    size_before = 0 if postgres else db_size(db)
    conn = connect_ro(db)
    try:
        if postgres:
            size_before = pg_size(conn)
        if args.dry_run:
            plan = plan_rotation(conn, now=now, keep_days=args.keep_days, keep_runs=args.keep_runs)
            print(f"dry run on {label} (keep {args.keep_runs} newest runs and runs active within {args.keep_days:g} days):")
            print_plan(plan, dry_run=True)
            todo = [e for e in plan if e["action"] == "rotate"]
            rows = sum(sum(e["rows"].values()) for e in todo)
            print(
                f"dry run: would archive {len(todo)} run(s) ({rows} rows) to {out} and delete them, then VACUUM "
                f"(db {human(size_before)}); nothing was changed"
            )
            return 0
        # brings the schema up to date (exports table); PostgreSQL: never creates a schema in a wrong database
        with Storage(db, create=not postgres) as storage:
            plan = plan_rotation(conn, now=now, keep_days=args.keep_days, keep_runs=args.keep_runs)
            print(f"rotating {label} (keep {args.keep_runs} newest runs and runs active within {args.keep_days:g} days):")
            print_plan(plan, dry_run=False)
            sys.stdout.flush()  # the plan before the bar (stderr) on a terminal
            todo = sum(1 for e in plan if e["action"] == "rotate")
            with (progress(total=todo, desc="rotate", unit="run") if todo else NullProgress()) as bar:
                archives = archive_runs(conn, plan, out, db=db, now=now, bar=bar)
                conn.close()
                deleted = delete_archived(storage, archives, now=now, bar=bar)
            size_after = pg_size(storage) if postgres else 0
    finally:
        conn.close()
    if not postgres:
        size_after = db_size(db)
    totals = {t: sum(d[t] for d in deleted.values()) for t in RUN_TABLES}
    skipped = [e["run_id"] for e in plan if e["action"] == "skip"]
    kept = [e["run_id"] for e in plan if e["action"] == "keep"]
    for rid, (folder, counts) in archives.items():
        print(f"archived run {rid} to {folder} ({sum(counts.values())} rows) and deleted it")
    print(
        f"done: {len(deleted)} run(s) archived to {out} and deleted ({sum(totals.values())} rows: "
        + ", ".join(f"{t}={n}" for t, n in totals.items())
        + f"); kept {len(kept)}, skipped {len(skipped)}"
        + (f" ({', '.join(skipped)})" if skipped else "")
    )
    if postgres:
        print(
            f"VACUUM: database {human(size_before)} -> {human(size_after)} (PostgreSQL's VACUUM makes the freed "
            f"space reusable but rarely returns it to the disk; VACUUM FULL would, under an exclusive lock that "
            f"stops the runners: leave it to a maintenance window)"
        )
    else:
        print(f"VACUUM: db {human(size_before)} -> {human(size_after)} ({human(size_before - size_after)} freed)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Rotate; exit 0 on success, 2 on bad input, 1 when writing or deleting failed."""
    args = build_parser().parse_args(argv)
    try:
        return rotate(args, time.time())
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except StorageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: cannot write the archive: {exc}; nothing was deleted; check --out and free disk space",
              file=sys.stderr)
        return 1
