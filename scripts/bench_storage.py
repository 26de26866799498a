#!/usr/bin/env python3
"""The parity replay on SQLite and on PostgreSQL, alternately: the storage backends' throughput.

    .venv/bin/python scripts/bench_storage.py            # 2 pairs on ../shared/data Bybit 5m
    .venv/bin/python scripts/bench_storage.py --pairs 3

PostgreSQL is a throwaway local server (prod_core.testing.pg: initdb + pg_ctl in a temp dir,
fsync off), a fresh database per run; SQLite a fresh file per run. Each line is the runner's
own final line (`engine_s`: the bar loop with storage, journal and metrics on).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
FILES = [DATA / f"BYBIT_{s}USDT_5m.csv" for s in ("BTC", "ETH", "SOL", "BNB", "XRP")]


def replay(where: dict[str, str]) -> str:
    tmp = tempfile.mkdtemp(prefix="crupto-bench-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALERT_TEST_") and k not in ("DB_URL", "DB_PATH")}
    env.update(ENV_FILE=f"{tmp}/none", REPORTS_DIR=f"{tmp}/reports", LOGS_DIR=f"{tmp}/logs", **where)
    out = subprocess.run([sys.executable, "-m", "prod_core.runner", "--feed", "replay", "--config-dir",
                          str(REPO / "configs" / "scenarios" / "sma_parity"), "--port", "0", "--linger", "0",
                          "--data", *map(str, FILES)], cwd=REPO, env=env, capture_output=True, text=True)
    m = re.search(r"^replay: bars=\d+ fills=\d+ engine_s=[\d.]+ equity=[\d.]+$", out.stdout, re.M)
    return m.group(0) if m else f"failed ({out.returncode}): {(out.stdout + out.stderr)[-800:]}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=2, help="SQLite/PostgreSQL pairs to run (default 2)")
    args = ap.parse_args()
    import psycopg

    from prod_core.testing.pg import ThrowawayPostgres

    with ThrowawayPostgres() as pg:
        for k in range(args.pairs):
            print("sqlite    ", replay({"DB_PATH": tempfile.mkdtemp(prefix="crupto-bench-") + "/crupto.db"}), flush=True)
            with psycopg.connect(pg.url, autocommit=True) as admin:
                admin.execute(f"CREATE DATABASE bench{k}")
            print("postgresql", replay({"DB_URL": pg.url.rsplit("/", 1)[0] + f"/bench{k}"}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
