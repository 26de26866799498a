"""`sweep`: one replay per parameter combination (and per symbol), run as Ray tasks.

    python -m prod_core.cli sweep --data ../shared/data/BYBIT_*_5m.csv --grid sweep.yaml \\
        [--config-dir configs] [--workers 2] [--out reports/sweep_<time>] [--journal] [--top 20]

The grid (YAML):

    strategy: sma_parity        # a strategy configured in <config-dir>/governance.yaml
    params:                     # every combination of these lists is replayed
      fast: [5, 8, 10, 12]
      slow: [30, 40]
    split: none                 # or symbol: one replay per combination and symbol

A local Ray with ``--workers`` processes, or the cluster at ``RAY_ADDRESS``. Results go to
``<out>/results.parquet`` and ``results.csv`` (one row per replay: parameters, symbol, trades,
R, drawdown, equity, status), ``summary.md`` (the ranked table and the wall times) and, with
``--journal``, every replay's journal in ``journal.parquet``. Exit 0 when every replay
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
    p.add_argument("--grid", required=True, help="the grid YAML: strategy, params (lists), split (none|symbol)")
    p.add_argument("--config-dir", default=None, help="config dir (default: CONFIG_DIR, else configs)")
    p.add_argument("--workers", type=int, default=2, help="local Ray worker processes (ignored with RAY_ADDRESS)")
    p.add_argument("--out", default=None, help="result folder (default: <REPORTS_DIR>/sweep_<UTC time>)")
    p.add_argument("--journal", action="store_true", help="also keep every replay's journal (journal.parquet)")
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
    out = ["| rank | task | " + " | ".join(keys) + " | symbol | pnl, R | max dd, R | trades | win rate | fills | "
           "equity end | status |", "|---" * (len(keys) + 10) + "|"]
    for i, r in enumerate(rows, 1):
        params = r.get("params") or {}
        out.append(f"| {i} | {r['task_id']} | " + " | ".join(str(params.get(k)) for k in keys)
                   + f" | {r.get('symbol') or 'all'} | {_fmt(r.get('pnl_cum_r_end'), '+.3f')} | "
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


def run(args) -> int:
    from prod_core.runner.sweep import RayUnavailable, SweepError, plan_sweep, run_sweep
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
    print("\n".join(table(order[: args.top], keys)))
    print(f"sweep: {len(results) - len(failed)} ok, {len(failed)} failed; wall {wall:.1f} s vs {serial:.1f} s of "
          f"replays one after another; results in {out}/results.parquet, summary.md")
    for r in failed:
        print(f"error: task {r['task_id']} {json.dumps(r.get('params'), default=str)} failed: {r['error']}",
              file=sys.stderr)
    return 1 if failed else 0


def _cluster() -> bool:
    import os

    return bool(os.environ.get("RAY_ADDRESS"))
