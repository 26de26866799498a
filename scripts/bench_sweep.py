#!/usr/bin/env python3
"""Benchmark: a parameter sweep on Ray against the same replays run one after another.

    python scripts/bench_sweep.py [--workers 2] [--data ../shared/data/BYBIT_*_5m.csv]

Runs the parity scenario's SMA crossover for 8 combinations (fast 5/10 x slow 20/30/40/60):
first as 8 single replays (`python -m prod_core.runner --feed replay`), one after another,
then as one `python -m prod_core.cli sweep` on a local Ray; prints both wall times (Ray's
start-up included), their ratio, and whether every combination ended with the same fills
and equity both ways.
"""

from __future__ import annotations

import argparse
import glob
import itertools
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SCENARIO = REPO / "configs" / "scenarios" / "sma_parity"
FINAL = re.compile(r"^replay: bars=(\d+) fills=(\d+) engine_s=[\d.]+ equity=([\d.]+)$", re.M)
GRID = {"fast": [5, 10], "slow": [20, 30, 40, 60]}


def _env(tmp: Path, db: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALERT_TEST_")}
    env.update(ENV_FILE=str(tmp / "no.env"), DB_PATH=str(tmp / db), REPORTS_DIR=str(tmp / "reports"),
               LOGS_DIR=str(tmp / "logs"), LOG_LEVEL="WARNING", CRUPTO_PROGRESS="0")
    return env


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--data", nargs="+", default=sorted(glob.glob(str(REPO.parent / "shared/data/BYBIT_*_5m.csv"))))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="crupto-bench-sweep-") as t:
        tmp = Path(t)
        gov = yaml.safe_load((SCENARIO / "governance.yaml").read_text())
        single: dict[tuple[int, int], tuple[str, str]] = {}
        t0 = time.perf_counter()
        for fast, slow in itertools.product(GRID["fast"], GRID["slow"]):
            cfg = tmp / f"cfg_{fast}_{slow}"
            cfg.mkdir()
            (cfg / "symbols.yaml").write_text((SCENARIO / "symbols.yaml").read_text())
            gov["strategies"]["sma_parity"]["params"].update(fast=fast, slow=slow)
            (cfg / "governance.yaml").write_text(yaml.safe_dump(gov, sort_keys=False))
            proc = subprocess.run([sys.executable, "-m", "prod_core.runner", "--feed", "replay", "--config-dir",
                                   str(cfg), "--port", "0", "--linger", "0", "--data", *args.data],
                                  cwd=REPO, env=_env(tmp, f"s_{fast}_{slow}.db"), capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"single replay failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
            _bars, fills, equity = FINAL.search(proc.stdout).groups()
            single[(fast, slow)] = (fills, equity)
        serial = time.perf_counter() - t0
        (tmp / "grid.yaml").write_text(yaml.safe_dump({"strategy": "sma_parity", "params": GRID}))
        t1 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "prod_core.cli", "sweep", "--grid", str(tmp / "grid.yaml"),
                               "--config-dir", str(SCENARIO), "--workers", str(args.workers), "--out",
                               str(tmp / "out"), "--data", *args.data],
                              cwd=REPO, env=_env(tmp, "driver.db"), capture_output=True, text=True)
        swept = time.perf_counter() - t1
        if proc.returncode != 0:
            raise SystemExit(f"sweep failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
        import pyarrow.parquet as pq

        rows = pq.read_table(tmp / "out" / "results.parquet").to_pylist()
        same = all((str(r["fills"]), f"{r['equity_end']:.2f}") == single[(int(r["param_fast"]), int(r["param_slow"]))]
                   for r in rows)
    print(f"data: {len(args.data)} file(s); 8 combinations of the parity scenario's SMA crossover")
    print(f"one after another: {serial:.1f} s (8 x `python -m prod_core.runner --feed replay`)")
    print(f"sweep on local Ray, {args.workers} workers: {swept:.1f} s (Ray start-up included)")
    print(f"speed-up: {serial / swept:.2f}x; identical fills and equity for every combination: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
