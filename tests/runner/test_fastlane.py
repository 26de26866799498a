"""The replay's fast lane (runner.fastlane) changes no stored number: the same replay with the lane on
and off (``CRUPTO_FAST_LANE=0``, every bar through ``Pipeline.on_bar``) leaves the same database,
table by table and row by row, through governance transitions, day rolls and bad bars."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import yaml

from tests.conftest import shared_data_dir
from tests.runner.helpers import REPO

SCENARIO = REPO / "configs" / "scenarios" / "sma_parity"
FILES = [f"BYBIT_{s}USDT_5m.csv" for s in ("BTC", "ETH", "SOL", "BNB", "XRP")]
# columns written from the wall clock (when it ran, not what it computed)
WALL_COLUMNS = {"ts", "created_at", "updated_at", "started_at", "ended_at", "heartbeat_at", "applied_at",
                "acquired_at", "expires_at"}
SKIP_TABLES = {"events", "schema_migrations", "exports", "sqlite_sequence"}


def _replay(tmp: Path, name: str, config_dir: Path, data: list[Path], lane: bool,
            env_extra: dict[str, str] | None = None) -> tuple[Path, str]:
    out = tmp / name
    out.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALERT_TEST_")}
    env.update(ENV_FILE=str(out / "none"), DB_PATH=str(out / "db.sqlite"), REPORTS_DIR=str(out / "reports"),
               LOGS_DIR=str(out / "logs"), CRUPTO_FAST_LANE="1" if lane else "0", **(env_extra or {}))
    result = subprocess.run(
        [sys.executable, "-m", "prod_core.runner", "--feed", "replay", "--config-dir", str(config_dir),
         "--port", "0", "--linger", "0", "--data", *map(str, data)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    text = result.stdout + result.stderr
    assert result.returncode == 0, text[-4000:]
    assert re.search(r"^replay: bars=\d+ fills=\d+ engine_s=[\d.]+ equity=[\d.]+$", result.stdout, re.M), text[-2000:]
    return out / "db.sqlite", text


def _tables(db: Path) -> dict[str, list[tuple]]:
    """Every table's rows in insertion order, the run id replaced and the wall-clock columns left out
    (the journal's 'open' row is stamped with the wall clock too, and its once-a-second checkpoints
    depend on how long the run took: left out, with the sequence numbers they shift)."""
    with closing(sqlite3.connect(db)) as conn:
        run_id = conn.execute("SELECT run_id FROM runs").fetchone()[0]
        out = {}
        for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").fetchall():
            if table in SKIP_TABLES:
                continue
            cols = [r[1] for r in conn.execute(f"PRAGMA table_info({table})") if r[1] not in WALL_COLUMNS]
            rows = []
            for row in conn.execute(f"SELECT {', '.join(cols)} FROM {table} ORDER BY rowid"):
                rec = dict(zip(cols, (v.replace(run_id, "RUN") if isinstance(v, str) else v for v in row)))
                if table == "journal":
                    if rec["event"] == "checkpoint":  # the once-a-second save: how many depends on the wall clock
                        continue
                    rec.pop("seq")
                    if rec["kind"] == "open":
                        rec.pop("ts_ms")
                if table == "runs":
                    rec.pop("pid", None)
                    rec.pop("args", None)
                rows.append(tuple(sorted(rec.items())))
            out[table] = rows
    return out


def _assert_same(off: Path, on: Path, labels: tuple[str, str] = ("bar by bar", "fast lane")) -> dict[str, list[tuple]]:
    a, b = _tables(off), _tables(on)
    assert a.keys() == b.keys()
    for table in a:
        assert len(a[table]) == len(b[table]), table
        for i, (x, y) in enumerate(zip(a[table], b[table])):
            assert x == y, f"{table} row {i}:\n {labels[0]}: {x}\n {labels[1]}: {y}"
    return a


def _bars(text: str) -> int:
    """The bars the replay counted (its final line: the sum of ``crupto_bars_total``)."""
    return int(re.search(r"^replay: bars=(\d+) ", text, re.M).group(1))


def _skipped(text: str) -> tuple[int, int, int]:
    m = re.search(r"fast lane: (\d+) of (\d+) bars skipped ahead \(windows: (\d+) scanned, (\d+) bar by bar\)", text)
    assert m, text[-2000:]
    return int(m.group(1)), int(m.group(2)), int(m.group(4))


def _scenario(tmp: Path, **changes) -> Path:
    """The parity scenario with governance.yaml sections changed."""
    out = tmp / "scenario"
    shutil.copytree(SCENARIO, out)
    gov = yaml.safe_load((out / "governance.yaml").read_text())
    for section, values in changes.items():
        gov[section] = {**gov.get(section, {}), **values} if isinstance(values, dict) else values
    (out / "governance.yaml").write_text(yaml.safe_dump(gov, sort_keys=False))
    return out


# 1R = 1 USDT on 100 USDT positions: every governance transition happens on three symbols
TRANSITIONS = dict(
    sizing={"nominal_r_usd": 1.0},
    daily_lock={"max_daily_loss_r": 4.0, "max_trades": 12, "max_consecutive_losses": 5},
    drawdown={"throttle_at_r": -4.0, "throttle_multiplier": 0.5, "no_entries_at_r": -9.0, "critical_max_dd_r": 40.0},
    kill_switch={"auto_at_max_dd_r": 12.0},
    replay={"flatten_at_end": True, "daily_reset": True},
)


def assert_transitions_happened(tables: dict[str, list[tuple]]) -> None:
    events = [dict(r)["event"] for r in tables["journal"]]
    for event in ("drawdown_ladder", "lock_engaged", "day_roll", "kill_switch"):
        assert event in events, f"{event} never happened: the scenario no longer tests it"


def test_parity_replay_is_the_same_database_with_the_lane_on(tmp_path: Path) -> None:
    data = [shared_data_dir() / f for f in FILES]
    off, text_off = _replay(tmp_path, "off", SCENARIO, data, lane=False)
    on, text = _replay(tmp_path, "on", SCENARIO, data, lane=True)
    tables = _assert_same(off, on)
    assert len(tables["fills"]) == 5_009 and len(tables["equity"]) == 25_921
    assert _bars(text) == _bars(text_off) == 129_600
    skipped, total, slow = _skipped(text)
    assert total == 129_600 and skipped > 100_000 and slow == 0


def test_governance_transitions_day_rolls_and_kill_switch_are_the_same_with_the_lane_on(tmp_path: Path) -> None:
    """1R = 1 USDT on 100 USDT positions: marks move the account by whole R, so the throttle, the drawdown
    stop, the daily loss lock, the trade count lock, the daily reset and finally the automatic kill-switch
    all happen, at quiet bars as well as at fills."""
    data = [shared_data_dir() / f for f in FILES[:3]]
    config = _scenario(tmp_path, **TRANSITIONS)
    off, _ = _replay(tmp_path, "off", config, data, lane=False)
    on, text = _replay(tmp_path, "on", config, data, lane=True)
    tables = _assert_same(off, on)
    assert_transitions_happened(tables)
    bodies = [json.loads(dict(r)["body_json"]) for r in tables["journal"] if dict(r)["event"] == "day_roll"]
    assert any("daily_reset" in b.get("details", {}) for b in bodies)
    skipped, total, slow = _skipped(text)
    assert skipped > total // 2 and slow == 0


def bad_bar_files(tmp_path: Path) -> list[Path]:
    """BTC and ETH with a NaN, a duplicate, an out-of-order bar and a high below its low each; SOL clean."""
    src = shared_data_dir()
    data = []
    for name, bad_at in (("BYBIT_BTCUSDT_5m.csv", 4_000), ("BYBIT_ETHUSDT_5m.csv", 17_000)):
        rows = list(csv.reader((src / name).open()))
        header, body = rows[0], rows[1:]
        body[bad_at][4] = "nan"
        body.insert(bad_at + 10, list(body[bad_at + 9]))  # duplicate
        body.insert(bad_at + 20, list(body[bad_at + 5]))  # out of order
        body[bad_at + 30][2] = str(float(body[bad_at + 30][3]) * 0.9)  # high below low
        path = tmp_path / name
        with path.open("w", newline="") as f:
            csv.writer(f).writerows([header, *body])
        data.append(path)
    data.append(src / "BYBIT_SOLUSDT_5m.csv")
    return data


def test_bad_bars_send_their_window_bar_by_bar_with_the_same_result(tmp_path: Path) -> None:
    """NaN, a duplicate, an out-of-order bar and a high below its low in two files: the windows holding
    them go bar by bar (the same anomalies counted and logged), the others through the lane."""
    data = bad_bar_files(tmp_path)
    off, text_off = _replay(tmp_path, "off", SCENARIO, data, lane=False)
    on, text = _replay(tmp_path, "on", SCENARIO, data, lane=True)
    _assert_same(off, on)
    _, total, slow = _skipped(text)
    assert slow >= 1
    assert _bars(text) == _bars(text_off) < total  # the rejected bars are not counted
    # the same bars rejected and logged; how they split into lines depends on wall time (bursts less
    # than a second apart share a line: pipeline._anomaly), which a busy machine stretches
    anomalies = [int(n) for n in re.findall(r"отклонено баров (\d+)", text)]
    assert anomalies and sum(anomalies) == sum(int(n) for n in re.findall(r"отклонено баров (\d+)", text_off)) == 8


def test_a_scan_that_raises_holds_its_strategy_and_the_replay_goes_on(tmp_path: Path) -> None:
    """A user strategy whose scan raises (tests/fixtures/user_strategies) is held, logged and journaled
    once; the parity strategy beside it trades through the fast lane to the end of the data exactly as
    it does alone."""
    strategies = {
        "sma_parity": {"class": "prod_core.strategies.sma_cross:SmaCross", "params": {"fast": 10, "slow": 30}},
        "scan_faulty": {"class": "acme_strats.momentum:ScanFaulty", "params": {"fail_at": 3000}},
    }
    both = {"always": ["sma_parity", "scan_faulty"], "calm": [], "trend_up": [], "trend_down": [], "volatile": []}
    config = _scenario(tmp_path, strategies=strategies, enable_map=both, safe_mode_enable_map=both)
    data = [shared_data_dir() / f for f in FILES[:2]]
    alone, _ = _replay(tmp_path, "alone", SCENARIO, data, lane=True)
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(REPO / "tests" / "fixtures" / "user_strategies") + (os.pathsep + old if old else "")
    try:
        db, text = _replay(tmp_path, "on", config, data, lane=True)
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH")
        else:
            os.environ["PYTHONPATH"] = old
    assert "Стратегия scan_faulty упала" in text and "ZeroDivisionError" in text
    assert text.count("Стратегия scan_faulty упала") < 5  # not a line per window
    skipped, total, slow = _skipped(text)
    assert skipped > total // 2 and slow == 0
    with closing(sqlite3.connect(db)) as conn:
        holds = conn.execute("SELECT body_json FROM journal WHERE event = 'hold'").fetchall()
    assert len(holds) == 1 and json.loads(holds[0][0])["details"]["strategy"] == "scan_faulty"
    assert _tables(db)["fills"] == _tables(alone)["fills"]
