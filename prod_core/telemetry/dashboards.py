"""Generate the five Grafana dashboards of the runbook into configs/grafana/dashboards/.

The generator behind ``scripts/gen_dashboards.py`` (a thin entry point with the same flags):

    python scripts/gen_dashboards.py           # (re)write the JSON files
    python scripts/gen_dashboards.py --check   # exit 1 if a committed file is not current

The JSON files are committed (Grafana provisions them from disk); this module is their
source. ``render()`` returns every file's text (``json.dumps(..., indent=2)`` plus a newline),
so a test or a tool can compare without writing. tests/monitoring/test_dashboards.py runs
--check, so an edit made only to the JSON, or only here, fails the suite. The generator
itself uses the standard library only.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
OUT_DIR = REPO / "configs" / "grafana" / "dashboards"

# Must match configs/grafana/provisioning/datasources/prometheus.yml.
DS = {"type": "prometheus", "uid": "crupto-prometheus"}
SCHEMA_VERSION = 39  # Grafana 10.4 / 11

Json = dict[str, Any]


# Every query is filtered by the dashboard's `account` variable: the target label each runner's
# file_sd entry carries (configs/prometheus/prometheus.yml; the static localhost:9108 target is
# labelled account=paper). "All" is the regex .*, which also matches a series without the label.
ACCOUNT_MATCHER = 'account=~"$account"'
ACCOUNT_VARIABLE: Json = {
    "name": "account",
    "label": "account",
    "type": "query",
    "datasource": DS,
    "query": {"query": "label_values(runner_up, account)", "refId": "account"},
    "definition": "label_values(runner_up, account)",
    "refresh": 2,
    "multi": True,
    "includeAll": True,
    "allValue": ".*",
    "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
    "sort": 1,
}

_PROMQL_TOKEN = re.compile(
    r'(?P<skip>"(?:[^"\\]|\\.)*"|\{[^}]*\}|\[[^\]]*\]'
    r"|\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)|\d+(?:\.\d+)?(?:e[+-]?\d+)?)"
    r"|(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)"
)
_NOT_METRICS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "sum", "min", "max", "avg", "group", "count",
                "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values"}


def scoped(expr: str) -> str:
    """``expr`` with ``account=~"$account"`` added to every metric selector (functions, keywords,
    grouping labels, strings and ranges are left alone)."""
    out: list[str] = []
    pos = 0
    for m in _PROMQL_TOKEN.finditer(expr):
        name = m.group("name")
        if name is None or name in _NOT_METRICS:
            continue
        rest = expr[m.end():]
        if rest.lstrip().startswith("("):  # a function call
            continue
        out.append(expr[pos:m.end()])
        pos = m.end()
        if rest.startswith("{"):
            inner = rest[1:rest.index("}")].strip()
            out.append("{" + ACCOUNT_MATCHER + (", " if inner else ""))
            pos += 1
        else:
            out.append("{" + ACCOUNT_MATCHER + "}")
    out.append(expr[pos:])
    return "".join(out)


# ----------------------------------------------------------------------------- helpers
def target(expr: str, ref: str = "A", *, legend: str = "", instant: bool = False, fmt: str = "time_series") -> Json:
    return {
        "datasource": DS,
        "refId": ref,
        "expr": scoped(expr),
        "legendFormat": legend or "__auto",
        "instant": instant,
        "range": not instant,
        "format": fmt,
        "editorMode": "code",
    }


def value_map(*items: tuple[float | str, str, str]) -> list[Json]:
    """Exact-value mappings: (value, text, color)."""
    return [
        {
            "type": "value",
            "options": {str(v): {"text": text, "color": color, "index": i} for i, (v, text, color) in enumerate(items)},
        }
    ]


def range_map(*items: tuple[float | None, float | None, str, str]) -> list[Json]:
    """Range mappings (first match wins): (from, to, text, color)."""
    return [
        {"type": "range", "options": {"from": lo, "to": hi, "result": {"text": text, "color": color, "index": i}}}
        for i, (lo, hi, text, color) in enumerate(items)
    ]


def thresholds(*steps: tuple[float | None, str]) -> Json:
    return {"mode": "absolute", "steps": [{"value": v, "color": c} for v, c in steps]}


def panel(kind: str, title: str, grid: tuple[int, int, int, int], targets: list[Json], *,
          description: str = "", defaults: Json | None = None, overrides: list[Json] | None = None,
          options: Json | None = None, transformations: list[Json] | None = None) -> Json:
    x, y, w, h = grid
    p: Json = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "targets": targets,
        "fieldConfig": {"defaults": defaults or {}, "overrides": overrides or []},
        "options": options or {},
    }
    if transformations:
        p["transformations"] = transformations
    return p


def dashboard(uid: str, title: str, description: str, panels: list[Json], *, templating: list[Json] | None = None) -> Json:
    for i, p in enumerate(panels, start=1):
        p["id"] = i
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["crupto", "paper"],
        "editable": True,
        "graphTooltip": 1,
        "refresh": "5s",
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "links": [
            {"type": "dashboards", "title": "crupto", "tags": ["crupto"], "asDropdown": True,
             "includeVars": False, "keepTime": True}
        ],
        "templating": {"list": [ACCOUNT_VARIABLE, *(templating or [])]},
        "panels": panels,
    }


STATUS_HISTORY_OPTIONS: Json = {
    "showValue": "auto",
    "rowHeight": 0.9,
    "colWidth": 0.9,
    "legend": {"showLegend": True, "displayMode": "list", "placement": "bottom"},
    "tooltip": {"mode": "multi", "sort": "none"},
}

TIMESERIES_OPTIONS: Json = {
    "legend": {"showLegend": True, "displayMode": "list", "placement": "bottom", "calcs": ["lastNotNull"]},
    "tooltip": {"mode": "multi", "sort": "none"},
}


def stat_options(color_mode: str = "value") -> Json:
    return {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "colorMode": color_mode,
        "graphMode": "area",
        "justifyMode": "auto",
        "orientation": "auto",
        "textMode": "auto",
    }


# -------------------------------------------------------------------------- dashboards
def agent_topology() -> Json:
    node_state = value_map((1, "running", "green"), (0, "degraded", "orange"), (-1, "stopped", "text"))
    return dashboard(
        "crupto-agent-topology",
        "Agent Topology",
        "Agents (feeds and the pipeline stages) and instruments as nodes with their state; "
        "event flow between them as edges with throughput.",
        [
            panel(
                "nodeGraph", "Agent Topology", (0, 0, 24, 16),
                [
                    # Node Graph frames: refIds `nodes` and `edges`, instant tables; the
                    # exporter already labels nodes with id/title and edges with id/source/target.
                    target("max by (id, title, kind) (agent_node_state)", "nodes", instant=True, fmt="table"),
                    target(
                        "sum by (id, source, target) (rate(agent_edge_events_total[$__rate_interval]))",
                        "edges", instant=True, fmt="table",
                    ),
                ],
                description="Nodes: state (running / degraded / stopped). Edges: events per second along the pipeline "
                            "feed -> instrument -> regime -> strategy -> risk -> portfolio -> execution -> storage -> telemetry.",
                overrides=[
                    {"matcher": {"id": "byName", "options": "mainstat"},
                     "properties": [{"id": "mappings", "value": node_state}, {"id": "decimals", "value": 2}]},
                ],
                options={"nodes": {"mainStatUnit": "", "secondaryStatUnit": ""},
                         "edges": {"mainStatUnit": "ev/s"}},
                transformations=[
                    {
                        "id": "organize",
                        "options": {
                            "excludeByName": {"Time": True, "__name__": True, "job": True, "instance": True},
                            "renameByName": {
                                "kind": "subtitle",
                                "Value": "mainstat",
                                "Value #nodes": "mainstat",
                                "Value #edges": "mainstat",
                            },
                        },
                    }
                ],
            ),
            panel(
                "table", "Node throughput", (0, 16, 12, 9),
                [
                    target("max by (id, kind) (agent_node_state)", "state", instant=True, fmt="table"),
                    target("sum by (id, kind) (rate(agent_node_events_total[$__rate_interval]))", "rate",
                           instant=True, fmt="table"),
                ],
                description="Per node: state and events handled per second.",
                overrides=[
                    {"matcher": {"id": "byName", "options": "state"},
                     "properties": [{"id": "mappings", "value": node_state},
                                    {"id": "custom.cellOptions", "value": {"type": "color-background"}}]},
                    {"matcher": {"id": "byName", "options": "events/s"},
                     "properties": [{"id": "unit", "value": "short"}, {"id": "decimals", "value": 2}]},
                ],
                transformations=[
                    {"id": "merge", "options": {}},
                    {"id": "organize", "options": {
                        "excludeByName": {"Time": True},
                        "renameByName": {"Value #state": "state", "Value #rate": "events/s"},
                    }},
                ],
            ),
            panel(
                "timeseries", "Edge throughput", (12, 16, 12, 9),
                [target("sum by (id) (rate(agent_edge_events_total[$__rate_interval]))", legend="{{id}}")],
                defaults={"unit": "short", "custom": {"fillOpacity": 0}},
                options=TIMESERIES_OPTIONS,
            ),
        ],
    )


def feed_risk_states() -> Json:
    common = {"custom": {"fillOpacity": 80, "lineWidth": 0}, "color": {"mode": "thresholds"},
              "thresholds": thresholds((None, "text"))}
    return dashboard(
        "crupto-feed-risk-states",
        "Feed & Risk States",
        "Status history of feed_health, daily_lock_state, dd_state and regime_label.",
        [
            panel(
                "status-history", "feed_health", (0, 0, 24, 5),
                [target("feed_health", legend="{{feed}}")],
                description="1 healthy, 0 degraded (stale/reconnecting), -1 paused/stopped.",
                defaults={**common, "mappings": value_map((1, "healthy", "green"), (0, "degraded", "red"),
                                                          (-1, "paused", "text"))},
                options=STATUS_HISTORY_OPTIONS,
            ),
            panel(
                "status-history", "daily_lock_state", (0, 5, 24, 7),
                [target("daily_lock_state", legend="{{reason}}")],
                description="1 for the active reason; limits_ok = 1 while trading is not locked.",
                defaults={**common, "mappings": value_map((1, "LOCKED", "red"), (0, "-", "transparent"))},
                overrides=[
                    {"matcher": {"id": "byName", "options": "limits_ok"},
                     "properties": [{"id": "mappings",
                                     "value": value_map((1, "unlocked", "green"), (0, "locked", "red"))}]},
                ],
                options=STATUS_HISTORY_OPTIONS,
            ),
            panel(
                "status-history", "dd_state (R)", (0, 12, 24, 5),
                [target("dd_state", legend="dd_state")],
                description="Drawdown of the cumulative R curve from its peak. Ladder (configs/governance.yaml): "
                            "throttled at <= -1.0 R, no new entries at <= -1.8 R.",
                defaults={**common, "decimals": 2, "mappings": range_map(
                    (None, -1.8, "no entries", "red"),
                    (-1.8, -1.0, "throttled", "orange"),
                    (-1.0, None, "normal", "green"),
                )},
                options={**STATUS_HISTORY_OPTIONS, "showValue": "always"},
            ),
            panel(
                "status-history", "regime_label", (0, 17, 24, 7),
                [target("regime_label", legend="{{symbol}}")],
                description="0 warmup, 1 calm, 2 trend_up, 3 trend_down, 4 volatile.",
                defaults={**common, "mappings": value_map(
                    (0, "warmup", "text"), (1, "calm", "green"), (2, "trend_up", "blue"),
                    (3, "trend_down", "purple"), (4, "volatile", "orange"),
                )},
                options=STATUS_HISTORY_OPTIONS,
            ),
            panel(
                "status-history", "Runner, kill-switch, safe mode, storage", (0, 24, 16, 6),
                [
                    target("runner_up", "A", legend="runner_up"),
                    target("kill_switch_state", "B", legend="kill_switch_state"),
                    target("portfolio_safe_mode", "C", legend="portfolio_safe_mode"),
                    target("storage_write_failing", "D", legend="storage_write_failing"),
                ],
                description="runner_up: 1 running, 0 planned stop (linger). kill-switch and safe mode: 1 engaged. "
                            "storage_write_failing: 1 while fills cannot be journaled (entries halted; alert "
                            "StorageWriteFailing).",
                defaults={**common, "mappings": value_map((1, "on", "orange"), (0, "off", "green"))},
                overrides=[
                    {"matcher": {"id": "byName", "options": "runner_up"},
                     "properties": [{"id": "mappings",
                                     "value": value_map((1, "running", "green"), (0, "stopped", "text"))}]},
                ],
                options=STATUS_HISTORY_OPTIONS,
            ),
            panel(
                "table", "Active ALERT_TEST_* overlays", (16, 24, 8, 6),
                [target("alert_test_overlay == 1", instant=True, fmt="table")],
                description="Non-empty while the runner runs an alert drill (paper mode only).",
                transformations=[{"id": "organize", "options": {
                    "excludeByName": {"Time": True, "__name__": True, "job": True, "instance": True, "Value": True}}}],
            ),
            panel(
                "bargauge", "Strategy errors (24h): a strategy that raised is on hold", (0, 30, 24, 5),
                [target("sum by (strategy) (increase(strategy_errors_total[24h]))", legend="{{strategy}}")],
                description="Exceptions raised inside each strategy's on_bar (alert StrategyError). The first one "
                            "holds the strategy; `python -m prod_core.cli release <strategy>` after the fix.",
                defaults={"unit": "short", "decimals": 0, "min": 0, "color": {"mode": "thresholds"},
                          "thresholds": thresholds((None, "green"), (1, "red"))},
                options={"orientation": "horizontal", "displayMode": "basic", "showUnfilled": True,
                         "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}},
            ),
        ],
    )


P95_MS = 'histogram_quantile(0.95, sum by (stage, le) (rate(stage_latency_ms_bucket{stage=~"$stage"}[$__rate_interval])))'


def stage_latency() -> Json:
    sla = thresholds((None, "green"), (50, "red"))
    return dashboard(
        "crupto-stage-latency",
        "Stage Latency",
        "p95 per pipeline stage (stage_latency_ms) against the SLA (sla.stage_latency_ms, default 50 ms) "
        "and the latency distribution.",
        [
            panel(
                "bargauge", "p95 per stage", (0, 0, 16, 10),
                [target(P95_MS, legend="{{stage}}", instant=True)],
                description="Red above the SLA of configs/governance.yaml (sla.stage_latency_ms, 50 ms by default; "
                            "alert StageLatencySLA uses the exported stage_latency_sla_seconds).",
                defaults={"unit": "ms", "decimals": 3, "min": 0, "thresholds": sla, "color": {"mode": "thresholds"}},
                options={"orientation": "horizontal", "displayMode": "gradient", "showUnfilled": True,
                         "valueMode": "color", "namePlacement": "auto", "minVizWidth": 8, "minVizHeight": 16,
                         "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}},
            ),
            panel(
                "stat", "SLA", (16, 0, 8, 10),
                [target("max(stage_latency_sla_seconds) * 1000", legend="SLA", instant=True)],
                defaults={"unit": "ms", "color": {"mode": "fixed", "fixedColor": "red"}},
                options=stat_options(),
            ),
            panel(
                "heatmap", "Latency distribution (stage_latency_ms_bucket)", (0, 10, 24, 10),
                [target("sum by (le) (increase(stage_latency_ms_bucket{stage=~\"$stage\"}[$__rate_interval]))",
                        legend="{{le}}", fmt="heatmap")],
                description="Observations per latency bucket (ms) for the selected stages.",
                options={
                    "calculate": False,
                    "yAxis": {"axisPlacement": "left", "unit": "ms", "reverse": False},
                    "rowsFrame": {"layout": "le"},
                    "color": {"mode": "scheme", "scheme": "Oranges", "scale": "exponential", "exponent": 0.5,
                              "fill": "dark-orange", "steps": 64, "reverse": False},
                    "cellGap": 1,
                    "filterValues": {"le": 1e-9},
                    "tooltip": {"mode": "single", "yHistogram": True, "showColorScale": False},
                    "legend": {"show": True},
                    "exemplars": {"color": "rgba(255,0,255,0.7)"},
                },
            ),
            panel(
                "timeseries", "p95 per stage over time", (0, 20, 24, 8),
                [target(P95_MS, legend="{{stage}}")],
                defaults={"unit": "ms", "custom": {"fillOpacity": 0, "thresholdsStyle": {"mode": "line"}},
                          "thresholds": sla, "color": {"mode": "palette-classic"}},
                options=TIMESERIES_OPTIONS,
            ),
        ],
        templating=[
            {
                "name": "stage",
                "label": "stage",
                "type": "query",
                "datasource": DS,
                "query": {"query": "label_values(stage_latency_ms_bucket, stage)", "refId": "stage"},
                "definition": "label_values(stage_latency_ms_bucket, stage)",
                "refresh": 2,
                "multi": True,
                "includeAll": True,
                "allValue": ".*",
                "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
                "sort": 0,
            }
        ],
    )


def performance() -> Json:
    ts = {"custom": {"fillOpacity": 10, "lineWidth": 2}, "color": {"mode": "palette-classic"}}
    return dashboard(
        "crupto-performance",
        "Performance",
        "Paper account equity, cumulative R and the drawdown of the current epoch.",
        [
            panel("timeseries", "equity_usd", (0, 0, 24, 8), [target("equity_usd", legend="equity")],
                  defaults={**ts, "unit": "currencyUSD"}, options=TIMESERIES_OPTIONS),
            panel("timeseries", "pnl_cum_r", (0, 8, 12, 8), [target("pnl_cum_r", legend="pnl_cum_r")],
                  defaults={**ts, "unit": "suffix: R", "decimals": 2}, options=TIMESERIES_OPTIONS),
            panel(
                "timeseries", "max_dd_r", (12, 8, 12, 8),
                [target("max_dd_r", "A", legend="max_dd_r"),
                 target("drawdown_critical_threshold_r", "B", legend="critical (DrawdownCritical)")],
                description="Largest drawdown of the current epoch; the dashed line is the governance threshold "
                            "of the DrawdownCritical alert.",
                defaults={**ts, "unit": "suffix: R", "decimals": 2, "min": 0},
                overrides=[{"matcher": {"id": "byName", "options": "critical (DrawdownCritical)"},
                            "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": "red"}},
                                           {"id": "custom.fillOpacity", "value": 0},
                                           {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}}]}],
                options=TIMESERIES_OPTIONS,
            ),
        ],
    )


def exposure_positions() -> Json:
    return dashboard(
        "crupto-exposure-positions",
        "Exposure & Positions",
        "Open positions, gross and net exposure (% of equity), portfolio safe mode, fill realism and funding.",
        [
            panel("stat", "open_positions_count", (0, 0, 6, 6), [target("open_positions_count", legend="positions")],
                  defaults={"unit": "short", "decimals": 0, "color": {"mode": "fixed", "fixedColor": "blue"}},
                  options=stat_options()),
            panel("stat", "exposure_gross_pct", (6, 0, 6, 6), [target("exposure_gross_pct", legend="gross")],
                  description="Sum of |notional| / equity. Governance limit: portfolio.max_gross_exposure_pct (150 %).",
                  defaults={"unit": "percent", "decimals": 1, "color": {"mode": "thresholds"},
                            "thresholds": thresholds((None, "green"), (100, "orange"), (150, "red"))},
                  options=stat_options()),
            panel("stat", "exposure_net_pct", (12, 0, 6, 6), [target("exposure_net_pct", legend="net")],
                  description="(long - short) / equity. Governance limit: |net| <= portfolio.max_net_exposure_pct (100 %).",
                  defaults={"unit": "percent", "decimals": 1, "color": {"mode": "thresholds"},
                            "thresholds": thresholds((None, "red"), (-100, "green"), (100, "red"))},
                  options=stat_options()),
            panel("stat", "portfolio_safe_mode", (18, 0, 6, 6), [target("portfolio_safe_mode", legend="safe mode")],
                  defaults={"mappings": value_map((0, "off", "green"), (1, "ON", "red")),
                            "color": {"mode": "thresholds"}, "thresholds": thresholds((None, "green"), (1, "red"))},
                  options=stat_options("background")),
            panel(
                "timeseries", "Exposure over time", (0, 6, 24, 8),
                [target("exposure_gross_pct", "A", legend="gross"), target("exposure_net_pct", "B", legend="net")],
                defaults={"unit": "percent", "custom": {"fillOpacity": 10}, "color": {"mode": "palette-classic"}},
                options=TIMESERIES_OPTIONS,
            ),
            # fill realism and funding (the paper broker's market model, margin and funding)
            panel(
                "timeseries", "Fill slippage p50 / p95 (bps, >0 paid)", (0, 14, 12, 8),
                [target("histogram_quantile(0.5, sum by (symbol, le) (rate(fill_slippage_bps_bucket[5m])))", "A",
                        legend="p50 {{symbol}}"),
                 target("histogram_quantile(0.95, sum by (symbol, le) (rate(fill_slippage_bps_bucket[5m])))", "B",
                        legend="p95 {{symbol}}")],
                description="Fill price against the fill model's reference (bar open, stop, book mid): spread + impact paid.",
                defaults={"unit": "short", "decimals": 2, "custom": {"fillOpacity": 0}, "color": {"mode": "palette-classic"}},
                options=TIMESERIES_OPTIONS,
            ),
            panel(
                "timeseries", "Fill ratio and partial fills", (12, 14, 12, 8),
                [target("fill_ratio", "A", legend="fill ratio {{symbol}}"),
                 target('sum(increase(orders_total{status="partial"}[5m]))', "B", legend="partial fills / 5m")],
                description="Filled / ordered quantity of the orders that ended (participation cap, cancelled rests).",
                defaults={"unit": "short", "decimals": 2, "custom": {"fillOpacity": 0}, "color": {"mode": "palette-classic"}},
                options=TIMESERIES_OPTIONS,
            ),
            panel(
                "timeseries", "Funding paid (USD, negative: received)", (0, 22, 12, 8),
                [target("funding_paid_usd", "A", legend="{{symbol}}")],
                description="Funding the run's perp positions paid at the funding times (8 h of bar time).",
                defaults={"unit": "currencyUSD", "decimals": 2, "custom": {"fillOpacity": 10},
                          "color": {"mode": "palette-classic"}},
                options=TIMESERIES_OPTIONS,
            ),
            panel(
                "stat", "Liquidations (24h)", (12, 22, 12, 8),
                [target('sum(increase(fills_total{reason="liquidation"}[24h])) or vector(0)', legend="liquidations")],
                description="Perp positions liquidated at the bankruptcy price (alert PositionLiquidated).",
                defaults={"unit": "short", "decimals": 0, "color": {"mode": "thresholds"},
                          "thresholds": thresholds((None, "green"), (1, "red"))},
                options=stat_options("background"),
            ),
        ],
    )


DASHBOARDS = {
    "agent_topology.json": agent_topology,
    "feed_risk_states.json": feed_risk_states,
    "stage_latency.json": stage_latency,
    "performance.json": performance,
    "exposure_positions.json": exposure_positions,
}


def render() -> dict[str, str]:
    """File name -> the exact text of every dashboard JSON file."""
    return {name: json.dumps(build(), indent=2, ensure_ascii=False) + "\n" for name, build in DASHBOARDS.items()}


def main(argv: list[str] | None = None) -> int:
    """Write the dashboards (or with ``--check`` exit 1 naming the stale ones); exit 0 otherwise."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a committed file differs from the generator")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="output directory")
    args = parser.parse_args(argv)
    stale = []
    for name, text in render().items():
        path = args.out / name
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        if args.check:
            stale.append(name)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if stale:
        print(f"out of date: {', '.join(stale)}; run python scripts/gen_dashboards.py", file=sys.stderr)
        return 1
    return 0

