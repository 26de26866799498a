"""The exporter over real HTTP: names, types, labels, live changes, histograms, topology, port handling."""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from prod_core.domain.types import STAGES
from prod_core.telemetry import LATENCY_BUCKETS_MS, LOCK_REASONS, Exporter, LiveMetrics, start_exporter

SYMBOLS = ("BTC/USDT", "ETH/USDT")

# DESIGN.md's table plus the extra alerting gauges: family name -> (type, label names).
EXPECTED: dict[str, tuple[str, frozenset[str]]] = {
    "feed_health": ("gauge", frozenset({"feed"})),
    "daily_lock_state": ("gauge", frozenset({"reason"})),
    "dd_state": ("gauge", frozenset()),
    "regime_label": ("gauge", frozenset({"symbol"})),
    "stage_latency_ms": ("histogram", frozenset({"stage"})),
    "stage_latency_seconds": ("histogram", frozenset({"stage"})),
    "equity_usd": ("gauge", frozenset()),
    "pnl_cum_r": ("gauge", frozenset()),
    "max_dd_r": ("gauge", frozenset()),
    "open_positions_count": ("gauge", frozenset()),
    "exposure_gross_pct": ("gauge", frozenset()),
    "exposure_net_pct": ("gauge", frozenset()),
    "portfolio_safe_mode": ("gauge", frozenset()),
    "kill_switch_state": ("gauge", frozenset()),
    "runner_last_cycle_ts": ("gauge", frozenset()),
    "execution_reject_rate": ("gauge", frozenset()),
    "bars": ("counter", frozenset({"symbol"})),
    "data_anomalies": ("counter", frozenset({"feed", "kind"})),
    "plans": ("counter", frozenset({"strategy", "decision"})),
    "orders": ("counter", frozenset({"status"})),
    "fills": ("counter", frozenset({"symbol", "reason"})),
    "errors": ("counter", frozenset({"component"})),
    "agent_node_state": ("gauge", frozenset({"id", "title", "kind"})),
    "agent_node_events": ("counter", frozenset({"id", "title", "kind"})),
    "agent_edge_events": ("counter", frozenset({"id", "source", "target"})),
    "runner_up": ("gauge", frozenset()),
    "pending_plans": ("gauge", frozenset()),
    "drawdown_critical_threshold_r": ("gauge", frozenset()),
    "stage_latency_sla_seconds": ("gauge", frozenset()),
    "alert_test_overlay": ("gauge", frozenset({"variable", "value"})),
}


@pytest.fixture
def live() -> LiveMetrics:
    m = LiveMetrics(feeds=["sim"], symbols=SYMBOLS, strategies=["trend", "meanrev"])
    m.inc(m.anomalies_total, ("sim", "gap"), 0)  # a series the families can show labels for
    return m


@pytest.fixture
def exporter(live: LiveMetrics) -> Iterator[Exporter]:
    exp = start_exporter(live, port=0)
    yield exp
    exp.stop()


def scrape_text(exp: Exporter) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{exp.port}/metrics", timeout=5) as resp:
        return resp.read().decode("utf-8")


def scrape(exp: Exporter) -> dict[str, tuple[str, list[Sample]]]:
    return {f.name: (f.type, f.samples) for f in text_string_to_metric_families(scrape_text(exp))}


