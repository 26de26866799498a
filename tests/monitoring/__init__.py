"""Monitoring tests: Prometheus rules, Alertmanager config, Grafana dashboards, dev setup.

Shared helpers live here (the package is ``tests.monitoring``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
PROM_DIR = REPO / "configs" / "prometheus"
ALERTS = PROM_DIR / "alerts.yml"
ALERTS_TEST = PROM_DIR / "alerts_test.yml"
PROM_CONFIG = PROM_DIR / "prometheus.yml"
AM_SAMPLE = REPO / "configs" / "alertmanager" / "config.sample.yml"
RENDER_SCRIPT = REPO / "scripts" / "render_alertmanager_config.sh"
GRAFANA_DIR = REPO / "configs" / "grafana"
DASHBOARD_DIR = GRAFANA_DIR / "dashboards"
DEPLOY_DIR = REPO / "deploy" / "monitoring"

RUNBOOK_ALERTS = (
    "FeedHealthDegraded",
    "DrawdownCritical",
    "DailyLockEngaged",
    "PortfolioSafeModeStuck",
    "RunnerHeartbeatLost",
    "MetricsDeadman",
)

# Dashboard file -> title as the runbook names it.
RUNBOOK_DASHBOARDS = {
    "agent_topology.json": "Agent Topology",
    "feed_risk_states.json": "Feed & Risk States",
    "stage_latency.json": "Stage Latency",
    "performance.json": "Performance",
    "exposure_positions.json": "Exposure & Positions",
}


def alert_rules() -> list[dict]:
    groups = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def dashboards() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text(encoding="utf-8")) for p in sorted(DASHBOARD_DIR.glob("*.json"))}


def dashboard_targets() -> Iterator[tuple[str, dict, dict]]:
    """(dashboard title, panel, target) for every query of every committed dashboard."""
    for dash in dashboards().values():
        for panel in dash["panels"]:
            for target in panel.get("targets", []):
                yield dash["title"], panel, target


def concrete(expr: str, rate_interval: str = "1m") -> str:
    """A dashboard query with Grafana's variables replaced, as Grafana would send it."""
    return expr.replace("$__rate_interval", rate_interval).replace("$stage", ".*").replace("$account", ".*")


_FUNCTIONS_AND_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "offset", "inf", "nan",
}


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (good enough for the expressions we ship)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)          # string literals
    text = re.sub(r"\{[^}]*\}", "", text)                     # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)                    # ranges and subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\()?", text):
        word, call = match.group(1), match.group(2)
        if call or word.lower() in _FUNCTIONS_AND_KEYWORDS:
            continue
        names.add(word)
    return names
