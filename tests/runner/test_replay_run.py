"""Replay through the real runner: `python -m prod_core.runner --feed replay --speed max`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prod_core.configs import ConfigLoader
from prod_core.feeds.sim import SimFeed
from prod_core.storage import Storage
from tests.runner.helpers import REPO

BAD_ROWS = {
    "nan": "{ts},nan,1,1,1,1",
    "non_positive_price": "{ts},0,1,0,0.5,1",
    "negative_volume": "{ts},{c},{c},{c},{c},-5",
    "high_below_low": "{ts},{c},{lo},{hi},{c},1",
    "open_close_outside_range": "{ts},{hi2},{hi},{lo},{c},1",
    "duplicate": "{ts_prev},{c},{c},{c},{c},1",
}


def _write_csvs(tmp: Path, n: int = 1500) -> tuple[list[Path], int]:
    """Sim candles as canonical CSVs named like exchange dumps, with one corrupted row of each kind."""
    sym = ConfigLoader(REPO / "configs").load_symbols()
    sim = sym.sim.model_copy(update={"seed": 11, "history_bars": 0})
    batch = SimFeed(sym.symbols[:3], sim, start_ms=1_740_000_000_000, paced=False).generate(n)
    paths, valid = [], 0
    for k, symbol in enumerate(batch.symbols):
        lines = ["ts_ms,open,high,low,close,volume"]
        for i in range(n):
            ts = int(batch.ts_ms[i])
            o, h, lo, c, v = (float(a[k, i]) for a in (batch.open, batch.high, batch.low, batch.close, batch.volume))
            lines.append(f"{ts},{o!r},{h!r},{lo!r},{c!r},{v!r}")
            valid += 1
            if k == 0 and 200 <= i < 200 + len(BAD_ROWS):
                kind = list(BAD_ROWS)[i - 200]
                c = float(batch.close[k, i])
                lines.append(BAD_ROWS[kind].format(ts=ts + 1, ts_prev=ts, c=c, hi=c * 1.01, lo=c * 0.99,
                                                   hi2=c * 1.02))
        path = tmp / f"BYBIT_{symbol.replace('/', '')}_1m.csv"
        path.write_text("\n".join(lines) + "\n")
        paths.append(path)
    return paths, valid


def _replay(tmp: Path, name: str, paths: list[Path]) -> tuple[subprocess.CompletedProcess[str], Path]:
    db = tmp / f"{name}.db"
    env = {**os.environ, "ENV_FILE": str(tmp / "none"), "REPORTS_DIR": str(tmp / f"reports-{name}"),
           "LOGS_DIR": str(tmp / f"logs-{name}"), "DB_PATH": str(db)}
    env = {k: v for k, v in env.items() if not k.startswith("ALERT_TEST_")}
    result = subprocess.run(
        [sys.executable, "-m", "prod_core.runner", "--feed", "replay", "--speed", "max", "--port", "0",
         "--data", *map(str, paths)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    return result, db


def _trades(db: Path) -> list[tuple]:
    with Storage(str(db)) as storage:
        return [(f["ts_ms"], f["symbol"], f["side"], round(f["qty"], 12), round(f["price"], 10), f["reason"])
                for f in storage.fills()]


def test_replay_max_speed_is_reproducible_counts_anomalies_and_reports_valid_bars(tmp_path: Path) -> None:
    """Two replays of the same files give identical trades; bad rows are rejected and counted; bars = valid rows."""
    paths, valid = _write_csvs(tmp_path)
    first, db1 = _replay(tmp_path, "a", paths)
    second, db2 = _replay(tmp_path, "b", paths)
    assert first.returncode == 0, first.stdout + first.stderr
    assert second.returncode == 0, second.stdout + second.stderr
    last = first.stdout.strip().splitlines()[-1]
    assert last.startswith(f"replay: bars={valid} fills=")
    assert "engine_s=" in last
    trades = _trades(db1)
    assert trades and trades == _trades(db2)
    assert last.split()[2] == f"fills={len(trades)}"
    with Storage(str(db1)) as storage:
        run = storage.list_runs(1)[0]
        assert run["status"] == "stopped" and run["feed"] == "replay"
        assert storage.open_positions() == []  # a replay closes what it opened at the end of the data
        saved = storage.load_governance_state(f"replay:{run['run_id']}")
        stopped = [e for e in storage.events(run["run_id"]) if e["kind"] == "run_stopped"][0]
        warned = [e for e in storage.events(run["run_id"]) if e["kind"] == "data_anomaly"]
    assert stopped["fields"]["anomalies"] == {f"replay:{kind}": 1 for kind in BAD_ROWS}
    assert len(warned) == 1  # one burst, one line
    assert last.split()[-1] == f"equity={saved['cash_usd']:.2f}"  # flat at the end: equity is the wallet
    assert "отклонено баров" in first.stdout


def test_replay_of_a_missing_file_fails_with_a_clear_message(tmp_path: Path) -> None:
    """A --data path that does not exist stops the runner with exit 2 naming the path."""
    result, _ = _replay(tmp_path, "x", [tmp_path / "nope.csv"])
    assert result.returncode == 2
    assert "nope.csv" in (result.stdout + result.stderr).strip().splitlines()[-1]
