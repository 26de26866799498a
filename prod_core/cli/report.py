"""`report`: write the report folder of any run, read back from the database.

    python -m prod_core.cli report [--run-id ID] [--out reports] [--logs-dir logs] [--no-pictures]

Works for every run the database holds: finished, failed, crashed, or SIGKILLed (still
recorded ``running``; its summary says so). The folder is ``<out>/run_<id>/`` as the runner
writes it at a clean stop: tables (CSV + Parquet), summary.md with its pictures,
summary.json, series/ and run.log (copied from ``<logs-dir>/<id>.log`` when present).
``summary_latest.md`` is refreshed only when the run is the newest finished run, so it never
shows a running one. The report is recorded in the ``exports`` table.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from prod_core.cli.common import actor, liveness, open_storage
from prod_core.configs import load_settings
from prod_core.runner.account import host_name, pid_alive


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="write reports/run_<id>/ (tables, summary.md with pictures) for any run")
    p.add_argument("--run-id", default=None, help="the run (default: the latest run, whatever its status)")
    p.add_argument("--out", default=None, help="reports root (default: REPORTS_DIR from env/.env, else reports)")
    p.add_argument("--logs-dir", default=None, help="where <run_id>.log is (default: LOGS_DIR, else logs)")
    p.add_argument("--no-pictures", action="store_true", help="skip the PNG pictures (numbers and series only)")
    p.set_defaults(func=run)


def run(args) -> int:
    from prod_core.reports import write_run_report

    settings = load_settings()
    out = Path(args.out or settings.reports_dir)
    logs_dir = Path(args.logs_dir or settings.logs_dir)
    if out.exists() and not out.is_dir():
        print(f"error: --out {out} is a file, not a directory: pass a reports directory", file=sys.stderr)
        return 2
    with open_storage(args) as storage:
        if args.run_id:
            run_row = storage.get_run(args.run_id)
            if run_row is None:
                recent = ", ".join(r["run_id"] for r in storage.list_runs(5)) or "none"
                print(f"error: run id {args.run_id!r} is not in database {storage.path} (latest runs: {recent}); "
                      "pass one of them, or omit --run-id for the latest run", file=sys.stderr)
                return 2
        else:
            runs = storage.list_runs(1)
            if not runs:
                print(f"error: database {storage.path} has no run yet; start one with scripts/run_paper.sh",
                      file=sys.stderr)
                return 2
            run_row = runs[0]
        run_id = run_row["run_id"]
        now = time.time()
        state, age = liveness(run_row, now)
        if state == "alive":  # a fresh heartbeat, but is its runner still there?
            lease = next((r for r in storage.query("SELECT pid, host FROM leases WHERE run_id = ?", (run_id,))), None)
            if lease is not None and lease["host"] == host_name() and not pid_alive(int(lease["pid"])):
                state = f"killed: its runner (pid {lease['pid']}) is gone"
        log_path = logs_dir / f"{run_id}.log"
        folder = write_run_report(storage, run_id, out, log_path if log_path.is_file() else None,
                                  pictures=not args.no_pictures)
        storage.record_export(run_id, kind="report", path=str(folder), rows=0, ts=now, actor=actor())
    note = {"alive": "a snapshot: the run is still running (its runner rewrites the report at its stop)",
            "crashed/unresponsive": f"the run has no clean stop (no heartbeat for {age or 0:.0f} s: killed?)"}.get(
        state, f"{state}; the run has no clean stop" if state.startswith("killed") else f"status {run_row['status']}")
    print(f"report of run {run_id} written to {folder} ({note})")
    latest = out / "summary_latest.md"
    if latest.is_file() and f"`run_{run_id}`" in latest.read_text(encoding="utf-8").splitlines()[0]:
        print(f"{latest} points at this run")
    return 0
