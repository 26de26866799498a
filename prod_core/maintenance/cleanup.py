"""Remove old run artefacts: keep the newest ``reports/run_*`` folders and ``logs/*.log`` files.

The logic of ``scripts/cleanup.py`` (see its docstring for the flags). ``plan_cleanup`` decides
(reads the directories, changes nothing), ``apply_cleanup`` removes what was planned:

    live, _ = live_runs("storage/crupto.db", time.time())
    plan = plan_cleanup(Path("reports"), Path("logs"), keep_runs=2, keep_logs=5, live=live, now=time.time())
    apply_cleanup(plan)

Only ``run_*`` folders of the reports root are candidates (``archive/``, ``summary_latest.md``
and the other protected files never are); the folder and log of a run still running with a
fresh heartbeat, and any log modified in the last ``RECENT_LOG_S`` seconds, are kept. The
database (a SQLite file or a PostgreSQL URL: ``--db`` > DB_URL > DB_PATH) is only read, through
a read-only connection.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from prod_core.maintenance.common import (
    FRESH_HEARTBEAT_S,
    UsageError,
    connect_readonly,
    db_label,
    db_setting,
    is_postgres_url,
    setting,
)
from prod_core.storage import StorageError, resolve_sqlite_path
from prod_core.storage.postgres import DB_ERRORS

__all__ = [
    "PROTECTED",
    "RECENT_LOG_S",
    "CleanupPlan",
    "Removal",
    "apply_cleanup",
    "build_parser",
    "check_dirs",
    "cleanup",
    "live_runs",
    "main",
    "plan_cleanup",
]

PROG = "python scripts/cleanup.py"
# A log written this recently may belong to a run that has not reached the database yet.
RECENT_LOG_S = 10.0
# Files in the reports root that cleanup never removes (it only considers run_* folders anyway).
PROTECTED = frozenset({"archive", "summary_latest.md", "02_acceptance_checklist.md", "telemetry_events.csv"})


@dataclass(frozen=True)
class Removal:
    """One run folder (``kind`` "run") or log file (``kind`` "log") to remove, with its size in bytes."""

    path: Path
    size: int
    kind: str


@dataclass
class CleanupPlan:
    """What ``plan_cleanup`` decided: removals (run folders first, oldest last), counts kept, and
    the notes explaining kept items or absent directories, in the order they were found."""

    reports: Path
    logs: Path
    removals: list[Removal] = field(default_factory=list)
    kept_runs: int = 0
    kept_logs: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def run_folders(self) -> int:
        """Number of run folders to remove."""
        return sum(1 for r in self.removals if r.kind == "run")

    @property
    def log_files(self) -> int:
        """Number of logs to remove."""
        return sum(1 for r in self.removals if r.kind == "log")

    @property
    def bytes(self) -> int:
        """Total size of the removals."""
        return sum(r.size for r in self.removals)


def non_negative_int(text: str) -> int:
    """argparse type: a whole number >= 0; the error names the value given."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0 (e.g. 2), was {text!r}")
    return value


def live_runs(db_flag: str | None, now: float) -> tuple[set[str], str]:
    """Run ids still running with a fresh heartbeat, read-only; and a note on how they were found.

    ``db_flag`` is the ``--db`` value (None: DB_URL, then DB_PATH, then ``storage/crupto.db``).
    An absent default database is fine (running runs are then recognised by recent logs only); an
    absent ``--db`` raises ``UsageError`` naming it. A PostgreSQL URL is never printed with its
    password; a server that cannot be reached is a warning, like an unreadable file."""
    raw = db_setting(db_flag)
    if is_postgres_url(raw):
        path = raw.strip()
        raw = db_label(path)
    else:
        try:
            path = resolve_sqlite_path(raw)
        except StorageError as exc:
            raise UsageError(str(exc)) from exc
        if path == ":memory:" or not Path(path).is_file():
            if db_flag:
                raise UsageError(f"--db {raw} not found: pass the database the runner wrote, or omit --db")
            return set(), f"no database at {raw}: running runs are recognised by recent logs only"
    try:
        conn = connect_readonly(path)
        try:
            rows = conn.execute(
                "SELECT run_id FROM runs WHERE status = 'running' AND COALESCE(heartbeat_at, started_at) >= ?",
                (now - FRESH_HEARTBEAT_S,),
            ).fetchall()
        finally:
            conn.close()
    except DB_ERRORS as exc:
        return set(), f"warning: cannot read runs from {raw} ({exc}): running runs are recognised by recent logs only"
    return {r[0] for r in rows}, f"running runs from {raw}: {', '.join(sorted(r[0] for r in rows)) or 'none'}"


def newest_first(paths: list[Path]) -> list[Path]:
    """``paths`` by modification time (of the link itself), newest first; ties by name."""
    return sorted(paths, key=lambda p: (p.lstat().st_mtime, p.name), reverse=True)


