"""`sweep`: one replay per parameter combination (and per symbol and/or date window), run as Ray tasks.

    python -m prod_core.cli sweep --data ../shared/data/BYBIT_*_5m.csv --grid sweep.yaml \\
        [--config-dir configs] [--workers 2] [--out reports/sweep_<time>] [--journal] [--top 20] \\
        [--db PATH|postgresql://URL]

The grid (YAML):

    strategy: sma_parity        # a strategy configured in <config-dir>/governance.yaml
    params:                     # every combination of these lists is replayed
      fast: [5, 8, 10, 12]
      slow: [30, 40]
    split: none                 # or symbol: one replay per combination and symbol;
                                # window: one per combination and date window;
                                # [symbol, window]: one per combination, symbol and window
    window_days: 30             # with a window split: consecutive UTC windows of 30 days by bar
                                # timestamp, from the UTC midnight of the first bar (the last one
                                # may be shorter); a window without rows gets no replay

A local Ray with ``--workers`` processes, or the cluster at ``RAY_ADDRESS``. Results go to
``<out>/results.parquet`` and ``results.csv`` (one row per replay: parameters, symbol, trades,
R, drawdown, equity, status), ``summary.md`` (the ranked table and the wall times) and, with
``--journal``, every replay's journal in ``journal.parquet``. A window split adds each row's
``window_start`` and ``window_end`` (its first and last UTC day, ISO dates) to the results and
the ranked table.

``--db PATH`` (a SQLite file) or ``--db postgresql://...`` also writes the results to that
database (opened with ``Storage``, so its schema is migrated first): one ``sweep_results`` row
per replay (sweep_id, task_id, params_json, symbol, window_start, window_end, bars,
closed_trades, fills, pnl_r, max_dd_r, equity_end, status, error, created_at) and, with
``--journal``, every journal row in ``sweep_journal`` (sweep_id, task_id, seq, ts_ms, kind and
the whole row as row_json). The sweep id (printed) is the UTC start time and the name of the
``--out`` folder, e.g. ``20260101T120000Z-sweep_x``. The database is opened (and migrated)
before any replay runs, so a bad ``--db`` stops the sweep at once. Exit 0 when every replay
succeeded, 1 when one failed (it is listed with its error), 2 on bad input.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from prod_core.configs import load_settings


def add_parser(sub) -> None:
    p = sub.add_parser("sweep", help="replay a grid of strategy parameters as Ray tasks, ranked by R")
    p.add_argument("--data", nargs="+", required=True, help="candle files (CSV or Parquet), as for --feed replay")
    p.add_argument("--grid", required=True,
                   help="the grid YAML: strategy, params (lists), split (none|symbol|window|[symbol, window]), "
                        "window_days")
    p.add_argument("--config-dir", default=None, help="config dir (default: CONFIG_DIR, else configs)")
    p.add_argument("--workers", type=int, default=2, help="local Ray worker processes (ignored with RAY_ADDRESS)")
    p.add_argument("--out", default=None, help="result folder (default: <REPORTS_DIR>/sweep_<UTC time>)")
    p.add_argument("--journal", action="store_true", help="also keep every replay's journal (journal.parquet)")
    p.add_argument("--db", default=None,
                   help="also write the results (and --journal rows) to this database: a SQLite path or "
                        "postgresql://URL (tables sweep_results, sweep_journal)")
    p.add_argument("--top", type=int, default=20, help="rows of the ranked table to print")
    p.set_defaults(func=run)


def _fmt(v: Any, spec: str) -> str:
    return format(v, spec) if isinstance(v, (int, float)) and not isinstance(v, bool) else "-"


def ranked(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Successful replays by pnl in R (then the smaller drawdown), failed ones last."""
    ok = [r for r in results if r.get("status") == "ok"]
    ok.sort(key=lambda r: (-(r.get("pnl_cum_r_end") or 0.0), r.get("max_dd_r") or 0.0, r["task_id"]))
    return ok + [r for r in results if r.get("status") != "ok"]


def table(rows: list[dict[str, Any]], keys: list[str]) -> list[str]:
    windows = any(r.get("window_start") for r in rows)
    out = ["| rank | task | " + " | ".join(keys) + " | symbol | " + ("window | " if windows else "")
           + "pnl, R | max dd, R | trades | win rate | fills | equity end | status |",
           "|---" * (len(keys) + 10 + windows) + "|"]
    for i, r in enumerate(rows, 1):
        params = r.get("params") or {}
        shown = f" {r.get('window_start')}..{r.get('window_end')} |" if windows else ""
        out.append(f"| {i} | {r['task_id']} | " + " | ".join(str(params.get(k)) for k in keys)
                   + f" | {r.get('symbol') or 'all'} |{shown} {_fmt(r.get('pnl_cum_r_end'), '+.3f')} | "
                     f"{_fmt(r.get('max_dd_r'), '.3f')} | {r.get('closed_trades', '-')} | {_fmt(r.get('win_rate'), '.0%')} | "
                     f"{r.get('fills', '-')} | {_fmt(r.get('equity_end'), '.2f')} | "
                     f"{r.get('status')}{': ' + r['error'] if r.get('error') else ''} |")
    return out


