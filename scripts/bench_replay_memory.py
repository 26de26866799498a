#!/usr/bin/env python3
"""Benchmark: peak memory and speed of a whole runner replay over ~1M real bars.

Builds a data set from time-shifted copies of the shared real candles
(``BYBIT_*_5m.csv``: ``--copies`` per symbol, copy k shifted by k times the span of its
file, so every symbol is one long gap-free series split over several files), written to
a temp dir as CSV (or Parquet with ``--parquet``). Then runs

    python -m prod_core.runner --feed replay --data <files> --port 0 --linger 0

as a child process with DB_PATH / REPORTS_DIR / LOGS_DIR in the temp dir, and prints the
bars, engine seconds and bars/s of the runner's final line
(``replay: bars=N fills=M engine_s=S equity=E``), the wall time of the child and its peak
RSS (``getrusage(RUSAGE_CHILDREN).ru_maxrss``).

``--stage feed`` runs only the feed in the child (build ``ReplayFeed.from_paths`` and
drain it, building every ``Bar``), to tell the feed's share of the runner's peak RSS.
``--repo`` runs another checkout's code (e.g. an export of main, for a before/after).

    python scripts/bench_replay_memory.py [--copies 8] [--parquet] [--stage runner|feed]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path("/work/shared/data")
FINAL = re.compile(r"replay: bars=(\d+) fills=(\d+) engine_s=([\d.]+) equity=([-\d.]+)")
HEADER = "ts_ms,open,high,low,close,volume"

FEED_ONLY = """
import sys, time
from prod_core.feeds.replay import ReplayFeed
t0 = time.perf_counter()
feed = ReplayFeed.from_paths(sys.argv[1:])
build = time.perf_counter() - t0
feed.start(0.0)
n = 0
t0 = time.perf_counter()
while not feed.exhausted:
    n += len(feed.poll(0.0))
print(f"feed: bars={n} build_s={build:.3f} drain_s={time.perf_counter() - t0:.3f}", flush=True)
"""


def read_source(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(ts int64, ohlcv float64 (n, 5)) of a canonical CSV with a header."""
    raw = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64)
    return raw[:, 0].astype(np.int64), raw[:, 1:6]


def write_copies(src: Path, out: Path, copies: int, parquet: bool) -> list[Path]:
    """``copies`` files of ``src``, copy k shifted by k spans (span = last - first + one bar)."""
    ts, ohlcv = read_source(src)
    span = int(ts[-1] - ts[0] + (ts[1] - ts[0]))
    stem = src.stem  # BYBIT_BTCUSDT_5m
    files = []
    for k in range(copies):
        shifted = ts + k * span
        if parquet:
            import pyarrow as pa
            import pyarrow.parquet as pq

            path = out / f"{stem}_part{k}.parquet"
            cols = {"ts_ms": shifted} | {n: ohlcv[:, i] for i, n in enumerate(HEADER.split(",")[1:])}
            pq.write_table(pa.table(cols), path)
        else:
            path = out / f"{stem}_part{k}.csv"
            body = np.column_stack([shifted.astype(np.float64), ohlcv])
            np.savetxt(path, body, delimiter=",", header=HEADER, comments="",
                       fmt=["%d", "%.10g", "%.10g", "%.10g", "%.10g", "%.10g"])
        files.append(path)
    return files


def run_child(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[str, float, float]:
    """(stdout, wall seconds, peak RSS MiB) of a child process."""
    t0 = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"child exited with {proc.returncode}")
    rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    return proc.stdout, wall, rss_mb


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=8, help="time-shifted copies per symbol file")
    ap.add_argument("--parquet", action="store_true", help="write the data set as Parquet (default CSV)")
    ap.add_argument("--stage", choices=["runner", "feed"], default="runner",
                    help="runner: the whole replay; feed: only build and drain the ReplayFeed")
    ap.add_argument("--data-dir", type=Path, default=SHARED, help="where BYBIT_*_5m.csv are")
    ap.add_argument("--repo", type=Path, default=REPO, help="checkout whose code the child runs")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (printed)")
    args = ap.parse_args()

    sources = sorted(args.data_dir.glob("BYBIT_*_5m.csv"))
    if not sources:
        raise SystemExit(f"no BYBIT_*_5m.csv in {args.data_dir}")
    tmp = Path(tempfile.mkdtemp(prefix="crupto-bench-mem-"))
    try:
        data = tmp / "data"
        data.mkdir()
        files = [f for src in sources for f in write_copies(src, data, args.copies, args.parquet)]
        env = dict(os.environ, DB_PATH=str(tmp / "bench.db"), REPORTS_DIR=str(tmp / "reports"),
                   LOGS_DIR=str(tmp / "logs"), PYTHONPATH=str(args.repo.resolve()))
        if args.stage == "feed":
            argv = [sys.executable, "-c", FEED_ONLY, *map(str, files)]
        else:
            argv = [sys.executable, "-m", "prod_core.runner", "--feed", "replay", "--data", *map(str, files),
                    "--port", "0", "--linger", "0", "--log-level", "WARNING"]
        out, wall, rss_mb = run_child(argv, env, args.repo)
        fmt = "parquet" if args.parquet else "csv"
        print(f"data: {len(files)} {fmt} files ({len(sources)} symbols x {args.copies} copies); code: {args.repo}")
        if args.stage == "feed":
            line = next(ln for ln in out.splitlines() if ln.startswith("feed: "))
            print(line)
        else:
            m = next((FINAL.search(ln) for ln in reversed(out.splitlines()) if FINAL.search(ln)), None)
            if m is None:
                sys.stderr.write(out)
                raise SystemExit("no final 'replay: bars=...' line in the runner's output")
            bars, fills, engine_s = int(m.group(1)), int(m.group(2)), float(m.group(3))
            print(f"bars: {bars}  fills: {fills}  engine_s: {engine_s:.2f}  bars/s: {bars / engine_s:,.0f}")
        print(f"child wall: {wall:.2f} s  peak RSS: {rss_mb:.0f} MiB")
        if args.keep:
            print(f"kept: {tmp}")
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
