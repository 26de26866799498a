"""The run report a trader reads: summary.md with pictures, tables and figures equal to the DB's.

Runs are real: the paper loop on the sim feed's crash scenario (SIGKILLed, then reported by
``cli report``) and a replay of ../shared/data Bybit 5m. Every figure of summary.json and
every series behind a picture is recomputed here from the SQLite file with plain SQL and
Python, independently of prod_core.reports.
"""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.csv as pacsv
import pytest

from prod_core.reports.figures import MAX_POINTS, redact_args
from tests.conftest import shared_data_dir
from tests.runner.helpers import REPO, PaperProcess, active_governance, cli

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _wait(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"no {what} within {timeout}s")


def _rows(db: Path, sql: str, *params) -> list[tuple]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def _count(db: Path, sql: str, *params) -> int:
    try:
        return _rows(db, sql, *params)[0][0]
    except sqlite3.OperationalError:  # not created yet / locked for a moment
        return 0


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _expected_figures(db: Path, run_id: str) -> dict:
    """The report's numbers, recomputed from the raw rows."""
    closed = _rows(db, "SELECT trade_r, pnl_usd FROM positions WHERE run_id = ? AND status = 'closed'", run_id)
    fills = _rows(db, "SELECT fee_usd FROM fills WHERE run_id = ?", run_id)
    equity = _rows(db, "SELECT equity_usd, pnl_cum_r, max_dd_r FROM equity WHERE run_id = ? ORDER BY rowid", run_id)
    won = sum(p for _, p in closed if p > 0)
    lost = -sum(p for _, p in closed if p < 0)
    return {
        "closed_trades": len(closed),
        "wins": sum(1 for r, _ in closed if r > 0),
        "closed_r": sum(r for r, _ in closed),
        "closed_pnl_usd": sum(p for _, p in closed),
        "profit_factor": won / lost if lost > 0 else None,
        "expectancy_r": sum(r for r, _ in closed) / len(closed) if closed else None,
        "fills": len(fills),
        "fees_usd": sum(f for (f,) in fills),
        "equity_start": equity[0][0],
        "equity_end": equity[-1][0],
        "pnl_usd": equity[-1][0] - equity[0][0],
        "pnl_cum_r_end": equity[-1][1],
        "max_dd_r": max(m for _, _, m in equity),
    }


def _assert_figures_equal(db: Path, run_id: str, folder: Path) -> dict:
    figures = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    expected = _expected_figures(db, run_id)
    for key, want in expected.items():
        got = figures[key]
        if want is None:
            assert got is None, key
        else:
            assert got == pytest.approx(want, rel=1e-9, abs=1e-9), (key, got, want)
    summary = (folder / "summary.md").read_text(encoding="utf-8")
    assert f"| equity start / end, USD | {expected['equity_start']:.2f} / {expected['equity_end']:.2f} |" in summary
    assert f"| max drawdown, R | {expected['max_dd_r']:.3f} |" in summary
    assert f"| fills | {expected['fills']} (fees {expected['fees_usd']:.2f} USD) |" in summary
    by_symbol = {r["symbol"]: r for r in figures["breakdowns"]["symbol"]}
    for sym, n, r in _rows(db, "SELECT symbol, COUNT(*), SUM(trade_r) FROM positions WHERE run_id = ? AND "
                               "status = 'closed' GROUP BY symbol", run_id):
        assert by_symbol[sym]["trades"] == n and by_symbol[sym]["total_r"] == pytest.approx(r, abs=1e-9)
    assert sum(r["trades"] for r in figures["breakdowns"]["strategy"]) == expected["closed_trades"]
    assert sum(r["trades"] for r in figures["breakdowns"]["regime"]) == expected["closed_trades"]
    return figures