def write_results(out: Path, results: list[dict[str, Any]], keys: list[str], summary: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    out.mkdir(parents=True, exist_ok=True)
    rows = []
    journal_rows = []
    for r in results:
        flat = {k: v for k, v in r.items() if k not in ("params", "journal")}
        flat["params_json"] = json.dumps(r.get("params") or {}, sort_keys=True, default=str)
        for k in keys:
            flat[f"param_{k}"] = str((r.get("params") or {}).get(k))
        rows.append(flat)
        for j in r.get("journal") or ():
            journal_rows.append({"task_id": r["task_id"], **{k: (json.dumps(v) if isinstance(v, (dict, list)) else v)
                                                             for k, v in j.items()}})
    columns = sorted({k for row in rows for k in row})
    tbl = pa.Table.from_pylist([{c: row.get(c) for c in columns} for row in rows])
    pq.write_table(tbl, out / "results.parquet")
    import pyarrow.csv as pacsv

    pacsv.write_csv(tbl, out / "results.csv")
    if journal_rows:
        pq.write_table(pa.Table.from_pylist(journal_rows), out / "journal.parquet")
    (out / "summary.md").write_text(summary, encoding="utf-8")


def write_db(target: str, sweep_id: str, results: list[dict[str, Any]]) -> str:
    """The results (and journal rows) into ``sweep_results`` / ``sweep_journal``; returns the shown target
    (a URL without its password)."""
    from prod_core.storage import Storage

    rows, journal = [], []
    for r in results:
        rows.append({**r, "params_json": json.dumps(r.get("params") or {}, sort_keys=True, default=str),
                     "pnl_r": r.get("pnl_cum_r_end")})
        for j in r.get("journal") or ():
            journal.append({"task_id": r["task_id"], "seq": j.get("seq"), "ts_ms": j.get("ts_ms"), "kind": j.get("kind"),
                            "row_json": json.dumps(j, sort_keys=True, default=str)})
    with Storage(target) as storage:
        storage.record_sweep(sweep_id, rows, journal)
        return storage.path


def run(args) -> int:
    from prod_core.runner.sweep import RayUnavailable, SweepError, plan_sweep, run_sweep
    from prod_core.storage import Storage, StorageError
    from prod_core.telemetry.progress import progress

    settings = load_settings()
    config_dir = Path(args.config_dir or settings.config_dir)
    out = Path(args.out) if args.out else Path(settings.reports_dir) / time.strftime("sweep_%Y%m%dT%H%M%SZ", time.gmtime())
    if args.workers < 1:
        print(f"error: --workers must be >= 1, got {args.workers}", file=sys.stderr)
        return 2
    try:
        plan = plan_sweep(Path(args.grid), config_dir, [Path(p) for p in args.data])
    except SweepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    keys = list(plan.grid)
    sweep_id = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{out.name}"
    if args.db:
        try:
            with Storage(args.db):  # fail before the replays: a bad path, an unreachable server, a newer schema
                pass
        except StorageError as exc:  # the message names the database without its password
            print(f"error: --db: {exc}", file=sys.stderr)
            return 2
    print(f"sweep: {len(plan.tasks)} replay(s) of {plan.strategy} over {', '.join(keys)} on "
          f"{len(plan.data)} file(s); {'RAY_ADDRESS' if _cluster() else f'local Ray, {args.workers} worker(s)'}",
          flush=True)
    t0 = time.perf_counter()
    try:
        with progress(len(plan.tasks), "sweep", "replay") as bar:
            results = run_sweep(plan, workers=args.workers, journal=args.journal, on_result=lambda _r: bar.update(1))
    except RayUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    wall = time.perf_counter() - t0
    serial = sum(r.get("wall_s") or 0.0 for r in results)
    failed = [r for r in results if r.get("status") != "ok"]
    order = ranked(results)
    lines = [f"# Sweep of {plan.strategy}", "",
             f"{len(results)} replay(s), {len(failed)} failed; grid: "
             + ", ".join(f"{k}={v}" for k, v in plan.grid.items()), "",
             f"Wall time {wall:.1f} s; the replays themselves took {serial:.1f} s in all (what running them one "
             f"after another would take, start-up included): {serial / wall if wall else 0:.2f}x.", "",
             *table(order, keys), ""]
    summary = "\n".join(lines)
    write_results(out, results, keys, summary)
    db_note = ""
    if args.db:
        try:
            shown = write_db(args.db, sweep_id, results)
        except StorageError as exc:  # the message names the database without its password
            print(f"error: --db: {exc}", file=sys.stderr)
            return 2
        db_note = f"; sweep_results{' and sweep_journal' if args.journal else ''} in {shown} (sweep id {sweep_id})"
    print("\n".join(table(order[: args.top], keys)))
    print(f"sweep: {len(results) - len(failed)} ok, {len(failed)} failed; wall {wall:.1f} s vs {serial:.1f} s of "
          f"replays one after another; results in {out}/results.parquet, summary.md{db_note}")
    for r in failed:
        print(f"error: task {r['task_id']} {json.dumps(r.get('params'), default=str)} failed: {r['error']}",
              file=sys.stderr)
    return 1 if failed else 0


def _cluster() -> bool:
    import os

    return bool(os.environ.get("RAY_ADDRESS"))
