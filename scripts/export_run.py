#!/usr/bin/env python3
"""Export one run to ``reports/run_<run_id>/`` (Parquet + CSV tables, summary.md, run.log).

The report is read back from the database (``write_run_report``), so it can be written
again at any time after the run, and the export is recorded in the ``exports`` table.

    python scripts/export_run.py [--run-id ID] [--db storage/crupto.db] [--out reports]
                                 [--logs-dir logs] [--allow-running]

Defaults: the latest finished run; ``--db`` from DB_PATH (environment, then ``.env``),
else ``storage/crupto.db``; ``--out`` from REPORTS_DIR, else ``reports``; ``--logs-dir``
from LOGS_DIR, else ``logs`` (the run's log ``logs/<run_id>.log`` is copied when present).
Exit 0 on success, 2 on bad input (missing database, unknown run id, run still running).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow.parquet as pq  # noqa: E402

from prod_core.reports.report import REPORT_TABLES, write_run_report  # noqa: E402
from prod_core.reports.maintenance import FRESH_HEARTBEAT_S, UsageError, actor, existing_db, setting  # noqa: E402
from prod_core.storage import Storage, StorageError  # noqa: E402











def pick_run(storage: Storage, run_id: str | None) -> dict:
    """The named run, or the latest finished one."""
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


def export(storage: Storage, run: dict, out: Path, logs_dir: Path, *, now: float) -> tuple[Path, dict[str, int], bool]:
    """Write the report folder, check its Parquet row counts, record the export; return folder, counts, log copied."""
    run_id = run["run_id"]
    log_path = logs_dir / f"{run_id}.log"
    folder = write_run_report(storage, run_id, out, log_path if log_path.is_file() else None)
    counts: dict[str, int] = {}
    for table in REPORT_TABLES:
        expected = storage.count_rows(table, run_id)
        written = pq.read_metadata(folder / f"{table}.parquet").num_rows
        if written != expected:
            raise StorageError(
                f"{folder / (table + '.parquet')} holds {written} rows but the database has {expected} "
                f"(written meanwhile?); export again"
            )
        counts[table] = written
    if not (folder / "summary.md").is_file():
        raise StorageError(f"{folder}/summary.md was not written; check the disk and export again")
    storage.record_export(run_id, kind="report", path=str(folder), rows=sum(counts.values()), ts=now, actor=actor())
    return folder, counts, (folder / "run.log").is_file() and log_path.is_file()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python scripts/export_run.py",
        description="Export one run to reports/run_<run_id>/ (Parquet + CSV + summary.md + run.log).",
    )
    p.add_argument("--run-id", default=None, help="run to export (default: the latest finished run)")
    p.add_argument("--db", default=None, help="SQLite database (default: DB_PATH from env/.env, else storage/crupto.db)")
    p.add_argument("--out", default=None, help="reports root (default: REPORTS_DIR from env/.env, else reports)")
    p.add_argument("--logs-dir", default=None, help="directory of <run_id>.log (default: LOGS_DIR, else logs)")
    p.add_argument(
        "--allow-running",
        action="store_true",
        help="export a snapshot of a run that is still running (its report is rewritten at its clean stop)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    now = time.time()
    try:
        db = existing_db(args.db)
        out = Path(setting(args.out, "REPORTS_DIR", "reports"))
        logs_dir = Path(setting(args.logs_dir, "LOGS_DIR", "logs"))
        if out.exists() and not out.is_dir():
            raise UsageError(f"--out {out} is a file, not a directory: pass a reports directory")
        with Storage(db) as storage:
            run = pick_run(storage, args.run_id)
            run_id = run["run_id"]
            beat = run.get("heartbeat_at") or run["started_at"]
            if run["status"] == "running":
                age = now - beat
                if age < FRESH_HEARTBEAT_S and not args.allow_running:
                    raise UsageError(
                        f"run {run_id} is still running (heartbeat {age:.0f} s ago): wait for it to stop "
                        f"(the runner writes its report at a clean stop), or pass --allow-running for a snapshot"
                    )
                if age >= FRESH_HEARTBEAT_S:
                    print(f"note: run {run_id} is marked running but its heartbeat is {age:.0f} s old "
                          f"(the runner died; the next start marks it crashed)")
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
    print(f"recorded in {db} (exports table); archive old runs with scripts/vacuum_and_rotate.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
