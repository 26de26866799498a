"""replay.daily_reset: a long replay evaluates every day instead of stopping at the first drawdown stop."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import yaml

from tests.conftest import shared_data_dir
from tests.runner.helpers import REPO


def _replay(tmp: Path, config_dir: Path, name: str, data: list[Path]) -> tuple[str, Path]:
    db = tmp / f"{name}.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALERT_TEST_")}
    env.update(ENV_FILE=str(tmp / "none"), DB_PATH=str(db), REPORTS_DIR=str(tmp / f"reports-{name}"),
               LOGS_DIR=str(tmp / f"logs-{name}"))
    result = subprocess.run(
        [sys.executable, "-m", "prod_core.runner", "--feed", "replay", "--config-dir", str(config_dir),
         "--port", "0", "--linger", "0", "--data", *map(str, data)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout, db


def _fill_days(db: Path) -> set[int]:
    with closing(sqlite3.connect(db)) as conn:
        return {ts // 86_400_000 for (ts,) in conn.execute("SELECT ts_ms FROM fills")}


def test_daily_reset_trades_every_day_of_a_long_replay_and_lists_the_operator_equivalent_actions(
        tmp_path: Path, config_dir: Path) -> None:
    """Shipped governance on 90 days of Bybit 5m: without daily_reset the drawdown stop ends trading in the first
    days; with it, entries resume each UTC day, and each reset is journaled and listed in summary.md."""
    data = shared_data_dir()
    files = [data / "BYBIT_BTCUSDT_5m.csv", data / "BYBIT_ETHUSDT_5m.csv"]
    _, db_off = _replay(tmp_path, config_dir, "off", files)
    off_days = _fill_days(db_off)

    path = config_dir / "governance.yaml"
    gov = yaml.safe_load(path.read_text())
    gov["replay"]["daily_reset"] = True
    path.write_text(yaml.safe_dump(gov, sort_keys=False))
    out, db_on = _replay(tmp_path, config_dir, "on", files)
    on_days = _fill_days(db_on)

    assert len(on_days) >= 30 and len(on_days) >= 5 * max(1, len(off_days))
    assert max(on_days) - min(on_days) >= 80  # trading reaches the end of the 90 days
    with closing(sqlite3.connect(db_on)) as conn:
        resets = conn.execute("SELECT COUNT(*) FROM journal WHERE event = 'day_roll' AND body_json LIKE "
                              "'%\"daily_reset\": [%reset-dd%'").fetchone()[0]
        events = conn.execute("SELECT COUNT(*) FROM events WHERE kind = 'replay_daily_reset'").fetchone()[0]
    assert resets >= 1 and events >= resets
    run_dir = next((tmp_path / "reports-on").glob("run_*"))
    summary = (run_dir / "summary.md").read_text()
    assert "## Operator-equivalent actions (replay.daily_reset)" in summary
    assert re.search(r"^\| total \| (\d+) days \|", summary, re.M).group(1) == str(events)
