"""Integration: the real paper loop + a real Prometheus with the shipped alerts.yml.

Two runners (loopback, temp dirs, free ports) are scraped by one Prometheus (1 s scrape
and evaluation, temp TSDB):
  * "drill": started through the runbook's bash ALERT_TEST snippet exactly as written
    (docs/RUNBOOK.md), so feed_health is 0, the daily lock is max_daily_loss and safe
    mode is on;
  * "clean": no overlay.
Every dashboard query and every alert expression is evaluated by that Prometheus;
FeedHealthDegraded must go pending then firing for the drill and never for the clean
runner; after both are stopped cleanly (SIGINT) nothing pages: FeedHealthDegraded
resolves, and the absence alerts stay inactive once the exporters are gone.
Bounded: about 30 s; all processes are killed in `finally`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

from tests.conftest import require_tool
from tests.monitoring import ALERTS, REPO, alert_rules, concrete, dashboard_targets, metric_names

RUNBOOK = REPO / "docs" / "RUNBOOK.md"
LINGER_S = 10  # long enough for several 1 s scrapes of the final state, however busy the machine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def runbook_bash_alert_snippet() -> str:
    """The runbook's ```bash block that sets the ALERT_TEST_* variables, verbatim."""
    blocks = re.findall(r"```bash\n(.*?)```", RUNBOOK.read_text(encoding="utf-8"), re.S)
    (snippet,) = [b for b in blocks if "export ALERT_TEST_" in b]
    return snippet


class Proc:
    """A subprocess whose merged output is collected line by line in a thread."""

    def __init__(self, name: str, cmd: list[str], *, env: dict[str, str], cwd: Path) -> None:
        self.name = name
        self.lines: list[str] = []
        self.popen = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True, encoding="utf-8", errors="replace", start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.append(line.rstrip("\n"))

    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, text: str, deadline: float) -> None:
        while time.time() < deadline:
            if any(text in line for line in self.lines):
                return
            if self.popen.poll() is not None:
                time.sleep(0.2)  # let the reader drain
                if any(text in line for line in self.lines):
                    return
                raise AssertionError(f"{self.name} exited {self.popen.returncode} before {text!r}:\n{self.output()}")
            time.sleep(0.05)
        raise AssertionError(f"{self.name}: no {text!r} in time:\n{self.output()}")

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=10)


class Prom:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path: str, **params: str) -> dict:
        url = f"{self.base}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=5) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        data = self.get("/api/v1/query", query=expr)
        return data["result"] if data["resultType"] == "vector" else [data["result"]]

    def alerts(self) -> list[dict]:
        return self.get("/api/v1/alerts")["alerts"]