def _assert_equity_series(db: Path, run_id: str, folder: Path) -> list[dict[str, str]]:
    """series/equity.csv: per time bucket the last equity and the deepest drawdown of the raw rows."""
    raw = _rows(db, "SELECT ts_ms, equity_usd, dd_state, max_dd_r FROM equity WHERE run_id = ? ORDER BY rowid", run_id)
    first, last = raw[0][0], raw[-1][0]
    width = max(1, math.ceil((last - first + 1) / MAX_POINTS))
    buckets: dict[int, dict] = {}
    for ts, eq, dd, mdd in raw:
        b = buckets.setdefault((ts - first) // width, {"ts": ts, "eq": eq, "dd": dd, "mdd": mdd})
        b["ts"], b["eq"] = max(b["ts"], ts), eq
        b["dd"], b["mdd"] = min(b["dd"], dd), max(b["mdd"], mdd)
    series = _read_csv(folder / "series" / "equity.csv")
    assert 2 <= len(series) <= MAX_POINTS + 1
    assert len(series) == len(buckets)
    for row, (_, b) in zip(series, sorted(buckets.items())):
        assert int(row["ts_ms"]) == b["ts"]
        assert float(row["equity_usd"]) == pytest.approx(b["eq"], abs=1e-9)
        assert float(row["dd_state_min"]) == pytest.approx(b["dd"], abs=1e-9)
        assert float(row["max_dd_r"]) == pytest.approx(b["mdd"], abs=1e-9)
    return series


def _assert_fill_markers(db: Path, run_id: str, folder: Path) -> list[str]:
    traded = [s for (s,) in _rows(db, "SELECT DISTINCT symbol FROM fills WHERE run_id = ? ORDER BY symbol", run_id)]
    assert traded
    for sym in traded:
        key = sym.replace("/", "-").replace(":", "-")
        markers = _read_csv(folder / "series" / f"fills_{key}.csv")
        raw = _rows(db, "SELECT ts_ms, side, price, reason FROM fills WHERE run_id = ? AND symbol = ? ORDER BY rowid",
                    run_id, sym)
        assert [(int(m["ts_ms"]), m["side"], float(m["price"])) for m in markers] == [(t, s, p) for t, s, p, _ in raw]
        assert [m["role"] for m in markers] == ["entry" if r == "entry" else "exit" for *_, r in raw]
    return traded


def _assert_picture(png: Path, color: tuple[int, int, int], min_pixels: int = 150) -> None:
    """A real PNG with the curve drawn: enough pixels of the curve's colour."""
    import numpy as np
    from PIL import Image

    assert png.read_bytes()[:8] == PNG_MAGIC, png
    with Image.open(png) as img:
        assert img.size[0] >= 800 and img.size[1] >= 300
        rgb = np.asarray(img.convert("RGB"), dtype=np.int16)
    hits = int((np.abs(rgb - np.array(color, dtype=np.int16)) <= 12).all(axis=2).sum())
    assert hits >= min_pixels, f"{png.name}: {hits} pixels of the curve colour {color}"


BLUE = (31, 119, 180)  # equity / close
PURPLE = (148, 103, 189)  # gross exposure


def test_killed_crash_scenario_run_is_reported_by_cli_report_and_never_becomes_summary_latest(
        tmp_path: Path, config_dir: Path) -> None:
    """A finished run, then a crash-scenario run SIGKILLed mid-way: `cli report` writes the killed run's report
    (pictures, tables, numbers equal to the DB's, status 'no clean stop'); summary_latest.md stays on the finished run."""
    active_governance(config_dir)
    env = {"CONFIG_DIR": str(config_dir)}
    first = PaperProcess(tmp_path, "--bar-interval", "0.01", "--linger", "0", "--max-seconds", "2",
                         "--run-id", "finished-1", env=env)
    try:
        assert first.wait(timeout=120) == 0, first.output
    finally:
        first.kill()
    latest = tmp_path / "reports" / "summary_latest.md"
    assert "`run_finished-1`" in latest.read_text(encoding="utf-8").splitlines()[0]

    run = PaperProcess(tmp_path, "--scenario", "crash", "--seed", "1", "--bar-interval", "0.005", "--linger", "0",
                       "--run-id", "killed-2", env=env)
    try:
        run.wait_for_line("Фид sim зарегистрирован", timeout=120)
        _wait(lambda: _count(run.db, "SELECT COUNT(*) FROM positions WHERE run_id = 'killed-2' AND status = 'closed'")
              >= 3, 180, "three closed trades")
        _wait(lambda: _count(run.db, "SELECT COUNT(*) FROM equity WHERE run_id = 'killed-2'") >= 50, 120,
              "50 equity rows")
        os.killpg(run.proc.pid, signal.SIGKILL)
        run.proc.wait(timeout=30)
    finally:
        run.kill()
    assert _rows(run.db, "SELECT status FROM runs WHERE run_id = 'killed-2'")[0][0] == "running"

    done = cli(run.db, "report", "--run-id", "killed-2", "--out", str(tmp_path / "reports"),
               "--logs-dir", str(tmp_path / "logs"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no clean stop" in done.stdout
    folder = tmp_path / "reports" / "run_killed-2"
    summary = (folder / "summary.md").read_text(encoding="utf-8")
    assert "| status | running in the database (no clean stop recorded" in summary
    assert "![equity and drawdown](equity_drawdown.png)" in summary and "![exposure](exposure.png)" in summary
    for table in ("plans", "orders", "fills", "positions", "equity", "events"):
        assert (folder / f"{table}.csv").is_file() and (folder / f"{table}.parquet").is_file()
    assert "Not recorded: the run did not stop cleanly" in summary  # stage latency needs a clean stop

    _assert_figures_equal(run.db, "killed-2", folder)
    _assert_equity_series(run.db, "killed-2", folder)
    traded = _assert_fill_markers(run.db, "killed-2", folder)
    # the paper run's price comes from its recorded session bars
    for sym in traded:
        key = sym.replace("/", "-")
        price = _read_csv(folder / "series" / f"price_{key}.csv")
        closes = dict(_rows(run.db, "SELECT ts_ms, close FROM session_bars WHERE run_id = 'killed-2' AND symbol = ? "
                                    "AND close IS NOT NULL", sym))
        assert price and all(float(p["close"]) == closes[int(p["ts_ms"])] for p in price)
        assert f"![{sym}](price_{key}.png)" in summary
        _assert_picture(folder / f"price_{key}.png", BLUE)
    _assert_picture(folder / "equity_drawdown.png", BLUE)
    _assert_picture(folder / "exposure.png", PURPLE)
    assert _count(run.db, "SELECT COUNT(*) FROM exports WHERE run_id = 'killed-2' AND kind = 'report'") == 1
    # summary_latest.md never shows a running run: it still names the finished one
    head = latest.read_text(encoding="utf-8").splitlines()[0]
    assert "`run_finished-1`" in head and "killed-2" not in latest.read_text(encoding="utf-8")


def test_replay_report_has_pictures_tables_and_the_db_numbers(tmp_path: Path) -> None:
    """A replay of ../shared/data Bybit 5m ends with its report: PNGs of the curves, the governance timeline,
    tables by strategy/regime/symbol, stage latency, figures and series equal to the DB's and the data files'."""
    data = sorted(shared_data_dir().glob("BYBIT_*_5m.csv"))
    assert len(data) == 5
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALERT_TEST_")}
    env.update(ENV_FILE=str(tmp_path / "no.env"), DB_PATH=str(tmp_path / "r.db"), REPORTS_DIR=str(tmp_path / "reports"),
               LOGS_DIR=str(tmp_path / "logs"))
    proc = subprocess.run([sys.executable, "-m", "prod_core.runner", "--feed", "replay", "--port", "0", "--linger", "0",
                           "--run-id", "replay-1", "--data", *map(str, data)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "%|" not in proc.stderr  # no progress bar when not on a terminal
    db = tmp_path / "r.db"
    folder = tmp_path / "reports" / "run_replay-1"
    figures = _assert_figures_equal(db, "replay-1", folder)
    assert figures["closed_trades"] >= 1
    _assert_equity_series(db, "replay-1", folder)
    traded = _assert_fill_markers(db, "replay-1", folder)
    summary = (folder / "summary.md").read_text(encoding="utf-8")
    for heading in ("## Manifest", "## Result", "## Timeline", "### By strategy", "### By regime (at the plan)",
                    "### By symbol", "## Rejects", "## Stage latency", "## Data anomalies", "## Execution by symbol",
                    "## Prices, entries and exits"):
        assert heading in summary, heading
    assert "| symbols | BNB/USDT, BTC/USDT, ETH/USDT, SOL/USDT, XRP/USDT |" in summary
    assert "drawdown stop (no new entries)" in summary  # the default limits stop this replay early
    spans = _read_csv(folder / "series" / "spans.csv")
    assert any(s["kind"] == "drawdown_stop" for s in spans)
    vetoed = _rows(db, "SELECT decision, COUNT(*) FROM plans WHERE run_id = 'replay-1' AND decision LIKE 'vetoed%' "
                       "GROUP BY decision")
    for decision, n in vetoed:
        assert f"| plan vetoed (risk / portfolio) | {decision} | {n} |" in summary
    stages = figures["stage_ms"]
    assert stages and all(v["p95"] >= v["p50"] >= 0 for v in stages.values())
    # the price picture's series is the data file downsampled: last close of each bucket
    first, last = figures["first_ts_ms"], figures["last_ts_ms"]
    width = max(1, math.ceil((last - first + 1) / MAX_POINTS))
    for sym in traded:
        key = sym.replace("/", "-")
        table = pacsv.read_csv(next(p for p in data if sym.replace("/", "") in p.name))
        ts, close = table.column("ts_ms").to_pylist(), table.column("close").to_pylist()
        want: dict[int, tuple[int, float]] = {}
        for t, c in zip(ts, close):
            if first <= t <= last:
                want[(t - first) // width] = (t, c)
        got = [(int(r["ts_ms"]), float(r["close"])) for r in _read_csv(folder / "series" / f"price_{key}.csv")]
        assert got == [v for _, v in sorted(want.items())]
        _assert_picture(folder / f"price_{key}.png", BLUE)
    _assert_picture(folder / "equity_drawdown.png", BLUE)
    latest = (tmp_path / "reports" / "summary_latest.md").read_text(encoding="utf-8")
    assert latest.splitlines()[0].startswith("> Latest finished run: `run_replay-1` (stopped")
    assert "![equity and drawdown](run_replay-1/equity_drawdown.png)" in latest
    assert (folder / "metrics.txt").is_file() and "bars_total" in (folder / "metrics.txt").read_text()


def test_a_run_command_line_is_stored_without_secrets() -> None:
    """Passwords in URLs and the values of secret-looking flags never reach the runs table or the manifest."""
    line = ("--feed ccxt --db postgresql://crupto:s3cr3t@db.local:5432/crupto --api-secret=abc123 "
            "--api-key KEY42 --data 'my data/x.csv'")
    out = redact_args(line)
    for secret in ("s3cr3t", "abc123", "KEY42"):
        assert secret not in out
    assert "postgresql://crupto:***@db.local:5432/crupto" in out and "--api-secret=***" in out
    assert "'my data/x.csv'" in out


def test_cli_report_names_an_unknown_run(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    from prod_core.storage import Storage

    with Storage(str(db)) as storage:
        storage.start_run("r1", mode="paper", feed="sim", config_hash="h", code_version="0", ts=time.time(), args="")
    done = cli(db, "report", "--run-id", "nope", "--out", str(tmp_path / "reports"))
    assert done.returncode == 2 and "'nope' is not in database" in done.stderr and "r1" in done.stderr