def size_of(path: Path) -> int:
    """Bytes of a file or link, or of every regular file below a directory."""
    if path.is_symlink() or path.is_file():
        return path.lstat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def remove(path: Path) -> None:
    """Remove a file, a link (not its target) or a directory tree."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def check_dirs(reports: Path, logs: Path) -> None:
    """``UsageError`` naming the flag and path when a directory is a file, or when neither exists."""
    for flag, d in (("--reports-dir", reports), ("--logs-dir", logs)):
        if d.exists() and not d.is_dir():
            raise UsageError(f"{flag} {d} is a file, not a directory: pass the directory")
    if not reports.is_dir() and not logs.is_dir():
        raise UsageError(
            f"neither {reports} nor {logs} exists (working directory {Path.cwd()}): run from the repo root "
            f"or pass --reports-dir/--logs-dir"
        )


def plan_cleanup(
    reports: Path, logs: Path, *, keep_runs: int, keep_logs: int, live: set[str], now: float
) -> CleanupPlan:
    """Decide which run folders of ``reports`` and logs of ``logs`` go; nothing is changed.

    The ``keep_runs`` newest ``run_*`` folders and ``keep_logs`` newest ``*.log`` files stay, and
    so do those of the ``live`` run ids and logs modified less than ``RECENT_LOG_S`` before ``now``.
    Raises ``UsageError`` when a directory is a file or neither directory exists."""
    check_dirs(reports, logs)
    plan = CleanupPlan(reports, logs)
    if reports.is_dir():
        run_dirs = [p for p in reports.iterdir() if p.name.startswith("run_") and p.name not in PROTECTED and p.is_dir()]
        for index, path in enumerate(newest_first(run_dirs)):
            run_id = path.name[len("run_") :]
            if index < keep_runs:
                plan.kept_runs += 1
                continue
            if run_id in live:
                plan.kept_runs += 1
                plan.notes.append(f"keep {path}: run {run_id} is still running")
                continue
            plan.removals.append(Removal(path, size_of(path), "run"))
    else:
        plan.notes.append(f"no reports directory {reports}: no run folders to clean")

    if logs.is_dir():
        log_files = [p for p in logs.iterdir() if p.suffix == ".log" and (p.is_file() or p.is_symlink())]
        for index, path in enumerate(newest_first(log_files)):
            if index < keep_logs:
                plan.kept_logs += 1
                continue
            if path.stem in live:
                plan.kept_logs += 1
                plan.notes.append(f"keep {path}: run {path.stem} is still running")
                continue
            if now - path.lstat().st_mtime < RECENT_LOG_S:
                plan.kept_logs += 1
                plan.notes.append(f"keep {path}: written in the last {RECENT_LOG_S:.0f} s (a run may still be using it)")
                continue
            plan.removals.append(Removal(path, size_of(path), "log"))
    else:
        plan.notes.append(f"no logs directory {logs}: no logs to clean")
    return plan


def apply_cleanup(plan: CleanupPlan, *, dry_run: bool = False) -> list[str]:
    """Remove every planned path (none with ``dry_run``); return one line per removal, in order."""
    verb = "would remove" if dry_run else "removed"
    lines = []
    for r in plan.removals:
        if not dry_run:
            remove(r.path)
        lines.append(f"{verb} {r.path} ({r.size} bytes)")
    return lines


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``scripts/cleanup.py``."""
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Keep the newest reports/run_* folders and logs; remove older ones.",
    )
    p.add_argument("--keep-runs", type=non_negative_int, default=2, help="run report folders to keep (default 2)")
    p.add_argument("--keep-logs", type=non_negative_int, default=5, help="log files to keep (default 5)")
    p.add_argument("--dry-run", action="store_true", help="print what would be removed; remove nothing")
    p.add_argument("--reports-dir", default=None, help="reports root (default: REPORTS_DIR from env/.env, else reports)")
    p.add_argument("--logs-dir", default=None, help="logs directory (default: LOGS_DIR from env/.env, else logs)")
    p.add_argument(
        "--db", default=None,
        help="database (file or postgresql:// URL) to recognise running runs (default: DB_URL, DB_PATH, "
             "else storage/crupto.db)",
    )
    return p


def cleanup(args: argparse.Namespace, now: float) -> int:
    """Resolve the directories, plan, print the plan's notes, remove (unless ``--dry-run``), print a summary."""
    reports = Path(setting(args.reports_dir, "REPORTS_DIR", "reports"))
    logs = Path(setting(args.logs_dir, "LOGS_DIR", "logs"))
    check_dirs(reports, logs)  # before the database is read
    live, note = live_runs(args.db, now)
    print(note)
    plan = plan_cleanup(reports, logs, keep_runs=args.keep_runs, keep_logs=args.keep_logs, live=live, now=now)
    for line in plan.notes:
        print(line)
    for line in apply_cleanup(plan, dry_run=args.dry_run):
        print(line)
    verb = "would remove" if args.dry_run else "removed"
    print(
        f"{'dry run: ' if args.dry_run else ''}{verb} {plan.run_folders} run folder(s) and {plan.log_files} log(s), "
        f"{plan.bytes} bytes; kept {plan.kept_runs} run folder(s) in {reports} and {plan.kept_logs} log(s) in {logs}"
        + ("; nothing was changed" if args.dry_run else "")
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Clean up; exit 0 on success, 2 on bad input, 1 when a path cannot be removed."""
    args = build_parser().parse_args(argv)
    try:
        return cleanup(args, time.time())
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot remove {exc.filename}: {exc.strerror or exc}; check its permissions", file=sys.stderr)
        return 1