class AlertRecorder(threading.Thread):
    """Polls /api/v1/alerts and remembers every (alertname, instance, state) it saw."""

    def __init__(self, prom: Prom) -> None:
        super().__init__(daemon=True)
        self.prom = prom
        self.seen: list[tuple[float, str, str, str]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                for a in self.prom.alerts():
                    self.seen.append((time.time(), a["labels"]["alertname"], a["labels"].get("instance", ""),
                                      a["state"]))
            except OSError:
                pass
            self.stop.wait(0.25)

    def states(self, alertname: str, instance: str | None = None, since: float = 0.0) -> set[str]:
        return {s for t, n, i, s in self.seen if n == alertname and t >= since and (instance is None or i == instance)}


def _wait(predicate, deadline: float, what: str, interval: float = 0.25):
    last = None
    while time.time() < deadline:
        try:
            last = predicate()
        except OSError as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def _runner_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALERT_TEST_")}
    env.update(REPORTS_DIR=str(tmp / "reports"), LOGS_DIR=str(tmp / "logs"), ENV_FILE=str(tmp / "none"),
               PYTHONUNBUFFERED="1")
    return env


def _runner_args(tmp: Path, port: int) -> list[str]:
    return ["-m", "prod_core.runner", "--max-seconds", "300", "--port", str(port), "--db", str(tmp / "crupto.db"),
            "--linger", str(LINGER_S), "--bar-interval", "0.1"]


def test_paper_loop_prometheus_dashboards_and_alerts(tmp_path: Path) -> None:
    prometheus = require_tool("prometheus")
    snippet = runbook_bash_alert_snippet()
    assert "export ALERT_TEST_FEED_HEALTH=bad" in snippet

    drill_dir, clean_dir, prom_dir = tmp_path / "drill", tmp_path / "clean", tmp_path / "prom"
    for d in (drill_dir, clean_dir, prom_dir):
        d.mkdir()
    drill_port, clean_port, prom_port = _free_port(), _free_port(), _free_port()
    drill_inst, clean_inst = f"127.0.0.1:{drill_port}", f"127.0.0.1:{clean_port}"
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERTS)],  # the shipped rules, unchanged
        "scrape_configs": [{"job_name": "crupto", "static_configs": [{"targets": [drill_inst, clean_inst]}]}],
    }
    (prom_dir / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")

    procs: list[Proc] = []
    recorder: AlertRecorder | None = None
    try:
        prom_proc = Proc("prometheus", [
            prometheus, f"--config.file={prom_dir / 'prometheus.yml'}", f"--storage.tsdb.path={prom_dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ], env=dict(os.environ), cwd=prom_dir)
        procs.append(prom_proc)
        # the drill runner: the runbook's bash snippet as written, then the runner
        drill = Proc("drill-runner", [
            "bash", "-c", snippet + '\nexec "$0" "$@"', sys.executable, *_runner_args(drill_dir, drill_port),
        ], env=_runner_env(drill_dir), cwd=REPO)
        procs.append(drill)
        clean = Proc("clean-runner", [sys.executable, *_runner_args(clean_dir, clean_port)],
                     env=_runner_env(clean_dir), cwd=REPO)
        procs.append(clean)

        start = time.time()
        drill.wait_for("Prometheus exporter слушает порт", start + 120)
        clean.wait_for("Prometheus exporter слушает порт", start + 120)
        prom = Prom(prom_port)
        _wait(lambda: urllib.request.urlopen(f"{prom.base}/-/ready", timeout=2).status == 200,
              start + 120, "Prometheus ready")
        recorder = AlertRecorder(prom)
        recorder.start()

        # both targets scraped, runners up
        _wait(lambda: len([r for r in prom.query('up{job="crupto"} == 1')]) == 2, start + 120, "both targets up")
        _wait(lambda: len(prom.query("runner_up == 1")) == 2, start + 120, "runner_up 1 on both")

        # the overlay of the runbook snippet is visible on the drill runner only
        overlays = prom.query("alert_test_overlay == 1")
        assert {(r["metric"]["variable"], r["metric"]["value"]) for r in overlays} == {
            ("ALERT_TEST_FEED_HEALTH", "bad"), ("ALERT_TEST_DAILY_LOCK", "max_daily_loss"),
            ("ALERT_TEST_SAFE_MODE", "on")}
        assert {r["metric"]["instance"] for r in overlays} == {drill_inst}

        # ---- every dashboard query parses and returns data (wait for rate windows to fill)
        deadline = time.time() + 120  # an upper bound: the loop ends when every query has data
        missing: list[str] = []
        while time.time() < deadline:
            missing = [t["expr"] for _d, _p, t in dashboard_targets() if not prom.query(concrete(t["expr"], "10s"))]
            if not missing:
                break
            time.sleep(0.5)
        assert not missing, f"dashboard queries without data: {missing}"

        # Node Graph frames: nodes carry id/title, edges id/source/target
        topo = {t["refId"]: t["expr"] for _d, p, t in dashboard_targets() if p["type"] == "nodeGraph"}
        nodes = prom.query(concrete(topo["nodes"], "10s"))
        edges = prom.query(concrete(topo["edges"], "10s"))
        node_ids = {n["metric"]["id"] for n in nodes}
        assert all(n["metric"].get("id") and n["metric"].get("title") for n in nodes)
        assert all(e["metric"].get("id") and e["metric"].get("source") and e["metric"].get("target") for e in edges)
        assert {"feed:sim", "regime", "strategy", "risk", "portfolio", "execution", "storage", "telemetry"} <= node_ids
        assert {e["metric"]["source"] for e in edges} | {e["metric"]["target"] for e in edges} <= node_ids
        # the Stage Latency template variable
        stages = prom.get("/api/v1/label/stage/values", **{"match[]": "stage_latency_ms_bucket"})
        assert {"feed", "regime", "strategy", "risk", "portfolio", "execution", "storage", "telemetry"} <= set(stages)

        # ---- every alert expression parses and evaluates; its metrics return data
        for rule in alert_rules():
            prom.query(rule["expr"])  # status success, possibly empty
            for name in metric_names(rule["expr"]):
                assert prom.query(name), f"{rule['alert']}: {name} has no data"
        rules = [r for g in prom.get("/api/v1/rules")["groups"] for r in g["rules"]]
        assert {r["name"] for r in rules} == {r["alert"] for r in alert_rules()}
        for r in rules:
            assert r["health"] == "ok", r

        # ---- the drills: FeedHealthDegraded pending then firing on the drill runner only
        def feed_alert_state() -> str | None:
            for a in prom.alerts():
                if a["labels"]["alertname"] == "FeedHealthDegraded" and a["labels"]["instance"] == drill_inst:
                    return a["state"]
            return None

        _wait(lambda: feed_alert_state() == "firing", time.time() + 120, "FeedHealthDegraded firing")
        assert "pending" in recorder.states("FeedHealthDegraded", drill_inst)
        firing = {(a["labels"]["alertname"], a["labels"].get("reason")): a for a in prom.alerts()
                  if a["labels"].get("instance") == drill_inst}
        assert firing[("DailyLockEngaged", "max_daily_loss")]["state"] == "firing"
        assert firing[("PortfolioSafeModeStuck", None)]["state"] == "pending"  # fires after 5 min
        assert firing[("FeedHealthDegraded", None)]["annotations"]["action"] == "Проверить CCXT/ws, перезапустить feed."
        assert not recorder.states("FeedHealthDegraded", clean_inst)

        # ---- clean stop of both (Ctrl+C): FeedHealthDegraded resolves, nothing new pages
        stop_at = time.time()
        for proc in (drill, clean):
            os.killpg(proc.popen.pid, signal.SIGINT)
        for proc in (drill, clean):
            proc.wait_for("Paper-loop остановлен", stop_at + 120)
        _wait(lambda: len(prom.query("runner_up == 0")) == 2, stop_at + 120, "runner_up 0 scraped (linger)")
        _wait(lambda: feed_alert_state() is None, stop_at + 120, "FeedHealthDegraded resolved after the stop")
        for proc in (drill, clean):
            assert proc.popen.wait(timeout=LINGER_S + 120) == 0, proc.output()
        gone_at = time.time()
        _wait(lambda: not prom.query('up{job="crupto"} == 1'), gone_at + 60, "targets down")
        _wait(lambda: prom.query("absent(feed_health)"), gone_at + 60, "feed_health stale")
        time.sleep(3)  # several evaluations with the metrics absent
        for name in ("MetricsDeadman", "RunnerHeartbeatLost"):
            assert not recorder.states(name), f"{name} went {recorder.states(name)} at a planned stop"
        assert not recorder.states("FeedHealthDegraded", since=gone_at)
        assert not recorder.states("FeedHealthDegraded", clean_inst)
    finally:
        if recorder is not None:
            recorder.stop.set()
        for proc in reversed(procs):
            try:
                proc.kill()
            except Exception:  # pragma: no cover - best effort cleanup
                pass
