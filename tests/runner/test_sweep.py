"""Replay sweeps on a local Ray: each result is the single replay's, lost workers are retried, failures reported."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow.parquet as pq
import yaml

from tests.conftest import shared_data_dir
from tests.runner.helpers import REPO

PARITY = REPO / "configs" / "scenarios" / "sma_parity"
FINAL = re.compile(r"^replay: bars=(\d+) fills=(\d+) engine_s=[\d.]+ equity=([\d.]+)$", re.M)


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALERT_TEST_", "RAY_"))}
    env.update(ENV_FILE=str(tmp / "no.env"), REPORTS_DIR=str(tmp / "reports"), LOGS_DIR=str(tmp / "logs"),
               DB_PATH=str(tmp / "driver.db"))
    return env


def _sweep(tmp: Path, grid: dict, data: list[Path], *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    (tmp / "grid.yaml").write_text(yaml.safe_dump(grid))
    return subprocess.run([sys.executable, "-m", "prod_core.cli", "sweep", "--grid", str(tmp / "grid.yaml"),
                           "--config-dir", str(PARITY), "--workers", "2", "--out", str(tmp / "out"), *extra,
                           "--data", *map(str, data)],
                          cwd=REPO, env={**_env(tmp), **(env or {})}, capture_output=True, text=True, timeout=1800)


def _single(tmp: Path, fast: int, slow: int, data: list[Path]) -> tuple[int, int, float]:
    """The same replay run alone, as an operator runs it."""
    cfg = tmp / f"cfg_{fast}_{slow}"
    cfg.mkdir()
    (cfg / "symbols.yaml").write_text((PARITY / "symbols.yaml").read_text())
    gov = yaml.safe_load((PARITY / "governance.yaml").read_text())
    gov["strategies"]["sma_parity"]["params"].update(fast=fast, slow=slow)
    (cfg / "governance.yaml").write_text(yaml.safe_dump(gov, sort_keys=False))
    env = {**_env(tmp), "DB_PATH": str(cfg / "single.db")}
    proc = subprocess.run([sys.executable, "-m", "prod_core.runner", "--feed", "replay", "--config-dir", str(cfg),
                           "--port", "0", "--linger", "0", "--data", *map(str, data)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    bars, fills, equity = FINAL.search(proc.stdout).groups()
    return int(bars), int(fills), float(equity)


def test_sweep_of_eight_parameter_sets_equals_eight_single_replays(tmp_path: Path) -> None:
    data = sorted(shared_data_dir().glob("BYBIT_*_5m.csv"))
    grid = {"strategy": "sma_parity", "params": {"fast": [5, 10], "slow": [20, 30, 40, 60]}}
    done = _sweep(tmp_path, grid, data)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "sweep: 8 ok, 0 failed; wall" in done.stdout and "one after another" in done.stdout
    results = pq.read_table(tmp_path / "out" / "results.parquet").to_pylist()
    assert len(results) == 8 and {r["status"] for r in results} == {"ok"}
    by_params = {(int(r["param_fast"]), int(r["param_slow"])): r for r in results}
    combos = list(itertools.product([5, 10], [20, 30, 40, 60]))
    with ThreadPoolExecutor(max_workers=2) as pool:  # two single replays at a time (each its own process)
        singles = dict(zip(combos, pool.map(lambda c: _single(tmp_path, c[0], c[1], data), combos)))
    for (fast, slow), (bars, fills, equity) in singles.items():
        got = by_params[(fast, slow)]
        assert (got["bars"], got["fills"]) == (bars, fills), (fast, slow)
        assert round(got["equity_end"], 2) == equity, (fast, slow)
    assert by_params[(10, 30)]["fills"] == 5009 and round(by_params[(10, 30)]["equity_end"], 2) == 9522.67
    # ranked by pnl in R, best first
    summary = (tmp_path / "out" / "summary.md").read_text()
    ranks = [float(m) for m in re.findall(r"^\| \d+ \| \d{4} \| \d+ \| \d+ \| all \| ([+-][\d.]+) \|", summary, re.M)]
    assert len(ranks) == 8 and ranks == sorted(ranks, reverse=True)


def test_a_lost_worker_is_retried_and_a_failing_replay_is_reported(tmp_path: Path) -> None:
    """A worker killed mid-task (as a lost node) is retried; a replay that fails in its own code (an empty data
    file) is reported with its error and exit 1, never dropped; the other replay's result is there."""
    src = shared_data_dir() / "BYBIT_BTCUSDT_5m.csv"
    btc = tmp_path / "data" / "BYBIT_BTCUSDT_5m.csv"
    btc.parent.mkdir()
    btc.write_text("".join(src.read_text().splitlines(keepends=True)[:3001]))
    eth = tmp_path / "data" / "BYBIT_ETHUSDT_5m.csv"
    eth.write_text(src.read_text().splitlines()[0] + "\n")  # a header, no rows
    marker = tmp_path / "died-once"
    grid = {"strategy": "sma_parity", "params": {"fast": 10, "slow": 30}, "split": "symbol"}
    done = _sweep(tmp_path, grid, [btc, eth], "--journal", env={"CRUPTO_SWEEP_DIE_ONCE": str(marker)})
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert "sweep: 1 ok, 1 failed" in done.stdout
    assert marker.exists()  # a worker process died mid-task
    results = {r["task_id"]: r for r in pq.read_table(tmp_path / "out" / "results.parquet").to_pylist()}
    assert set(results) == {"0000-BTCUSDT", "0000-ETHUSDT"}
    assert results["0000-BTCUSDT"]["status"] == "ok" and results["0000-BTCUSDT"]["bars"] == 3000
    assert results["0000-ETHUSDT"]["status"] == "failed"
    assert "error: task 0000-ETHUSDT" in done.stderr and "exited 2" in done.stderr
    journal = pq.read_table(tmp_path / "out" / "journal.parquet").to_pylist()  # --journal: the replay's own journal
    fills = [j for j in journal if j["kind"] == "fill"]
    assert {j["task_id"] for j in journal} == {"0000-BTCUSDT"}
    assert len(fills) == results["0000-BTCUSDT"]["fills"] > 0


