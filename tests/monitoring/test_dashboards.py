"""configs/grafana: the five runbook dashboards, their generator, provisioning and compose.

No Grafana can run here: the dashboards are checked structurally, every query is parsed
by promtool, and tests/monitoring/test_live_stack.py runs every query against a real
Prometheus that scraped a real paper loop.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import require_tool
from tests.monitoring import (
    DASHBOARD_DIR,
    DEPLOY_DIR,
    GRAFANA_DIR,
    REPO,
    RUNBOOK_DASHBOARDS,
    concrete,
    dashboard_targets,
    dashboards,
)

DS_UID = "crupto-prometheus"


def _panels(title: str) -> list[dict]:
    dash = next(d for d in dashboards().values() if d["title"] == title)
    return dash["panels"]


def _unscoped(expr: str) -> str:
    """A query without the `account` matcher every query carries (checked on its own below)."""
    return expr.replace('{account=~"$account"}', "").replace('account=~"$account", ', "")


def _exprs(panel: dict) -> list[str]:
    return [_unscoped(t["expr"]) for t in panel["targets"]]


def test_committed_json_is_what_the_generator_produces(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, str(REPO / "scripts" / "gen_dashboards.py"), "--check"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    # and --check really compares: a stale copy fails
    for path in DASHBOARD_DIR.glob("*.json"):
        (tmp_path / path.name).write_text(path.read_text(encoding="utf-8").replace('"5s"', '"10s"', 1))
    res = subprocess.run([sys.executable, str(REPO / "scripts" / "gen_dashboards.py"), "--check", "--out",
                          str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and "out of date" in res.stderr


def test_five_dashboards_named_as_in_the_runbook() -> None:
    found = dashboards()
    assert set(found) == set(RUNBOOK_DASHBOARDS)
    uids = set()
    for name, dash in found.items():
        assert dash["title"] == RUNBOOK_DASHBOARDS[name]
        assert dash["uid"] and dash["uid"] not in uids
        uids.add(dash["uid"])
        ids = [p["id"] for p in dash["panels"]]
        assert len(ids) == len(set(ids))
        for p in dash["panels"]:
            g = p["gridPos"]
            assert g["x"] + g["w"] <= 24 and g["w"] > 0 and g["h"] > 0


def test_every_query_uses_the_provisioned_datasource() -> None:
    prov = yaml.safe_load((GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert prov["datasources"][0]["uid"] == DS_UID and prov["datasources"][0]["type"] == "prometheus"
    count = 0
    for _title, panel, target in dashboard_targets():
        assert panel["datasource"]["uid"] == DS_UID
        assert target["datasource"]["uid"] == DS_UID
        count += 1
    assert count >= 20
    for dash in dashboards().values():
        for var in dash["templating"]["list"]:
            assert var["datasource"]["uid"] == DS_UID


def test_agent_topology_is_a_node_graph_of_the_agent_metrics() -> None:
    (graph,) = [p for p in _panels("Agent Topology") if p["type"] == "nodeGraph"]
    targets = {t["refId"]: t for t in graph["targets"]}
    assert set(targets) == {"nodes", "edges"}
    for t in targets.values():
        assert t["format"] == "table" and t["instant"] is True
    assert "agent_node_state" in targets["nodes"]["expr"]
    assert "by (id, title, kind)" in targets["nodes"]["expr"]
    assert "agent_edge_events_total" in targets["edges"]["expr"]
    assert "by (id, source, target)" in targets["edges"]["expr"]
    organize = next(t for t in graph["transformations"] if t["id"] == "organize")["options"]
    assert organize["renameByName"]["Value"] == "mainstat"
    assert organize["renameByName"]["kind"] == "subtitle"
    for hidden in ("Time", "__name__", "job", "instance"):
        assert organize["excludeByName"][hidden] is True


def test_feed_and_risk_states_are_status_histories_with_value_mappings() -> None:
    panels = {_exprs(p)[0]: p for p in _panels("Feed & Risk States") if p["type"] == "status-history"}
    for metric in ("feed_health", "daily_lock_state", "dd_state", "regime_label"):
        assert metric in panels, metric
        assert panels[metric]["fieldConfig"]["defaults"]["mappings"], metric
    feed = panels["feed_health"]["fieldConfig"]["defaults"]["mappings"][0]["options"]
    assert {feed[k]["text"] for k in ("1", "0", "-1")} == {"healthy", "degraded", "paused"}
    regime = panels["regime_label"]["fieldConfig"]["defaults"]["mappings"][0]["options"]
    assert [regime[str(i)]["text"] for i in range(5)] == ["warmup", "calm", "trend_up", "trend_down", "volatile"]


def test_stage_latency_has_p95_bar_gauge_and_bucket_heatmap() -> None:
    panels = _panels("Stage Latency")
    (bar,) = [p for p in panels if p["type"] == "bargauge"]
    assert "histogram_quantile(0.95" in bar["targets"][0]["expr"]
    assert "stage_latency_ms_bucket" in bar["targets"][0]["expr"]
    assert bar["targets"][0]["legendFormat"] == "{{stage}}"
    steps = bar["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert steps[-1] == {"value": 50, "color": "red"}  # governance sla.stage_latency_ms default
    (heat,) = [p for p in panels if p["type"] == "heatmap"]
    assert "stage_latency_ms_bucket" in heat["targets"][0]["expr"]
    assert heat["targets"][0]["format"] == "heatmap"


def test_performance_and_exposure_panels() -> None:
    perf = {e for p in _panels("Performance") if p["type"] == "timeseries" for e in _exprs(p)}
    assert {"equity_usd", "pnl_cum_r", "max_dd_r"} <= perf
    stats = {_exprs(p)[0] for p in _panels("Exposure & Positions") if p["type"] == "stat"}
    assert {"open_positions_count", "exposure_gross_pct", "exposure_net_pct", "portfolio_safe_mode"} <= stats


def test_every_dashboard_query_parses_in_promtool(tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    rules = [{"record": f"crupto:dashboard_query_{i}", "expr": concrete(t["expr"])}
             for i, (_d, _p, t) in enumerate(dashboard_targets())]
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}), encoding="utf-8")
    res = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"SUCCESS: {len(rules)} rules found" in res.stdout


def test_dashboard_provider_points_at_the_dashboards() -> None:
    prov = yaml.safe_load((GRAFANA_DIR / "provisioning" / "dashboards" / "crupto.yml").read_text())
    (provider,) = prov["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "${CRUPTO_DASHBOARDS_DIR}"


def test_compose_mounts_existing_files_and_sets_provisioning_variables() -> None:
    compose = yaml.safe_load((DEPLOY_DIR / "compose.yml").read_text(encoding="utf-8"))
    services = compose["services"]
    assert {"prometheus", "grafana", "alertmanager"} <= set(services)
    for name, svc in services.items():
        for volume in svc.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith("."):
                assert (DEPLOY_DIR / source).resolve().exists(), (name, source)
        for port in svc.get("ports", []):
            assert port.startswith("127.0.0.1:"), (name, port)
    env = services["grafana"]["environment"]
    assert env["PROMETHEUS_URL"] == "http://prometheus:9090"
    dash_mount = next(v for v in services["grafana"]["volumes"] if "dashboards" in v and "provisioning" not in v)
    assert dash_mount.split(":")[1] == env["CRUPTO_DASHBOARDS_DIR"]
    assert "host.docker.internal:host-gateway" in services["prometheus"]["extra_hosts"]
    # provisioning files only use variables compose sets
    for path in (GRAFANA_DIR / "provisioning").rglob("*.yml"):
        for var in re.findall(r"\$\{(\w+)\}", path.read_text(encoding="utf-8")):
            assert var in env, (path.name, var)


def test_every_dashboard_has_the_account_variable_and_every_query_uses_it() -> None:
    """Many accounts: each dashboard filters by the `account` target label (file_sd / static target)."""
    for dash in dashboards().values():
        first = dash["templating"]["list"][0]
        assert first["name"] == "account" and first["includeAll"] and first["allValue"] == ".*"
        assert first["query"]["query"] == "label_values(runner_up, account)"
    for _title, _panel, t in dashboard_targets():
        # every selector of a metric carries the matcher (one per metric name in the query)
        assert t["expr"].count('account=~"$account"') >= 1, t["expr"]
        assert not re.search(r"\b(sum|max|min|by)\{", t["expr"]), t["expr"]


def test_scoped_adds_the_account_matcher_to_metric_selectors_only() -> None:
    from prod_core.telemetry.dashboards import scoped

    assert scoped("feed_health") == 'feed_health{account=~"$account"}'
    assert scoped('sum by (le) (increase(x_bucket{stage=~"$stage"}[$__rate_interval]))') == (
        'sum by (le) (increase(x_bucket{account=~"$account", stage=~"$stage"}[$__rate_interval]))')
    assert scoped('sum(increase(f_total{reason="liq"}[24h])) or vector(0)') == (
        'sum(increase(f_total{account=~"$account", reason="liq"}[24h])) or vector(0)')
    assert scoped("max(a) * 1000 and b == 1") == 'max(a{account=~"$account"}) * 1000 and b{account=~"$account"} == 1'
