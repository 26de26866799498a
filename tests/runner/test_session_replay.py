"""A paper session is recorded with its run (bars in arrival order, start state, control events)
and a replay of that recording reproduces its plans and fills by content."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import yaml

from prod_core.testing.fake_exchange import TrendingFakeBinance
from tests.runner.helpers import PaperProcess, active_governance, cli, free_port

REPO = Path(__file__).resolve().parents[2]


def _rows(db: Path, sql: str, run_id: str) -> list[tuple]:
    with sqlite3.connect(db, timeout=30) as conn:
        return [tuple(r) for r in conn.execute(sql, (run_id,))]


def _plans(db: Path, run_id: str) -> list[tuple]:
    return _rows(db, "SELECT plan_id, strategy, symbol, side, entry, stop, target, decision, qty, status FROM plans"
                     " WHERE run_id = ? ORDER BY rowid", run_id)


def _fills(db: Path, run_id: str) -> list[tuple]:
    return _rows(db, "SELECT symbol, side, qty, price, fee_usd, reason, liquidity FROM fills WHERE run_id = ?"
                     " ORDER BY rowid", run_id)


def _latest_run(db: Path) -> str:
    with sqlite3.connect(db, timeout=30) as conn:
        return conn.execute("SELECT run_id FROM runs ORDER BY started_at DESC, rowid DESC LIMIT 1").fetchone()[0]


def _replay(tmp: Path, db: Path, bars: Path, config_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ENV_FILE": str(tmp / "no.env"), "REPORTS_DIR": str(tmp / "reports"),
           "LOGS_DIR": str(tmp / "logs"), "CONFIG_DIR": str(config_dir)}
    return subprocess.run([sys.executable, "-m", "prod_core.runner", "--feed", "replay", "--data", str(bars),
                           "--db", str(db), "--port", "0", "--linger", "0"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def _assert_replay_reproduces(tmp: Path, db: Path, run_id: str, config_dir: Path) -> tuple[list, list]:
    folder = tmp / "reports" / f"run_{run_id}"
    bars = folder / "bars.parquet"
    session = json.loads((folder / "session.json").read_text())
    table = pq.read_table(bars).to_pydict()
    assert table["seq"] == list(range(len(table["seq"]))) and session["bars"] == len(table["seq"])
    res = _replay(tmp, db, bars, config_dir)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert f"replay: bars={len(table['seq'])} " in res.stdout, res.stdout[-1000:]
    replayed = _latest_run(db)
    assert replayed != run_id
    plans, fills = _plans(db, run_id), _fills(db, run_id)
    assert _plans(db, replayed) == plans
    assert _fills(db, replayed) == fills
    return plans, fills


def test_sim_session_with_a_carried_account_and_a_hold_replays_identically(tmp_path: Path, config_dir: Path) -> None:
    """A sim paper session (account carried from an earlier run, an operator hold and release in
    it) replayed from reports/run_<id>/bars.parquet gives the same plans and fills."""
    active_governance(config_dir)
    env = {"CONFIG_DIR": str(config_dir)}
    first = PaperProcess(tmp_path, "--bar-interval", "0.02", "--max-seconds", "4", "--linger", "0", env=env)
    assert first.wait() == 0, first.output
    proc = PaperProcess(tmp_path, "--bar-interval", "0.02", "--max-seconds", "300", "--linger", "0", env=env)
    try:
        proc.wait_for_line("зарегистрирован")
        assert cli(proc.db, "hold", "trend_following", "--comment", "test").returncode == 0
        time.sleep(1.0)  # let bars pass while on hold (what is compared is the replay, not this time)
        assert cli(proc.db, "release", "trend_following", "--comment", "test").returncode == 0
        run_id = _latest_run(proc.db)
        deadline = time.time() + 120  # trade on until the session has plans and fills to compare
        while len(_plans(proc.db, run_id)) < 5 or len(_fills(proc.db, run_id)) < 2:
            assert time.time() < deadline and proc.proc.poll() is None, proc.output
            time.sleep(0.2)
        proc.interrupt()
        assert proc.wait() == 0, proc.output
    finally:
        proc.kill()
    run_id = _latest_run(proc.db)
    with sqlite3.connect(proc.db) as conn:
        kinds = [r[0] for r in conn.execute("SELECT kind FROM session_events WHERE run_id = ? ORDER BY seq",
                                            (run_id,))]
    assert kinds[0] == "start" and kinds.count("command") == 2, kinds
    plans, fills = _assert_replay_reproduces(tmp_path, proc.db, run_id, config_dir)
    assert len(plans) >= 5 and len(fills) >= 2, (len(plans), len(fills))


def test_ccxt_session_with_outage_and_hold_replays_identically(tmp_path: Path, config_dir: Path) -> None:
    """A paper session on the ccxt feed against the fake exchange (account carried over, a feed
    outage and an operator hold in it), replayed from its recording: the same plans and fills."""
    active_governance(config_dir)
    fake = TrendingFakeBinance({"BTC/USDT": 65000.0, "ETH/USDT": 3400.0}, max_lifetime_s=400.0).start()
    try:
        sym_path = config_dir / "symbols.yaml"
        cfg = yaml.safe_load(sym_path.read_text())
        cfg["exchange"].update({"id": "binance", "timeframe": "1s", "sandbox": False, "api_url": fake.url})
        cfg["symbols"] = [dict(s, kind="spot") for s in cfg["symbols"] if s["symbol"] in ("BTC/USDT", "ETH/USDT")]
        sym_path.write_text(yaml.safe_dump(cfg))
        env = {"CONFIG_DIR": str(config_dir), "FEED": "ccxt"}
        first = PaperProcess(tmp_path, "--max-seconds", "5", "--linger", "0", env=env, port=free_port())
        assert first.wait() == 0, first.output
        proc = PaperProcess(tmp_path, "--max-seconds", "300", "--linger", "0", env=env)
        try:
            proc.wait_for_line("зарегистрирован")
            assert cli(proc.db, "hold", "mean_reversion", "--comment", "test").returncode == 0
            fake.set_silent(True)
            proc.wait_for_line("health 1 -> 0")
            fake.set_silent(False)
            proc.wait_for_line("health 0 -> 1")
            assert cli(proc.db, "release", "mean_reversion", "--comment", "test").returncode == 0
            run_id = _latest_run(proc.db)
            deadline = time.time() + 120  # trade on until the session has plans to compare
            while len(_plans(proc.db, run_id)) < 3:
                assert time.time() < deadline and proc.proc.poll() is None, proc.output
                time.sleep(0.2)
            proc.interrupt()
            assert proc.wait() == 0, proc.output
        finally:
            proc.kill()
    finally:
        fake.stop()
    run_id = _latest_run(proc.db)
    with sqlite3.connect(proc.db) as conn:
        kinds = [r[0] for r in conn.execute("SELECT kind FROM session_events WHERE run_id = ? ORDER BY seq",
                                            (run_id,))]
    assert kinds.count("feed_health") >= 2 and kinds.count("command") == 2, kinds
    plans, fills = _assert_replay_reproduces(tmp_path, proc.db, run_id, config_dir)
    assert plans, "the session made no plan: nothing was compared"
