"""A replay draws a progress bar with an ETA on a terminal and nothing when its output is piped."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_tool, shared_data_dir
from tests.runner.helpers import REPO


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALERT_TEST_") and k != "CRUPTO_PROGRESS"}
    env.update(ENV_FILE=str(tmp / "no.env"), DB_PATH=str(tmp / "r.db"), REPORTS_DIR=str(tmp / "reports"),
               LOGS_DIR=str(tmp / "logs"), TERM="xterm", COLUMNS="120")
    return env


def _cmd(data: list[Path]) -> list[str]:
    return [sys.executable, "-m", "prod_core.runner", "--feed", "replay", "--port", "0", "--linger", "0",
            "--config-dir", str(REPO / "configs" / "scenarios" / "sma_parity"), "--data", *map(str, data)]


def test_replay_on_a_terminal_shows_a_progress_bar_with_rate_and_eta(tmp_path: Path) -> None:
    script = require_tool("script")
    data = sorted(shared_data_dir().glob("BYBIT_*_5m.csv"))
    # util-linux `script` gives the runner a pseudo-terminal, as an operator's shell would
    proc = subprocess.run([script, "-qec", shlex.join(_cmd(data)), "/dev/null"], cwd=REPO, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "replay: bars=129600 fills=5009" in out
    # tqdm: percent, bar, done/total bars, [elapsed<ETA, rate]
    bars = re.findall(r"replay:\s+(\d+)%\|.*?\| [\d.]+k?/130k \[[\d:]+<[\d:?]+, [\d.?]+k?bar/s\]", out)
    assert bars, out[-3000:]
    assert "100" in bars and len(set(bars)) >= 2, bars  # it moved, and it ended full


def test_piped_replay_prints_no_progress_bar(tmp_path: Path) -> None:
    data = sorted(shared_data_dir().glob("BYBIT_*_5m.csv"))[:1]
    proc = subprocess.run(_cmd(data), cwd=REPO, env=_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "replay: bars=25920" in proc.stdout
    assert "%|" not in proc.stdout + proc.stderr and "\r" not in proc.stderr