def test_a_bad_grid_is_refused_naming_the_value(tmp_path: Path) -> None:
    data = [shared_data_dir() / "BYBIT_BTCUSDT_5m.csv"]
    bad = _sweep(tmp_path, {"strategy": "sma_parity", "params": {"fast": [10, 0]}}, data)
    assert bad.returncode == 2 and '{"fast": 0}' in bad.stderr and "fast" in bad.stderr, bad.stderr
    unknown = _sweep(tmp_path, {"strategy": "nope", "params": {"fast": [10]}}, data)
    assert unknown.returncode == 2 and "strategy 'nope' is not in" in unknown.stderr and "sma_parity" in unknown.stderr
    for bad_grid, words in [({"split": "window"}, "window_days must be a whole number of days >= 1 with split: "
                                                   "window, got None"),
                            ({"split": "window", "window_days": 0}, "window_days must be a whole number"),
                            ({"split": ["symbol", "days"]}, "split must be none, symbol, window or [symbol, window], "
                                                            "got ['symbol', 'days']"),
                            ({"window_days": 7}, "window_days: 7 is set but split has no window")]:
        refused = _sweep(tmp_path, {"strategy": "sma_parity", "params": {"fast": [10]}, **bad_grid}, data)
        assert refused.returncode == 2 and f"--grid {tmp_path / 'grid.yaml'}: {words}" in refused.stderr, refused.stderr
    assert not (tmp_path / "out").exists()  # nothing ran


