#!/usr/bin/env python3
"""Benchmark: the parity scenario replayed through the WHOLE pipeline, against a bare loop.

One run prints:
- the engine: `python -m prod_core.runner --feed replay` on the parity scenario
  (configs/scenarios/sma_parity) with SQLite storage and the metrics exporter on, run as a
  child process exactly as an operator runs it; bars/s from the runner's own final line
  (`engine_s`: the bar loop, feed reading included), and the child's peak RSS; the storage
  writer process's peak RSS and how long its last flushes took after the loop
  (storage/writer.py; `CRUPTO_WRITE_BEHIND=0` keeps the inserts in the runner);
- the build the hot modules came from: pure Python, or the compiled build of `make compiled`
  (prod_core/compiled.py; `CRUPTO_COMPILED=0` measures pure Python with a build present);
- the bare loop: the same rule (SMA 10/30 crossover, next-open fills, 0.1% fee) as ~40
  lines of plain Python over the same bars in this process, and the ratio;
- the top frames of a cProfile of the engine's bar loop (a second child run; cProfile
  inflates call-heavy code, so read it for where time goes, not for the absolute figure).

    python scripts/bench_replay.py                       # ../shared/data Bybit 5m: 129,600 bars
    python scripts/bench_replay.py --copies 8            # 8 time-shifted copies: 1,036,800 bars
    python scripts/bench_replay.py --copies 8 --parquet --no-profile

``--copies N`` writes N back-to-back copies of each file (each shifted by the file's span)
into a temp dir, one file per symbol, so the set keeps one stream per symbol.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
SCENARIO = REPO / "configs" / "scenarios" / "sma_parity"
FINAL = re.compile(r"^replay: bars=(\d+) fills=(\d+) engine_s=([\d.]+) equity=([\d.]+)$", re.M)


def load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(ts_ms int64[n], ohlcv float64[n, 5]) of a canonical candle CSV or Parquet file."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    table = pq.read_table(path) if path.suffix == ".parquet" else pacsv.read_csv(path)
    ts = table.column("ts_ms").to_numpy().astype(np.int64)
    ohlcv = np.column_stack([table.column(c).to_numpy().astype(np.float64)
                             for c in ("open", "high", "low", "close", "volume")])
    return ts, ohlcv


def build_copies(files: list[Path], copies: int, out: Path, parquet: bool) -> list[Path]:
    """Each file repeated ``copies`` times back to back (shifted by its span + one bar)."""
    written = []
    for f in files:
        ts, ohlcv = load(f)
        step = int(ts[1] - ts[0]) if len(ts) > 1 else 60_000
        span = int(ts[-1] - ts[0]) + step
        all_ts = np.concatenate([ts + k * span for k in range(copies)])
        all_v = np.concatenate([ohlcv] * copies)
        target = out / (f.stem + (".parquet" if parquet else ".csv"))
        if parquet:
            import pyarrow as pa
            import pyarrow.parquet as pq

            cols = {"ts_ms": all_ts, **{c: all_v[:, i] for i, c in enumerate(("open", "high", "low", "close", "volume"))}}
            pq.write_table(pa.table(cols), target, row_group_size=65_536)  # a row group is read whole
        else:
            with target.open("w") as fh:
                fh.write("ts_ms,open,high,low,close,volume\n")
                for t, (o, h, lo, c, v) in zip(all_ts.tolist(), all_v.tolist()):
                    fh.write(f"{t},{o!r},{h!r},{lo!r},{c!r},{v!r}\n")
        written.append(target)
    return written


def bare_loop(files: list[Path]) -> tuple[float, int, float, int]:
    """The parity rule in plain Python floats over the merged bars: (seconds, fills, equity, bars)."""
    streams = [load(f) for f in files]
    ts = np.concatenate([s[0] for s in streams])
    sym = np.concatenate([np.full(len(s[0]), i) for i, s in enumerate(streams)])
    opens = np.concatenate([s[1][:, 0] for s in streams])
    closes = np.concatenate([s[1][:, 3] for s in streams])
    order = np.lexsort((sym, ts))
    rows = list(zip(sym[order].tolist(), opens[order].tolist(), closes[order].tolist()))
    qty = [float(f"{100.0 / s[1][0, 3]:.3g}") for s in streams]
    last_close = [float(s[1][-1, 3]) for s in streams]

    t0 = time.perf_counter()
    n = len(streams)
    windows: list[list[float]] = [[] for _ in range(n)]
    prev_d: list[float | None] = [None] * n
    pending = [0] * n  # +1 buy / -1 sell at this symbol's next open
    held = [False] * n
    cash, fills = 10_000.0, 0
    for s, o, c in rows:
        if pending[s]:
            if pending[s] > 0:
                cash -= qty[s] * o * 1.001
                held[s] = True
            else:
                cash += qty[s] * o * 0.999
                held[s] = False
            pending[s] = 0
            fills += 1
        w = windows[s]
        w.append(c)
        if len(w) > 30:
            del w[0]
        if len(w) == 30:
            d = sum(w[-10:]) / 10 - sum(w) / 30
            p = prev_d[s]
            if p is not None:
                if not held[s] and d > 0 >= p:
                    pending[s] = 1
                elif held[s] and d < 0 <= p:
                    pending[s] = -1
            prev_d[s] = d
    equity = cash + sum(qty[i] * last_close[i] for i in range(n) if held[i])
    return time.perf_counter() - t0, fills, equity, len(rows)


def run_engine(files: list[Path], config_dir: Path, tmp: Path, profile: int = 0) -> tuple[str, float]:
    """The runner as a child process; returns (its output, its peak RSS in MiB).

    The child reports its own ``VmHWM`` (the peak resident set of its process image): the
    ``ru_maxrss`` of a child also counts the parent's pages it was forked from."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALERT_TEST_")}
    env.update(ENV_FILE=str(tmp / "no.env"), DB_PATH=str(tmp / "bench.db"), REPORTS_DIR=str(tmp / "reports"),
               LOGS_DIR=str(tmp / "logs"), LOG_LEVEL="WARNING")
    env.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")  # as `python -m prod_core.runner` sets it
    args = ["--feed", "replay", "--config-dir", str(config_dir), "--port", "0", "--linger", "0",
            "--data", *map(str, files)]
    cmd = [sys.executable, __file__, "--engine-child", str(profile), "--", *args]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise SystemExit(f"engine run failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    m = re.search(r"^VmHWM (\d+)$", proc.stdout, re.M)
    return proc.stdout, int(m.group(1)) / 1024.0 if m else float("nan")


def rss_split(out: str) -> tuple[float, float]:
    """(anonymous, file-backed) resident MiB of the engine child at its end (``RSSEND``)."""
    m = re.search(r"^RSSEND (\d+) (\d+)$", out, re.M)
    return (int(m.group(1)) / 1024.0, int(m.group(2)) / 1024.0) if m else (float("nan"), float("nan"))


def writer_figures(out: str) -> tuple[float, float]:
    """(the storage writer process's peak RSS in MiB, the wait for its last flushes after the loop in s)."""
    m = re.search(r"^WRITER (\d+) ([\d.]+)$", out, re.M)
    return (int(m.group(1)) / 1024.0, float(m.group(2))) if m else (0.0, 0.0)


def engine_child(top: int, argv: list[str]) -> int:
    """``python -m prod_core.runner`` in this process (with cProfile on its bar loop when ``top`` > 0);
    then the top frames and this process's peak RSS (kB)."""
    import cProfile
    import pstats

    sys.path.insert(0, str(REPO))
    from prod_core.runner import app

    profiler = cProfile.Profile() if top else None
    if profiler is not None:
        loop = app.PaperRunner._loop

        def profiled(self, *a, **k):
            profiler.enable()
            try:
                return loop(self, *a, **k)
            finally:
                profiler.disable()

        app.PaperRunner._loop = profiled
    from prod_core.storage.sqlite import Storage

    stop_writer = Storage._stop_writer
    tail = [0.0]
    writer_kib = [0]

    def timed_stop(self):  # the wait for the writer process's last flushes, after the bar loop
        t0 = time.perf_counter()
        w = self._writer
        try:
            return stop_writer(self)
        finally:
            tail[0] += time.perf_counter() - t0
            writer_kib[0] = max(writer_kib[0], w.peak_rss_kib if w is not None else 0)

    Storage._stop_writer = timed_stop
    code = app.main(argv)
    # the storage writer process (storage/writer.py): its own peak RSS (VmHWM), told as it exits
    print(f"WRITER {writer_kib[0]} {tail[0]:.3f}", flush=True)
    if profiler is not None:
        _print_profile(pstats.Stats(profiler), top)
    from prod_core import compiled

    print(f"BUILD {compiled.describe()}", flush=True)
    with open("/proc/self/status") as fh:
        status = dict(line.split(":", 1) for line in fh if ":" in line)
    kib = {key: status.get(key, "0 kB").split()[0] for key in ("VmHWM", "RssAnon", "RssFile")}
    # the resident set at the end, split: the process's own memory, and the pages of mapped files
    # (shared libraries: pyarrow alone maps ~70 MiB of them on some kernels, docs/PERFORMANCE.md)
    print(f"RSSEND {kib['RssAnon']} {kib['RssFile']}", flush=True)
    print(f"VmHWM {kib['VmHWM']}", flush=True)
    return code


def _print_profile(stats, top: int) -> None:
    rows = []
    for (filename, line, name), (_cc, nc, tt, ct, _) in stats.stats.items():
        where = os.path.relpath(filename, REPO) if filename.startswith(str(REPO)) else Path(filename).name
        rows.append((tt, ct, nc, f"{where}:{line}({name})"))
    rows.sort(reverse=True)
    total = sum(r[0] for r in rows) or 1.0
    print("PROFILE-BEGIN")
    print(f"  {'self s':>7} {'self %':>6} {'cum s':>7} {'calls':>9}  frame")
    for tt, ct, nc, label in rows[:top]:
        print(f"  {tt:7.3f} {tt / total:6.1%} {ct:7.3f} {nc:9d}  {label}")
    print("PROFILE-END")


def main() -> int:
    if "--engine-child" in sys.argv:
        i = sys.argv.index("--engine-child")
        return engine_child(int(sys.argv[i + 1]), sys.argv[i + 3:])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", nargs="+", default=None,
                    help="candle files (default: ../shared/data/BYBIT_*_5m.csv)")
    ap.add_argument("--copies", type=int, default=1, help="time-shifted copies of each file (8: ~1M bars)")
    ap.add_argument("--parquet", action="store_true", help="write the copies as Parquet instead of CSV")
    ap.add_argument("--config-dir", default=str(SCENARIO), help="scenario config dir (default: the parity scenario)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="engine runs, the best one reported (this VM's speed drifts between runs; default 3)")
    ap.add_argument("--profile", type=int, default=15, help="top frames of a cProfile run to print (0: none)")
    ap.add_argument("--no-profile", dest="profile", action="store_const", const=0)
    args = ap.parse_args()

    files = [Path(p) for p in (args.data or sorted(glob.glob(str(DEFAULT_DATA / "BYBIT_*_5m.csv"))))]
    if not files:
        print(f"no data: pass --data FILES or put the shared set at {DEFAULT_DATA}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="crupto-bench-") as tmp_name:
        tmp = Path(tmp_name)
        if args.copies > 1 or args.parquet:
            (tmp / "data").mkdir()
            files = build_copies(files, args.copies, tmp / "data", args.parquet)
        runs = []
        for i in range(max(1, args.repeat)):
            out, rss_mb = run_engine(files, Path(args.config_dir), tmp / f"run{i}")
            m = FINAL.search(out)
            if not m:
                print(out[-2000:], file=sys.stderr)
                return 1
            runs.append((float(m.group(3)), int(m.group(1)), int(m.group(2)), float(m.group(4)), rss_mb,
                         *writer_figures(out), *rss_split(out)))
            build = re.search(r"^BUILD (.+)$", out, re.M)
        engine_s, bars, fills, equity = min(runs)[:4]
        rss_mb = max(r[4] for r in runs)
        writer_mb = max(r[5] for r in runs)
        tail_s = max(r[6] for r in runs)
        anon_mb = max(r[7] for r in runs)
        file_mb = max(r[8] for r in runs)
        times = " / ".join(f"{r[0]:.3f}" for r in runs)
        median_s = sorted(r[0] for r in runs)[len(runs) // 2]
        # the bare loop takes a fraction of a second: the best of three runs steadies the reference
        bare_s, bare_fills, bare_equity, bare_bars = min((bare_loop(files) for _ in range(3)), key=lambda r: r[0])
        engine_rate, bare_rate = bars / engine_s, bare_bars / bare_s
        print(f"data: {len(files)} files, {bars:,} bars (copies {args.copies}, "
              f"{'parquet' if args.parquet else files[0].suffix[1:]}); scenario {os.path.relpath(args.config_dir, REPO)}")
        print(f"engine: {engine_rate:,.0f} bars/s ({engine_s:.3f} s, best of {len(runs)}: {times} s, median "
              f"{bars / median_s:,.0f} bars/s; fills {fills:,}, equity {equity:,.2f}; SQLite storage + metrics "
              f"exporter on; peak RSS {rss_mb:.0f} MiB; at the end {anon_mb:.0f} MiB anonymous + {file_mb:.0f} MiB "
              f"of mapped files)")
        if writer_mb:
            print(f"storage writer process: peak RSS {writer_mb:.0f} MiB (runner + writer <= {rss_mb + writer_mb:.0f} "
                  f"MiB); its last flushes took {tail_s:.3f} s after the loop (at most, not in engine_s)")
        print(f"build: {build.group(1) if build else 'unknown'}")
        print(f"bare loop: {bare_rate:,.0f} bars/s ({bare_s:.3f} s, best of 3; fills {bare_fills:,}, equity "
              f"{bare_equity:,.2f}; float sums, same bars)")
        print(f"engine / bare loop: {engine_rate / bare_rate:.3f} (the bare loop is {bare_rate / engine_rate:.1f}x faster)")
        if args.profile:
            out, _ = run_engine(files, Path(args.config_dir), tmp / "profile", profile=args.profile)
            block = out[out.find("PROFILE-BEGIN") + len("PROFILE-BEGIN\n"):out.find("PROFILE-END")]
            print(f"top {args.profile} frames of the engine's bar loop (cProfile, self time):")
            if build and build.group(1).startswith("compiled"):
                print("  (the compiled modules do not show: cProfile sees Python frames only; "
                      "CRUPTO_COMPILED=0 profiles them as Python, py-spy --native as compiled)")
            print(block.rstrip())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