def value(samples: list[Sample], name: str, **labels: str) -> float:
    hits = [s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(hits) == 1, (name, labels, hits)
    return hits[0]


def test_every_design_metric_is_served_with_its_type_and_labels(exporter: Exporter, live: LiveMetrics) -> None:
    """Each metric of the design table appears over HTTP with the right type and label names."""
    live.alert_test["ALERT_TEST_DD_STATE"] = "-2"
    families = scrape(exporter)
    for name, (mtype, labels) in EXPECTED.items():
        assert name in families, name
        got_type, samples = families[name]
        assert got_type == mtype, name
        assert samples, f"{name} has no series"
        for s in samples:
            assert set(s.labels) - {"le"} == labels, (name, s.labels)


def test_counters_are_exposed_with_total_suffix_and_preseeded_zero(exporter: Exporter) -> None:
    """Counters show `<name>_total` lines and every known series exists at 0 before any event."""
    text = scrape_text(exporter)
    assert 'fills_total{reason="entry",symbol="BTC/USDT"} 0.0' in text
    assert 'orders_total{status="rejected"} 0.0' in text
    assert 'errors_total{component="runner"} 0.0' in text
    assert 'plans_total{decision="approved",strategy="meanrev"} 0.0' in text
    families = scrape(exporter)
    assert {s.labels["stage"] for s in families["stage_latency_ms"][1]} == set(STAGES)
    assert value(families["feed_health"][1], "feed_health", feed="sim") == -1


def test_mutating_live_metrics_shows_on_next_scrape(exporter: Exporter, live: LiveMetrics) -> None:
    """Assignments and counter increments on LiveMetrics are visible at the next scrape."""
    live.feed_health["sim"] = 0
    live.inc(live.fills_total, ("BTC/USDT", "entry"))
    live.inc(live.plans_total, ("trend", "vetoed_exposure"), 2)
    live.daily_lock_reason = "max_trades"
    live.regime["ETH/USDT"] = 4
    live.equity_usd = 10_123.5
    live.stage_sla_ms = 20.0
    families = scrape(exporter)
    assert value(families["feed_health"][1], "feed_health", feed="sim") == 0
    assert value(families["fills"][1], "fills_total", symbol="BTC/USDT", reason="entry") == 1
    assert value(families["plans"][1], "plans_total", strategy="trend", decision="vetoed_exposure") == 2
    locks = {s.labels["reason"]: s.value for s in families["daily_lock_state"][1]}
    assert locks == {r: (1.0 if r == "max_trades" else 0.0) for r in LOCK_REASONS}
    assert value(families["regime_label"][1], "regime_label", symbol="ETH/USDT") == 4
    assert value(families["equity_usd"][1], "equity_usd") == 10_123.5
    assert value(families["stage_latency_sla_seconds"][1], "stage_latency_sla_seconds") == pytest.approx(0.02)


def test_latency_histograms_in_ms_and_seconds_agree(exporter: Exporter, live: LiveMetrics) -> None:
    """Both histogram families carry identical bucket counts, +Inf equals count, sums differ by 1000."""
    for ns in (500, 1_000, 40_000, 3_000_000, 2_000_000_000):
        live.stage_times.record(STAGES.index("risk"), ns)
    families = scrape(exporter)

    def buckets(family: str) -> list[tuple[float, float]]:
        return [
            (float(s.labels["le"]), s.value)
            for s in families[family][1]
            if s.name == f"{family}_bucket" and s.labels["stage"] == "risk"
        ]

    ms, sec = buckets("stage_latency_ms"), buckets("stage_latency_seconds")
    assert [le for le, _ in ms[:-1]] == [float(b) for b in LATENCY_BUCKETS_MS]
    assert [le for le, _ in sec[:-1]] == pytest.approx([b / 1000 for b in LATENCY_BUCKETS_MS])
    assert [c for _, c in ms] == [c for _, c in sec]
    assert ms[0][1] == 2  # 500 ns and exactly 1_000 ns are both <= 0.001 ms
    assert ms[-1] == (float("inf"), 5)
    ms_samples, s_samples = families["stage_latency_ms"][1], families["stage_latency_seconds"][1]
    assert value(ms_samples, "stage_latency_ms_count", stage="risk") == 5
    assert value(s_samples, "stage_latency_seconds_count", stage="risk") == 5
    ms_sum = value(ms_samples, "stage_latency_ms_sum", stage="risk")
    assert ms_sum == pytest.approx(2_003_041_500 / 1e6)
    assert value(s_samples, "stage_latency_seconds_sum", stage="risk") == pytest.approx(ms_sum / 1000)


def test_topology_nodes_and_edges_follow_the_counters(exporter: Exporter, live: LiveMetrics) -> None:
    """Node Graph nodes carry id/title/kind, edges id/source/target, and edge counts derive from counters."""
    live.runner_up = 1
    live.feed_health["sim"] = 1
    live.bars_total["BTC/USDT"] = 7
    live.bars_total["ETH/USDT"] = 3
    live.inc(live.plans_total, ("trend", "approved"), 2)
    live.inc(live.plans_total, ("trend", "vetoed_max_trades"))
    live.inc(live.orders_total, "submitted", 2)
    live.inc(live.orders_total, "filled", 2)
    live.inc(live.fills_total, ("BTC/USDT", "entry"), 2)
    families = scrape(exporter)

    state = {s.labels["id"]: (s.labels["kind"], s.value) for s in families["agent_node_state"][1]}
    agents = ("feed:sim", "regime", "strategy", "risk", "portfolio", "execution", "storage", "telemetry")
    assert {k: state[k] for k in agents} == {k: ("agent", 1.0) for k in agents}
    assert state["BTC/USDT"] == ("instrument", 1.0)
    assert all(s.labels["title"] for s in families["agent_node_state"][1])

    edges = {s.labels["id"]: s for s in families["agent_edge_events"][1]}
    expected = {
        "feed:sim->BTC/USDT": 7,
        "feed:sim->ETH/USDT": 3,
        "BTC/USDT->regime": 7,
        "ETH/USDT->regime": 3,
        "regime->strategy": 10,
        "strategy->risk": 3,
        "risk->portfolio": 2,
        "portfolio->execution": 2,
        "execution->storage": 6,
        "storage->telemetry": 2,
    }
    assert {k: s.value for k, s in edges.items()} == expected
    for edge_id, s in edges.items():
        assert edge_id == f"{s.labels['source']}->{s.labels['target']}"
        assert s.name == "agent_edge_events_total"

    events = {s.labels["id"]: s.value for s in families["agent_node_events"][1]}
    assert events["feed:sim"] == 10 and events["ETH/USDT"] == 3 and events["risk"] == 3

    live.runner_up = 0
    live.feed_health["sim"] = -1
    stopped = {s.labels["id"]: s.value for s in scrape(exporter)["agent_node_state"][1]}
    assert set(stopped.values()) == {-1.0}


def test_port_in_use_raises_oserror_naming_the_port(exporter: Exporter, live: LiveMetrics) -> None:
    """A second exporter on a busy port fails with an OSError that names the port and PROMETHEUS_PORT."""
    with pytest.raises(OSError, match=rf"{exporter.port}.*PROMETHEUS_PORT"):
        start_exporter(live, port=exporter.port)


def test_stop_frees_the_port_and_is_idempotent(live: LiveMetrics) -> None:
    """After stop() the port can be bound again, and a second stop() is harmless."""
    exp = start_exporter(live, port=0)
    port = exp.port
    assert scrape_text(exp)
    exp.stop()
    exp.stop()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR tolerates TIME_WAIT from the scrape but not a live listener.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()
    again = start_exporter(live, port=port)
    try:
        assert again.port == port
    finally:
        again.stop()