def test_a_window_split_equals_a_single_replay_of_that_window_and_goes_to_sqlite(tmp_path: Path) -> None:
    """split: [symbol, window]: 45-day UTC windows of the 90-day BTC file; one window's result is the single
    replay's on a file holding only that window's rows; --db (SQLite) holds one row per replay and the journal."""
    import datetime as dt

    from prod_core.storage import Storage

    src = shared_data_dir() / "BYBIT_BTCUSDT_5m.csv"
    grid = {"strategy": "sma_parity", "params": {"fast": 10, "slow": [30, 40]}, "split": ["symbol", "window"],
            "window_days": 45}
    db = tmp_path / "sweeps.db"
    done = _sweep(tmp_path, grid, [src], "--journal", "--db", str(db))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "sweep: 6 ok, 0 failed" in done.stdout and f"sweep_results and sweep_journal in {db}" in done.stdout
    results = {r["task_id"]: r for r in pq.read_table(tmp_path / "out" / "results.parquet").to_pylist()}
    assert [(r["window_start"], r["window_end"]) for r in results.values() if r["param_slow"] == "30"] == [
        ("2025-04-03", "2025-05-17"), ("2025-05-18", "2025-07-01"), ("2025-07-02", "2025-07-02")]
    assert sum(r["bars"] for r in results.values() if r["param_slow"] == "30") == 25920
    assert "| 2025-05-18..2025-07-01 |" in (tmp_path / "out" / "summary.md").read_text()
    # the second window alone, cut here independently, replayed as an operator would
    lo = int(dt.datetime(2025, 5, 18, tzinfo=dt.timezone.utc).timestamp() * 1000)
    hi = lo + 45 * 86_400_000
    lines = src.read_text().splitlines(keepends=True)
    only = tmp_path / "window" / src.name
    only.parent.mkdir()
    only.write_text(lines[0] + "".join(ln for ln in lines[1:] if lo <= int(ln.split(",")[0]) < hi))
    bars, fills, equity = _single(tmp_path, 10, 30, [only])
    got = results["0000-BTCUSDT-2025-05-18"]
    assert (got["bars"], got["fills"], round(got["equity_end"], 2)) == (bars, fills, equity) and fills > 0
    with Storage(str(db)) as st:
        rows = st.query("SELECT * FROM sweep_results ORDER BY task_id")
        assert [r["task_id"] for r in rows] == sorted(results) and {r["status"] for r in rows} == {"ok"}
        row = next(r for r in rows if r["task_id"] == "0000-BTCUSDT-2025-05-18")
        assert (row["window_start"], row["window_end"], row["symbol"]) == ("2025-05-18", "2025-07-01", "BTC/USDT")
        assert (row["fills"], round(row["equity_end"], 2)) == (fills, equity)
        assert json.loads(row["params_json"]) == {"fast": 10, "slow": 30}
        n = st.query("SELECT COUNT(*) AS n FROM sweep_journal WHERE task_id = ? AND kind = 'fill'",
                     ("0000-BTCUSDT-2025-05-18",))[0]["n"]
        assert n == fills


def test_results_to_postgresql(tmp_path: Path, pg_url: str) -> None:
    """--db postgresql://...: the same rows on PostgreSQL; the URL's password is never printed."""
    from prod_core.storage import Storage

    src = shared_data_dir() / "BYBIT_BTCUSDT_5m.csv"
    btc = tmp_path / "data" / src.name
    btc.parent.mkdir()
    btc.write_text("".join(src.read_text().splitlines(keepends=True)[:3001]))
    grid = {"strategy": "sma_parity", "params": {"fast": 10, "slow": [30, 40]}}
    done = _sweep(tmp_path, grid, [btc], "--db", pg_url)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "sweep: 2 ok, 0 failed" in done.stdout and "sweep_results in postgresql://" in done.stdout
    password = pg_url.split("://", 1)[1].split("@", 1)[0].partition(":")[2]
    assert not password or password not in done.stdout + done.stderr
    results = {r["task_id"]: r for r in pq.read_table(tmp_path / "out" / "results.parquet").to_pylist()}
    with Storage(pg_url) as st:
        rows = {r["task_id"]: r for r in st.query("SELECT * FROM sweep_results")}
    assert set(rows) == {"0000", "0001"} == set(results)
    for tid, r in rows.items():
        assert (r["bars"], r["fills"], r["status"]) == (3000, results[tid]["fills"], "ok")
        assert r["pnl_r"] == results[tid]["pnl_cum_r_end"] and r["window_start"] is None
