"""configs/prometheus: promtool check/test, the runbook's alert names and metadata.

The behaviour of every alert (fires / stays silent, timings) is proven by
configs/prometheus/alerts_test.yml, run here through `promtool test rules`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml

from prod_core.telemetry import LiveMetrics, start_exporter
from tests.conftest import require_tool
from tests.monitoring import (
    ALERTS,
    ALERTS_TEST,
    DEPLOY_DIR,
    PROM_CONFIG,
    RUNBOOK_ALERTS,
    alert_rules,
    dashboard_targets,
    metric_names,
)


def _run(*cmd: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=60)


def test_promtool_check_rules() -> None:
    promtool = require_tool("promtool")
    res = _run(promtool, "check", "rules", str(ALERTS))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


def test_promtool_unit_tests_pass() -> None:
    """Every alert fires AND stays silent where it must (see alerts_test.yml)."""
    promtool = require_tool("promtool")
    res = _run(promtool, "test", "rules", str(ALERTS_TEST))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


def test_unit_tests_can_fail(tmp_path: Path) -> None:
    """A wrong expectation makes `promtool test rules` fail (the suite is not vacuous)."""
    promtool = require_tool("promtool")
    shutil.copy(ALERTS, tmp_path / "alerts.yml")
    text = ALERTS_TEST.read_text(encoding="utf-8")
    # claim the feed-health drill is still silent at 15 s
    broken = text.replace("      - eval_time: 15s\n        alertname: FeedHealthDegraded\n        exp_alerts:\n",
                          "      - eval_time: 15s\n        alertname: FeedHealthDegraded\n        exp_alerts: []\n"
                          "        unused:\n", 1)
    assert broken != text
    (tmp_path / "alerts_test.yml").write_text(broken, encoding="utf-8")
    res = _run(promtool, "test", "rules", str(tmp_path / "alerts_test.yml"))
    assert res.returncode != 0


@pytest.mark.parametrize("config", [PROM_CONFIG, DEPLOY_DIR / "prometheus.yml"], ids=["host", "docker"])
def test_prometheus_configs_are_valid(config: Path, tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    # the docker variant expects alerts.yml next to it (compose mounts it there)
    shutil.copy(config, tmp_path / "prometheus.yml")
    shutil.copy(ALERTS, tmp_path / "alerts.yml")
    res = _run(promtool, "check", "config", str(tmp_path / "prometheus.yml"))
    assert res.returncode == 0, res.stdout + res.stderr


def test_docker_prometheus_config_only_differs_in_addresses() -> None:
    host = yaml.safe_load(PROM_CONFIG.read_text(encoding="utf-8"))
    docker = yaml.safe_load((DEPLOY_DIR / "prometheus.yml").read_text(encoding="utf-8"))
    assert host["global"] == docker["global"]
    assert host["rule_files"] == docker["rule_files"] == ["alerts.yml"]
    assert [j["job_name"] for j in host["scrape_configs"]] == [j["job_name"] for j in docker["scrape_configs"]]
    assert host["scrape_configs"][0]["static_configs"][0]["targets"] == ["localhost:9108"]
    assert docker["scrape_configs"][0]["static_configs"][0]["targets"] == ["host.docker.internal:9108"]


def test_scrape_interval_is_short_enough_for_the_drills() -> None:
    glob = yaml.safe_load(PROM_CONFIG.read_text(encoding="utf-8"))["global"]
    assert glob["scrape_interval"] == "5s"
    assert glob["evaluation_interval"] == "5s"
    # the unit tests assume the same evaluation interval
    assert yaml.safe_load(ALERTS_TEST.read_text(encoding="utf-8"))["evaluation_interval"] == "5s"


def test_runbook_alerts_named_exactly_with_labels_and_annotations() -> None:
    rules = alert_rules()
    names = {r["alert"] for r in rules}
    assert set(RUNBOOK_ALERTS) <= names
    assert {"StageLatencySLA", "ExecutionRejectRateHigh"} <= names
    for rule in rules:
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        ann = rule["annotations"]
        for key in ("summary", "description", "action", "runbook_url"):
            assert ann.get(key), f"{rule['alert']}: annotation {key} missing"
        assert ann["runbook_url"].startswith("docs/RUNBOOK.md#")


def test_actions_quote_the_runbook() -> None:
    runbook = (Path(__file__).resolve().parents[2] / "docs" / "RUNBOOK.md").read_text(encoding="utf-8")
    for rule in alert_rules():
        if rule["alert"] in RUNBOOK_ALERTS:
            action = rule["annotations"]["action"].rstrip(".").lower()
            assert action in runbook.replace("`", "").lower(), rule["alert"]


def test_absent_alerts_have_a_for_duration() -> None:
    for rule in alert_rules():
        if "absent(" in rule["expr"]:
            assert rule.get("for") in ("1m", "2m", "5m"), f"{rule['alert']} pages at Prometheus start-up"


def test_runbook_thresholds_are_kept() -> None:
    by_name: dict[str, list[dict]] = {}
    for rule in alert_rules():
        by_name.setdefault(rule["alert"], []).append(rule)
    feed = by_name["FeedHealthDegraded"][0]["expr"]
    assert "avg_over_time(" in feed and "[30s:" in feed and "< 0.5" in feed
    assert by_name["DrawdownCritical"][0]["expr"].strip() == "max_dd_r >= drawdown_critical_threshold_r"
    assert by_name["DailyLockEngaged"][0]["expr"].strip() == 'daily_lock_state{reason!="limits_ok"} == 1'
    safe = by_name["PortfolioSafeModeStuck"][0]
    assert safe["expr"].strip() == "portfolio_safe_mode == 1" and safe["for"] == "5m"
    heartbeat = [r["expr"] for r in by_name["RunnerHeartbeatLost"]]
    assert any("time() - runner_last_cycle_ts > 90" in e for e in heartbeat)
    assert any("absent(runner_last_cycle_ts)" in e for e in heartbeat)
    assert "absent(feed_health)" in by_name["MetricsDeadman"][0]["expr"]


def test_every_alert_has_firing_and_silent_unit_tests() -> None:
    tests = yaml.safe_load(ALERTS_TEST.read_text(encoding="utf-8"))["tests"]
    fires: set[str] = set()
    silent: set[str] = set()
    for case in tests:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {r["alert"] for r in alert_rules()}
    assert names <= fires, f"no firing test for {names - fires}"
    assert names <= silent, f"no silent test for {names - silent}"


def _served_metric_names() -> set[str]:
    live = LiveMetrics(feeds=["sim"], symbols=["BTC/USDT"], strategies=["trend_following"])
    live.alert_test["ALERT_TEST_FEED_HEALTH"] = "bad"
    exporter = start_exporter(live, port=0)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{exporter.port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    finally:
        exporter.stop()
    return {m.group(1) for m in re.finditer(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", text, re.M)}


def test_alert_and_dashboard_queries_use_metrics_the_exporter_serves() -> None:
    served = _served_metric_names()
    used = {name for rule in alert_rules() for name in metric_names(rule["expr"])}
    used |= {name for _d, _p, t in dashboard_targets() for name in metric_names(t["expr"])}
    assert used, "no metric names extracted"
    assert used <= served, f"not served by the exporter: {sorted(used - served)}"
