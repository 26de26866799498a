"""Export one run to ``reports/run_<run_id>/`` (Parquet + CSV tables, summary.md, run.log).

The logic of ``scripts/export_run.py`` (see its docstring for the flags). The report is read
back from the database (``prod_core.reports.report.write_run_report``), so it can be written
again at any time after the run; every table's Parquet row count is checked against the
database and the export is recorded in the ``exports`` table.

    from prod_core.maintenance.export import export, pick_run

    with Storage("storage/crupto.db") as storage:
        run = pick_run(storage, None)            # the latest finished run
        folder, counts, log_copied = export(storage, run, Path("reports"), Path("logs"), now=time.time())

On a terminal a progress bar (``prod_core.telemetry.progress``) counts the report write and
then one step per table checked; piped or redirected, nothing is drawn.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from prod_core.maintenance.common import (
    FRESH_HEARTBEAT_S,
    UsageError,
    actor,
    db_label,
    existing_db,
    is_postgres_url,
    setting,
)
from prod_core.reports.report import REPORT_TABLES, write_run_report
from prod_core.storage import Storage, StorageError
from prod_core.telemetry.progress import progress

__all__ = ["build_parser", "check_running", "export", "main", "pick_run"]

PROG = "python scripts/export_run.py"


def pick_run(storage: Storage, run_id: str | None) -> dict[str, Any]:
    """The run named ``run_id``, or (None) the latest run that is not ``running``.

    Raises ``UsageError`` naming the unknown id and the latest run ids, or saying that the
    database has no finished run yet."""
    if run_id is not None:
        run = storage.get_run(run_id)
        if run is None:
            recent = ", ".join(r["run_id"] for r in storage.list_runs(5)) or "none"
            raise UsageError(
                f"run id {run_id!r} is not in database {storage.path} (latest runs: {recent}); "
                f"pass one of them, or omit --run-id for the latest finished run"
            )
        return run
    for run in storage.list_runs(1_000_000):
        if run["status"] != "running":
            return run
    raise UsageError(
        f"database {storage.path} has no finished run yet; wait for the run to stop, "
        f"or pass --run-id ID --allow-running for a snapshot of a running one"
    )


def check_running(run: dict[str, Any], *, now: float, allow_running: bool) -> str | None:
    """Refuse (``UsageError``) a ``running`` run with a fresh heartbeat unless ``allow_running``.

    Returns a note for a run marked running whose heartbeat is stale (the runner died), else None."""
    if run["status"] != "running":
        return None
    run_id = run["run_id"]
    age = now - (run.get("heartbeat_at") or run["started_at"])
    if age < FRESH_HEARTBEAT_S and not allow_running:
        raise UsageError(
            f"run {run_id} is still running (heartbeat {age:.0f} s ago): wait for it to stop "
            f"(the runner writes its report at a clean stop), or pass --allow-running for a snapshot"
        )
    if age >= FRESH_HEARTBEAT_S:
        return (f"note: run {run_id} is marked running but its heartbeat is {age:.0f} s old "
                f"(the runner died; the next start marks it crashed)")
    return None


def export(
    storage: Storage, run: dict[str, Any], out: Path, logs_dir: Path, *, now: float
) -> tuple[Path, dict[str, int], bool]:
    """Write the report folder of ``run`` under ``out``, check its Parquet row counts, record the export.

    ``logs_dir/<run_id>.log`` is copied as ``run.log`` when present. Returns the folder, the rows
    per report table and whether the log was copied. Raises ``StorageError`` when a table's
    Parquet file does not hold the database's row count or summary.md is missing."""
    run_id = run["run_id"]
    log_path = logs_dir / f"{run_id}.log"
    counts: dict[str, int] = {}
    with progress(total=len(REPORT_TABLES) + 1, desc=f"export {run_id}", unit="table") as bar:
        bar.set_postfix_str("writing the report")
        folder = write_run_report(storage, run_id, out, log_path if log_path.is_file() else None)
        bar.update(1)
        for table in REPORT_TABLES:
            bar.set_postfix_str(table)
            expected = storage.count_rows(table, run_id)
            written = pq.read_metadata(folder / f"{table}.parquet").num_rows
            if written != expected:
                raise StorageError(
                    f"{folder / (table + '.parquet')} holds {written} rows but the database has {expected} "
                    f"(written meanwhile?); export again"
                )
            counts[table] = written
            bar.update(1)
        bar.set_postfix_str("")
    if not (folder / "summary.md").is_file():
        raise StorageError(f"{folder}/summary.md was not written; check the disk and export again")
    storage.record_export(run_id, kind="report", path=str(folder), rows=sum(counts.values()), ts=now, actor=actor())
    return folder, counts, (folder / "run.log").is_file() and log_path.is_file()


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``scripts/export_run.py``."""
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Export one run to reports/run_<run_id>/ (Parquet + CSV + summary.md + run.log).",
    )
    p.add_argument("--run-id", default=None, help="run to export (default: the latest finished run)")
    p.add_argument(
        "--db", default=None,
        help="SQLite file or postgresql:// URL (default: DB_URL, else DB_PATH from env/.env, else storage/crupto.db)",
    )
    p.add_argument("--out", default=None, help="reports root (default: REPORTS_DIR from env/.env, else reports)")
    p.add_argument("--logs-dir", default=None, help="directory of <run_id>.log (default: LOGS_DIR, else logs)")
    p.add_argument(
        "--allow-running",
        action="store_true",
        help="export a snapshot of a run that is still running (its report is rewritten at its clean stop)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Export one run; exit 0 on success, 2 on bad input, 1 when the report cannot be written."""
    args = build_parser().parse_args(argv)
    now = time.time()
    try:
        db = existing_db(args.db)
        out = Path(setting(args.out, "REPORTS_DIR", "reports"))
        logs_dir = Path(setting(args.logs_dir, "LOGS_DIR", "logs"))
        if out.exists() and not out.is_dir():
            raise UsageError(f"--out {out} is a file, not a directory: pass a reports directory")
        # PostgreSQL: create=False refuses a database without crupto's schema (a wrong URL creates nothing)
        with Storage(db, create=not is_postgres_url(db)) as storage:
            run = pick_run(storage, args.run_id)
            run_id = run["run_id"]
            note = check_running(run, now=now, allow_running=args.allow_running)
            if note:
                print(note)
            folder, counts, log_copied = export(storage, run, out, logs_dir, now=now)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except StorageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot write the report: {exc}; check the --out directory and free disk space", file=sys.stderr)
        return 1
    tables = ", ".join(f"{t}={n}" for t, n in counts.items())
    log_note = "run.log copied" if log_copied else f"no log at {logs_dir / (run_id + '.log')}"
    print(f"exported run {run_id} ({run['status']}) to {folder}: {tables}; summary.md; {log_note}")
    print(f"recorded in {db_label(db)} (exports table); archive old runs with scripts/vacuum_and_rotate.py")
    return 0
