"""The runbook's bash blocks, run as written: clearing ALERT_TEST_*, rendering Alertmanager's config,
and reading the metrics at the end of a session (while running, and from metrics.txt after the stop)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from tests.conftest import require_tool
from tests.monitoring import REPO
from tests.runner.helpers import PaperProcess

RUNBOOK = REPO / "docs" / "RUNBOOK.md"


def _block(marker: str) -> str:
    """The one ```bash block of the runbook that contains ``marker``, verbatim."""
    blocks = re.findall(r"```bash\n(.*?)```", RUNBOOK.read_text(encoding="utf-8"), re.S)
    (found,) = [b for b in blocks if marker in b]
    return found


def _bash(script: str, *, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-euo", "pipefail", "-c", script], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def test_runbook_line_really_clears_the_alert_test_variables(tmp_path: Path) -> None:
    env = {**os.environ, "ALERT_TEST_FEED_HEALTH": "bad", "ALERT_TEST_DAILY_LOCK": "max_daily_loss",
           "ALERT_TEST_SAFE_MODE": "on"}
    # what the seed runbook says does nothing in bash (the glob is not expanded over variable names)
    naive = _bash("unset ALERT_TEST_* ; env | grep -c '^ALERT_TEST_' || true", env=env, cwd=tmp_path)
    assert naive.stdout.strip() == "3"
    block = _block("unset")
    done = _bash(block + "\nenv | grep -c '^ALERT_TEST_' || true", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "ALERT_TEST_* сброшены" in done.stdout and done.stdout.strip().endswith("0"), done.stdout


def test_runbook_renders_an_alertmanager_config_that_amtool_accepts(tmp_path: Path) -> None:
    require_tool("envsubst")
    require_tool("amtool")
    block = _block("render_alertmanager_config.sh")
    env = {**os.environ, "HOME": str(tmp_path), "PATH": os.environ["PATH"]}
    done = _bash(block, env=env, cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    rendered = tmp_path / ".config" / "crupto" / "alertmanager.yml"
    assert rendered.is_file() and "${" not in rendered.read_text()
    assert "SUCCESS" in done.stdout + done.stderr  # amtool check-config's verdict, as the operator sees it


def test_runbook_metrics_at_the_end_of_the_session_while_running_and_after_the_stop(tmp_path: Path) -> None:
    """curl works while the runner runs; after Ctrl+C the linger is announced and metrics.txt keeps the last scrape."""
    block = _block("metrics.txt").strip().splitlines()
    curl_line, cat_line = block[0], block[1]
    run = PaperProcess(tmp_path, "--bar-interval", "0.05", "--linger", "2", "--run-id", "metrics-1")
    try:
        run.wait_for_line("Фид sim зарегистрирован", timeout=120)
        env = {**os.environ}
        got = _bash(curl_line.replace("9108", str(run.port)), env=env, cwd=tmp_path)
        assert got.returncode == 0, got.stderr
        assert "feed_health" in (tmp_path / "metrics_now.txt").read_text()
        run.interrupt()
        run.wait_for_line("Экспортер метрик остаётся на порту", timeout=120)
        assert "ещё 2 с" in run.output
        assert run.wait(timeout=120) == 0
    finally:
        run.kill()
    saved = _bash(cat_line, env={**os.environ}, cwd=tmp_path)  # reports/ is REPORTS_DIR under tmp_path
    assert saved.returncode == 0, saved.stderr
    assert "runner_up 0.0" in saved.stdout and "bars_total" in saved.stdout
    assert "Метрики на момент остановки:" in run.output
