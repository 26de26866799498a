#!/usr/bin/env python3
"""Remove old run artefacts: keep the newest ``reports/run_*`` folders and ``logs/*.log`` files.

    python scripts/cleanup.py [--keep-runs 2] [--keep-logs 5] [--dry-run]
                              [--reports-dir reports] [--logs-dir logs] [--db storage/crupto.db]

"Newest" is by modification time. ``--reports-dir`` defaults to REPORTS_DIR (environment,
then ``.env``), else ``reports``; ``--logs-dir`` to LOGS_DIR, else ``logs``.

Never touched: ``reports/archive/``, ``reports/summary_latest.md``,
``reports/02_acceptance_checklist.md``, ``reports/telemetry_events.csv`` (only ``run_*``
folders are candidates at all), the log and report folder of a run that is still running
(status ``running`` with a fresh heartbeat in the database, when the database exists), and
any log modified in the last 10 seconds. The database itself is only read.

Exit 0 on success, 2 on bad input (bad numbers, a directory that is a file, neither
directory present).
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prod_core.maintenance.common import FRESH_HEARTBEAT_S, UsageError, setting  # noqa: E402
from prod_core.storage import StorageError, resolve_sqlite_path  # noqa: E402

# A log written this recently may belong to a run that has not reached the database yet.
RECENT_LOG_S = 10.0
# Files in the reports root that cleanup never removes (it only considers run_* folders anyway).
PROTECTED = frozenset({"archive", "summary_latest.md", "02_acceptance_checklist.md", "telemetry_events.csv"})






def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0 (e.g. 2), was {text!r}")
    return value


def live_runs(db_flag: str | None, now: float) -> tuple[set[str], str]:
    """Run ids still running with a fresh heartbeat, read-only; and a note on how they were found."""
    raw = setting(db_flag, "DB_PATH", "storage/crupto.db")
    try:
        path = resolve_sqlite_path(raw)
    except StorageError as exc:
        raise UsageError(str(exc)) from exc
    if path == ":memory:" or not Path(path).is_file():
        if db_flag:
            raise UsageError(f"--db {raw} not found: pass the database the runner wrote, or omit --db")
        return set(), f"no database at {raw}: running runs are recognised by recent logs only"
    try:
        conn = sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True)
        try:
            conn.execute("PRAGMA busy_timeout = 5000")
            rows = conn.execute(
                "SELECT run_id FROM runs WHERE status = 'running' AND COALESCE(heartbeat_at, started_at) >= ?",
                (now - FRESH_HEARTBEAT_S,),
            ).fetchall()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return set(), f"warning: cannot read runs from {raw} ({exc}): running runs are recognised by recent logs only"
    return {r[0] for r in rows}, f"running runs from {raw}: {', '.join(sorted(r[0] for r in rows)) or 'none'}"


def newest_first(paths: list[Path]) -> list[Path]:
    return sorted(paths, key=lambda p: (p.lstat().st_mtime, p.name), reverse=True)


def size_of(path: Path) -> int:
    if path.is_symlink() or path.is_file():
        return path.lstat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python scripts/cleanup.py",
        description="Keep the newest reports/run_* folders and logs; remove older ones.",
    )
    p.add_argument("--keep-runs", type=non_negative_int, default=2, help="run report folders to keep (default 2)")
    p.add_argument("--keep-logs", type=non_negative_int, default=5, help="log files to keep (default 5)")
    p.add_argument("--dry-run", action="store_true", help="print what would be removed; remove nothing")
    p.add_argument("--reports-dir", default=None, help="reports root (default: REPORTS_DIR from env/.env, else reports)")
    p.add_argument("--logs-dir", default=None, help="logs directory (default: LOGS_DIR from env/.env, else logs)")
    p.add_argument("--db", default=None, help="database to recognise running runs (default: DB_PATH, else storage/crupto.db)")
    return p


def cleanup(args: argparse.Namespace, now: float) -> int:
    reports = Path(setting(args.reports_dir, "REPORTS_DIR", "reports"))
    logs = Path(setting(args.logs_dir, "LOGS_DIR", "logs"))
    for flag, d in (("--reports-dir", reports), ("--logs-dir", logs)):
        if d.exists() and not d.is_dir():
            raise UsageError(f"{flag} {d} is a file, not a directory: pass the directory")
    if not reports.is_dir() and not logs.is_dir():
        raise UsageError(
            f"neither {reports} nor {logs} exists (working directory {Path.cwd()}): run from the repo root "
            f"or pass --reports-dir/--logs-dir"
        )
    live, note = live_runs(args.db, now)
    print(note)
    verb = "would remove" if args.dry_run else "removed"
    removed: list[tuple[Path, int, str]] = []
    kept_runs = kept_logs = 0

    if reports.is_dir():
        run_dirs = [p for p in reports.iterdir() if p.name.startswith("run_") and p.name not in PROTECTED and p.is_dir()]
        for index, path in enumerate(newest_first(run_dirs)):
            run_id = path.name[len("run_") :]
            if index < args.keep_runs:
                kept_runs += 1
                continue
            if run_id in live:
                kept_runs += 1
                print(f"keep {path}: run {run_id} is still running")
                continue
            removed.append((path, size_of(path), "run"))
    else:
        print(f"no reports directory {reports}: no run folders to clean")

    if logs.is_dir():
        log_files = [p for p in logs.iterdir() if p.suffix == ".log" and (p.is_file() or p.is_symlink())]
        for index, path in enumerate(newest_first(log_files)):
            if index < args.keep_logs:
                kept_logs += 1
                continue
            if path.stem in live:
                kept_logs += 1
                print(f"keep {path}: run {path.stem} is still running")
                continue
            if now - path.lstat().st_mtime < RECENT_LOG_S:
                kept_logs += 1
                print(f"keep {path}: written in the last {RECENT_LOG_S:.0f} s (a run may still be using it)")
                continue
            removed.append((path, size_of(path), "log"))
    else:
        print(f"no logs directory {logs}: no logs to clean")

    for path, size, _ in removed:
        if not args.dry_run:
            remove(path)
        print(f"{verb} {path} ({size} bytes)")
    n_dirs = sum(1 for _, _, kind in removed if kind == "run")
    n_logs = len(removed) - n_dirs
    total = sum(size for _, size, _ in removed)
    print(
        f"{'dry run: ' if args.dry_run else ''}{verb} {n_dirs} run folder(s) and {n_logs} log(s), {total} bytes; "
        f"kept {kept_runs} run folder(s) in {reports} and {kept_logs} log(s) in {logs}"
        + ("; nothing was changed" if args.dry_run else "")
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return cleanup(args, time.time())
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot remove {exc.filename}: {exc.strerror or exc}; check its permissions", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
