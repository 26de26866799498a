"""Many runners: a real Prometheus with the shipped configs/prometheus/prometheus.yml discovers the
runners' exporters through the file_sd files (prod_core.telemetry.discovery), labels them with
their account, and does not scrape localhost:9108 twice (the static job owns it)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

from prod_core.telemetry import LiveMetrics, start_exporter
from prod_core.telemetry.discovery import remove_sd_file, write_sd_file
from prod_core.testing.waiting import wait_until
from tests.conftest import require_tool
from tests.monitoring import ALERTS, PROM_CONFIG


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read().decode())


def test_shipped_config_discovers_runners_by_file_sd_with_their_account(tmp_path: Path) -> None:
    prometheus = require_tool("prometheus")
    # the shipped layout: configs/prometheus/prometheus.yml and run/prometheus_sd/ two levels up
    prom_dir = tmp_path / "configs" / "prometheus"
    prom_dir.mkdir(parents=True)
    shutil.copy(PROM_CONFIG, prom_dir / "prometheus.yml")
    shutil.copy(ALERTS, prom_dir / "alerts.yml")
    sd = tmp_path / "run" / "prometheus_sd"
    exporters = {}
    proc = None
    try:
        for account in ("a1", "a2"):
            live = LiveMetrics(feeds=["sim"], symbols=["BTC/USDT"], strategies=["trend_following"])
            live.runner_up = 1
            exporters[account] = start_exporter(live, port=0)
            write_sd_file(sd, account, host="localhost", port=exporters[account].port, run_id=f"run-{account}")
        write_sd_file(sd, "paper", host="localhost", port=9108, run_id="run-paper")  # the runbook's runner
        port = _free_port()
        proc = subprocess.Popen([prometheus, f"--config.file={prom_dir / 'prometheus.yml'}",
                                 f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        base = f"http://127.0.0.1:{port}/api/v1"

        def targets() -> dict | None:
            try:
                data = _get(f"{base}/targets")["data"]
            except OSError:
                return None
            return data if len(data["activeTargets"]) >= 3 else None

        data = wait_until(targets, 60, "three active targets", interval=0.3, proc=proc)
        active = sorted((t["labels"]["job"], t["labels"].get("account"), t["labels"]["instance"], t["labels"].get("run_id"))
                        for t in data["activeTargets"])
        assert active == sorted([
            ("crupto", "paper", "localhost:9108", None),
            ("crupto_accounts", "a1", f"localhost:{exporters['a1'].port}", "run-a1"),
            ("crupto_accounts", "a2", f"localhost:{exporters['a2'].port}", "run-a2"),
        ])
        # the file_sd entry for port 9108 is dropped: that exporter is scraped once, by the static job
        assert [t["discoveredLabels"]["__address__"] for t in data["droppedTargets"]] == ["localhost:9108"]

        def up(account: str) -> list:
            q = urllib.parse.quote(f'runner_up{{account="{account}"}}')
            return _get(f"{base}/query?query={q}")["data"]["result"]

        for account in ("a1", "a2"):
            (series,) = wait_until(lambda a=account: up(a), 60, f"runner_up of {account} scraped", interval=0.5,
                                   proc=proc)
            assert series["metric"]["run_id"] == f"run-{account}" and series["value"][1] == "1"

        # a clean stop removes the file: the target goes away
        assert remove_sd_file(sd, "a2", "run-a2")
        wait_until(lambda: all(t["labels"].get("account") != "a2" for t in _get(f"{base}/targets")["data"]["activeTargets"]),
                   60, "a2's target gone", interval=0.3, proc=proc)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
        for exporter in exporters.values():
            exporter.stop()


def test_remove_keeps_a_newer_runners_file(tmp_path: Path) -> None:
    write_sd_file(tmp_path, "a1", host="localhost", port=1, run_id="new")
    assert not remove_sd_file(tmp_path, "a1", "old")
    assert (tmp_path / "a1.json").exists()
    assert remove_sd_file(tmp_path, "a1", "new") and not (tmp_path / "a1.json").exists()
