"""docs/DEV_SETUP.md works as written.

Its command blocks marked `<!-- test: NAME -->` are run here verbatim, except that fixed
ports are swapped for free ones and long durations shortened (noted per test). The
runbook's own bash ALERT_TEST snippet is run verbatim by test_live_stack.py.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.conftest import require_tool
from tests.monitoring import REPO, alert_rules

DEV_SETUP = REPO / "docs" / "DEV_SETUP.md"


def blocks() -> dict[str, str]:
    text = DEV_SETUP.read_text(encoding="utf-8")
    return dict(re.findall(r"<!-- test: ([\w-]+) -->\n```bash\n(.*?)```", text, re.S))


def all_bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", DEV_SETUP.read_text(encoding="utf-8"), re.S)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALERT_TEST_", "TELEGRAM_", "PROMETHEUS_"))}
    env.update(HOME=str(tmp / "home"), PYTHON=sys.executable, ENV_FILE=str(tmp / "none"),
               REPORTS_DIR=str(tmp / "reports"), LOGS_DIR=str(tmp / "logs"), DB_PATH=str(tmp / "crupto.db"),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("XDG_CONFIG_HOME", None)
    env.update(extra)
    (tmp / "home").mkdir(exist_ok=True)
    return env


def _bash(script: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", "set -e\n" + script], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _background(script: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(["bash", "-c", "exec " + script.strip()], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _stop(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if proc.stdout is None or proc.stdout.closed:
        return ""
    return proc.stdout.read()


def _get(url: str, deadline: float) -> bytes:
    last: Exception | None = None
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return resp.read()
        except OSError as exc:
            last = exc
            time.sleep(0.2)
    raise AssertionError(f"{url}: {last}")


def test_marked_blocks_exist() -> None:
    assert {"docker-runner", "prometheus", "alertmanager", "render", "drill", "checks"} <= set(blocks())


def test_every_bash_block_is_valid_bash() -> None:
    for block in all_bash_blocks():
        res = subprocess.run(["bash", "-n"], input=block, capture_output=True, text=True)
        assert res.returncode == 0, (block, res.stderr)


def test_every_repository_path_it_names_exists() -> None:
    text = DEV_SETUP.read_text(encoding="utf-8")
    paths = set(re.findall(r"`((?:configs|scripts|deploy|docs)/[\w./*-]+)`", text))
    assert paths
    for p in paths:
        matches = list(REPO.glob(p)) if "*" in p else [REPO / p]
        assert matches and all(m.exists() for m in matches), p


def test_alert_table_matches_the_shipped_rules() -> None:
    text = DEV_SETUP.read_text(encoding="utf-8")
    for rule in alert_rules():
        expr = " ".join(rule["expr"].split())
        if rule["alert"] in ("StageLatencySLA", "ExecutionRejectRateHigh"):
            continue  # summarised in words
        assert f"`{expr}`" in text, rule["alert"]


def test_checks_block(tmp_path: Path) -> None:
    require_tool("promtool")
    res = _bash(blocks()["checks"], _env(tmp_path))
    assert res.returncode == 0, res.stdout + res.stderr


def test_render_block_then_alertmanager_block(tmp_path: Path) -> None:
    require_tool("envsubst")
    require_tool("amtool")
    am = require_tool("prometheus-alertmanager")
    env = _env(tmp_path, AM_DATA=str(tmp_path / "am-data"))
    res = _bash(blocks()["render"], env)
    assert res.returncode == 0, res.stderr
    config = tmp_path / "home" / ".config" / "crupto" / "alertmanager.yml"
    assert config.exists()
    port = _free_port()
    script = blocks()["alertmanager"].replace("127.0.0.1:9093", f"127.0.0.1:{port}")  # free port
    script = script.replace("prometheus-alertmanager ", f"{am} ", 1)
    proc = _background(script, env)
    try:
        _get(f"http://127.0.0.1:{port}/-/ready", time.time() + 20)
    finally:
        out = _stop(proc)
    assert "Completed loading of configuration file" in out, out


def test_prometheus_block_loads_the_shipped_rules(tmp_path: Path) -> None:
    require_tool("prometheus")
    env = _env(tmp_path, PROM_DATA=str(tmp_path / "prom-data"))
    port = _free_port()
    script = blocks()["prometheus"].replace("127.0.0.1:9090", f"127.0.0.1:{port}")  # free port
    proc = _background(script, env)
    try:
        _get(f"http://127.0.0.1:{port}/-/ready", time.time() + 20)
        body = _get(f"http://127.0.0.1:{port}/api/v1/rules", time.time() + 10).decode()
        for name in {r["alert"] for r in alert_rules()}:
            assert f'"name":"{name}"' in body, name
        deadline = time.time() + 15  # targets appear after the first service discovery
        while "localhost:9108" not in _get(f"http://127.0.0.1:{port}/api/v1/targets", deadline).decode():
            assert time.time() < deadline, "scrape target localhost:9108 not configured"
            time.sleep(0.3)
    finally:
        _stop(proc)
    assert (tmp_path / "prom-data").is_dir()


def test_drill_block_runs_the_runner_with_the_overlay(tmp_path: Path) -> None:
    port = _free_port()
    env = _env(tmp_path, PROMETHEUS_PORT=str(port), EXPORTER_LINGER_S="0")
    script = blocks()["drill"]
    assert "--max-seconds 30" in script
    res_proc = subprocess.Popen(["bash", "-c", script], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:  # the documented block as is; a Ctrl+C ends it once the overlay was scraped (no race with its 30 s)
        # the exporter serves from the runner's start, the overlay is applied a moment later: scrape until it shows
        want = 'alert_test_overlay{value="bad",variable="ALERT_TEST_FEED_HEALTH"} 1.0'
        deadline = time.time() + 120
        metrics = _get(f"http://127.0.0.1:{port}/metrics", deadline).decode()
        while want not in metrics:
            assert time.time() < deadline and res_proc.poll() is None, metrics
            time.sleep(0.2)
            metrics = _get(f"http://127.0.0.1:{port}/metrics", deadline).decode()
        os.killpg(res_proc.pid, signal.SIGINT)
        out, _ = res_proc.communicate(timeout=120)
    finally:
        _stop(res_proc)
    assert res_proc.returncode == 0, out
    assert "ALERT_TEST_FEED_HEALTH=bad" in out and "Paper-loop остановлен" in out


def test_docker_runner_block_binds_all_interfaces(tmp_path: Path) -> None:
    port = _free_port()
    env = _env(tmp_path, PROMETHEUS_PORT=str(port), EXPORTER_LINGER_S="0")
    script = blocks()["docker-runner"].strip() + " --max-seconds 300"  # bounded; ended by Ctrl+C once scraped
    proc = subprocess.Popen(["bash", "-c", script], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        _get(f"http://127.0.0.1:{port}/metrics", time.time() + 120)
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        _stop(proc)
    assert proc.returncode == 0, out
    assert f"http://0.0.0.0:{port}/metrics" in out
