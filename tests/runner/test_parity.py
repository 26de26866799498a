"""The parity scenario (configs/scenarios/sma_parity, docs/PARITY.md) through the real runner on the
shared Bybit 5m set: the figures the established engines are compared against."""

from __future__ import annotations

import csv
import os
import re
import sqlite3
import subprocess
import sys
from contextlib import closing
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

from tests.conftest import shared_data_dir
from tests.runner.helpers import REPO

SCENARIO = REPO / "configs" / "scenarios" / "sma_parity"
FILES = [f"BYBIT_{s}USDT_5m.csv" for s in ("BTC", "ETH", "SOL", "BNB", "XRP")]


def exact_reference(paths: list[Path]) -> tuple[list[tuple[str, int, str, float]], Fraction]:
    """The scenario's rule written out independently of the engine, in exact arithmetic:
    the trades (symbol, fill ts, side, price) and the final equity."""
    cash = Fraction(10_000)
    trades: list[tuple[str, int, str, float]] = []
    for path in paths:
        rows = list(csv.reader(path.open()))[1:]
        k = max(len(x.split(".")[1]) if "." in x else 0 for r in rows for x in r[1:5])
        closes = [int(Decimal(r[4]).scaleb(k)) for r in rows]
        qty = Fraction(Decimal(f"{100 / float(rows[0][4]):.3g}"))
        symbol = path.name.split("_")[1].replace("USDT", "/USDT")
        long, prev = False, None
        for i in range(len(rows)):
            d = 3 * sum(closes[i - 9:i + 1]) - sum(closes[i - 29:i + 1]) if i >= 29 else None
            if d is not None and prev is not None and i + 1 < len(rows):
                price = Fraction(Decimal(rows[i + 1][1]))
                if not long and d > 0 >= prev:
                    cash -= qty * price * Fraction(1001, 1000)
                    long = True
                    trades.append((symbol, int(rows[i + 1][0]), "buy", float(rows[i + 1][1])))
                elif long and d < 0 <= prev:
                    cash += qty * price * Fraction(999, 1000)
                    long = False
                    trades.append((symbol, int(rows[i + 1][0]), "sell", float(rows[i + 1][1])))
            prev = d
        if long:
            cash += qty * Fraction(Decimal(rows[-1][4]))
    return trades, cash


def test_parity_scenario_on_bybit_5m_gives_5009_fills_and_9522_67_usdt(tmp_path: Path) -> None:
    """The runner replays the 5-symbol set under the parity scenario: 5,009 fills, final equity 9,522.67 USDT,
    and every fill is the exact rule's trade at the next bar's open with 0.1% fee."""
    data = shared_data_dir()
    paths = [data / f for f in FILES]
    db = tmp_path / "parity.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALERT_TEST_")}
    env.update(ENV_FILE=str(tmp_path / "none"), DB_PATH=str(db), REPORTS_DIR=str(tmp_path / "reports"),
               LOGS_DIR=str(tmp_path / "logs"))
    result = subprocess.run(
        [sys.executable, "-m", "prod_core.runner", "--feed", "replay", "--config-dir", str(SCENARIO),
         "--port", "0", "--linger", "0", "--data", *map(str, paths)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    m = re.search(r"^replay: bars=(\d+) fills=(\d+) engine_s=([\d.]+) equity=([\d.]+)$", result.stdout, re.M)
    assert m, result.stdout[-2000:]
    bars, fills, equity = int(m.group(1)), int(m.group(2)), float(m.group(4))
    assert bars == 129_600
    assert fills == 5_009
    assert abs(equity - 9_522.67) <= 0.01

    trades, exact_equity = exact_reference(paths)
    assert len(trades) == 5_009 and round(float(exact_equity), 2) == 9_522.67
    with closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT symbol, ts_ms, side, price, qty, fee_usd FROM fills ORDER BY symbol, ts_ms").fetchall()
    assert sorted(t for t in trades) == sorted((r[0], r[1], r[2], r[3]) for r in rows)
    for _symbol, _ts, _side, price, qty, fee in rows:
        assert abs(fee - price * qty * 0.001) <= 1e-9 * price * qty
