"""Prometheus exporter: a custom Collector that reads ``LiveMetrics`` at scrape time.

All work (histogram accumulation, topology edges) happens here, on the scrape thread,
never per bar. ``start_exporter`` serves a private ``CollectorRegistry`` holding only
this collector, so tests and parallel runs never share global state.
"""

from __future__ import annotations

import errno
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from prod_core.telemetry.live import LATENCY_BUCKETS_MS, LOCK_REASONS, LiveMetrics

# Agents after the feeds, in pipeline order (the feed stage is one node per feed).
PIPELINE_AGENTS: tuple[str, ...] = (
    "regime", "strategy", "risk", "portfolio", "execution", "storage", "telemetry",
)

_GAUGES: tuple[tuple[str, str, str], ...] = (
    # (metric name, LiveMetrics attribute, help)
    ("dd_state", "dd_state", "Current drawdown of the cumulative R curve from its peak (<= 0)."),
    ("equity_usd", "equity_usd", "Paper account equity in USD."),
    ("pnl_cum_r", "pnl_cum_r", "Cumulative trade R (closed + open marked to market)."),
    ("max_dd_r", "max_dd_r", "Largest drawdown in R of the current drawdown epoch (>= 0)."),
    ("open_positions_count", "open_positions_count", "Number of open positions."),
    ("exposure_gross_pct", "exposure_gross_pct", "Gross exposure, % of equity."),
    ("exposure_net_pct", "exposure_net_pct", "Net exposure (long - short), % of equity."),
    ("portfolio_safe_mode", "portfolio_safe_mode", "1 while portfolio safe mode is engaged."),
    ("kill_switch_state", "kill_switch_state", "1 while the kill-switch is engaged."),
    ("runner_last_cycle_ts", "runner_last_cycle_ts", "Wall-clock unix seconds of the last runner cycle."),
    ("execution_reject_rate", "execution_reject_rate", "Rejected / submitted orders over a rolling window."),
    ("runner_up", "runner_up", "1 while the paper loop runs, 0 during a planned stop or linger."),
    ("pending_plans", "pending_plans", "Trade plans waiting for execution."),
    ("drawdown_critical_threshold_r", "dd_critical_r", "max_dd_r level that is critical (alert threshold)."),
    ("storage_write_failing", "storage_write_failing",
     "1 while fills cannot be journaled (disk full, read-only, lasting lock): new entries are halted."),
)

# "le" label values formatted like prometheus_client's own histograms.
_BUCKET_LE_MS: tuple[str, ...] = tuple(floatToGoString(b) for b in LATENCY_BUCKETS_MS) + ("+Inf",)
_BUCKET_LE_S: tuple[str, ...] = tuple(floatToGoString(b / 1000) for b in LATENCY_BUCKETS_MS) + ("+Inf",)


def _cumulative(counts: list[int]) -> list[int]:
    out: list[int] = []
    running = 0
    for c in counts:
        running += c
        out.append(running)
    return out


class TelemetryCollector(Collector):
    """Yields every metric of DESIGN.md's table from a ``LiveMetrics`` at scrape time."""

    def __init__(self, live: LiveMetrics) -> None:
        self.live = live

    def describe(self) -> list[Metric]:
        # Returning [] tells the registry not to call collect() at registration time.
        return []

    def collect(self) -> Iterator[Metric]:
        live = self.live
        feed_health = dict(live.feed_health)
        bars = dict(live.bars_total)
        plans = dict(live.plans_total)
        orders = dict(live.orders_total)
        fills = dict(live.fills_total)
        anomalies = dict(live.anomalies_total)

        g = GaugeMetricFamily("feed_health", "1 healthy, 0 degraded, -1 paused/stopped.", labels=["feed"])
        for feed, value in feed_health.items():
            g.add_metric([feed], value)
        yield g

        last_bar = dict(live.feed_last_bar_ts)
        g = GaugeMetricFamily("feed_last_bar_ts", "Wall-clock unix seconds when the feed last delivered a bar.",
                              labels=["feed"])
        lag = GaugeMetricFamily("feed_lag_seconds", "Seconds since the feed last delivered a bar (-1 before the first).",
                                labels=["feed"])
        now = time.time()
        for feed, ts in last_bar.items():
            g.add_metric([feed], ts)
            lag.add_metric([feed], now - ts if ts > 0 else -1.0)
        yield g
        yield lag

        active = live.daily_lock_reason
        g = GaugeMetricFamily(
            "daily_lock_state", "1 for the active daily-lock reason; limits_ok=1 when unlocked.", labels=["reason"]
        )
        for reason in LOCK_REASONS if active in LOCK_REASONS else (*LOCK_REASONS, active):
            g.add_metric([reason], 1 if reason == active else 0)
        yield g

        for name, attr, doc in _GAUGES:
            yield GaugeMetricFamily(name, doc, value=getattr(live, attr))
        yield GaugeMetricFamily(
            "stage_latency_sla_seconds", "Per-stage latency SLA in seconds.", value=live.stage_sla_ms / 1000.0
        )

        g = GaugeMetricFamily(
            "regime_label", "Regime: 0 warmup, 1 calm, 2 trend_up, 3 trend_down, 4 volatile.", labels=["symbol"]
        )
        for symbol, code in dict(live.regime).items():
            g.add_metric([symbol], code)
        yield g

        g = GaugeMetricFamily(
            "alert_test_overlay", "1 per active ALERT_TEST_* overlay (paper mode only).", labels=["variable", "value"]
        )
        for variable, value in dict(live.alert_test).items():
            g.add_metric([variable, value], 1)
        yield g

        yield from self._latency()

        yield _counter("bars", "Bars accepted by the pipeline.", ["symbol"], bars)
        yield _counter("data_anomalies", "Bars rejected by feed hygiene.", ["feed", "kind"], anomalies)
        yield _counter("feed_rate_limited", "Rate-limit and IP-ban answers the feed received from the exchange.",
                       ["feed"], dict(live.feed_rate_limited))
        yield _counter("plans", "Trade plans by strategy and decision.", ["strategy", "decision"], plans)
        yield _counter("strategy_errors", "Exceptions raised inside a strategy (each holds the strategy).",
                       ["strategy"], dict(live.strategy_errors_total))
        yield _counter("orders", "Orders by status.", ["status"], orders)
        yield _counter("fills", "Fills by symbol and reason.", ["symbol", "reason"], fills)
        yield _counter("errors", "Errors by component.", ["component"], dict(live.errors_total))
        yield CounterMetricFamily("storage_retries", "Writes retried because another process held the DB write lock.",
                                  value=live.storage_retries)

        yield from self._fill_realism()

        yield from self._topology(feed_health, bars, plans, orders, fills, anomalies)

    def _fill_realism(self) -> Iterator[Metric]:
        """Fill slippage, time to fill and fill ratio per symbol; funding per symbol."""
        live = self.live
        for name, doc, hist in (
            ("fill_slippage_bps", "Fill price vs the fill model's reference (bar open, stop, book), bps; >0 paid.",
             live.fill_slippage),
            ("fill_time_seconds", "Bar time from an order's decision bar to its last fill, seconds.", live.fill_time),
        ):
            h = HistogramMetricFamily(name, doc, labels=["symbol"])
            les = tuple(floatToGoString(b) for b in hist.bounds) + ("+Inf",)
            snap = hist.snapshot()
            empty = ([0] * len(les), 0.0, 0)
            for symbol in dict.fromkeys((*live.symbols, *snap)):  # every symbol's series exists from the start
                counts, total, _n = snap.get(symbol, empty)
                h.add_metric([symbol], list(zip(les, _cumulative(counts))), total)
            yield h
        ordered, filled = dict(live.order_qty), dict(live.order_filled_qty)
        g = GaugeMetricFamily("fill_ratio", "Filled / ordered quantity of the orders that ended, per symbol "
                              "(1 before any order ended).", labels=["symbol"])
        for symbol in dict.fromkeys((*live.symbols, *ordered)):
            qty = ordered.get(symbol, 0.0)
            g.add_metric([symbol], filled.get(symbol, 0.0) / qty if qty > 0 else 1.0)
        yield g
        g = GaugeMetricFamily("funding_paid_usd", "Funding paid by this run's perp positions, USD (negative: received).",
                              labels=["symbol"])
        funding = dict(live.funding_usd_total)
        for symbol in dict.fromkeys((*live.symbols, *funding)):
            g.add_metric([symbol], funding.get(symbol, 0.0))
        yield g
        yield _counter("funding_events", "Funding payments settled, per symbol.", ["symbol"],
                       dict(live.funding_events_total))

    def _latency(self) -> Iterator[Metric]:
        ms = HistogramMetricFamily("stage_latency_ms", "Per-stage latency in milliseconds.", labels=["stage"])
        sec = HistogramMetricFamily("stage_latency_seconds", "Per-stage latency in seconds.", labels=["stage"])
        for stage, (counts, sum_ns, _count) in self.live.stage_times.snapshot().items():
            cum = _cumulative(counts)
            ms.add_metric([stage], list(zip(_BUCKET_LE_MS, cum)), sum_ns / 1e6)
            sec.add_metric([stage], list(zip(_BUCKET_LE_S, cum)), sum_ns / 1e9)
        yield ms
        yield sec

    def _topology(
        self,
        feed_health: dict[str, int],
        bars: dict[str, int],
        plans: dict[tuple[str, str], int],
        orders: dict[str, int],
        fills: dict[tuple[str, str], int],
        anomalies: dict[tuple[str, str], int],
    ) -> Iterator[Metric]:
        """Node Graph nodes and edges, all derived from the counters (no per-bar work)."""
        live = self.live
        up = live.runner_up == 1
        agent_state = 1 if up else -1
        total_bars = sum(bars.values())
        total_plans = sum(plans.values())
        passed_risk = sum(n for (_s, d), n in plans.items() if not d.startswith("vetoed"))
        submitted = orders.get("submitted", 0)
        total_fills = sum(fills.values())
        persisted = sum(orders.values()) + total_fills
        feed_symbols = {f: tuple(syms) for f, syms in dict(live.feed_symbols).items()}
        symbols = list(dict.fromkeys((*live.symbols, *bars)))

        edges: list[tuple[str, str, int]] = []
        for feed in feed_health:
            for symbol in feed_symbols.get(feed, ()):
                edges.append((f"feed:{feed}", symbol, bars.get(symbol, 0)))
        for symbol in symbols:
            edges.append((symbol, "regime", bars.get(symbol, 0)))
        edges += [
            ("regime", "strategy", total_bars),
            ("strategy", "risk", total_plans),
            ("risk", "portfolio", passed_risk),
            ("portfolio", "execution", submitted),
            ("execution", "storage", persisted),
            ("storage", "telemetry", total_fills),
        ]

        # (id, title, kind, state, events handled)
        nodes: list[tuple[str, str, str, int, int]] = []
        for feed, health in feed_health.items():
            handled = sum(bars.get(s, 0) for s in feed_symbols.get(feed, ()))
            handled += sum(n for (f, _k), n in anomalies.items() if f == feed)
            nodes.append((f"feed:{feed}", f"Feed {feed}", "agent", health, handled))
        agent_events = {
            "regime": total_bars,
            "strategy": total_bars,
            "risk": total_plans,
            "portfolio": passed_risk,
            "execution": persisted,
            "storage": persisted,
            "telemetry": total_bars,
        }
        for agent in PIPELINE_AGENTS:
            nodes.append((agent, agent.capitalize(), "agent", agent_state, agent_events[agent]))
        for symbol in symbols:
            n = bars.get(symbol, 0)
            state = -1 if not up else (1 if n > 0 else 0)
            nodes.append((symbol, symbol, "instrument", state, n))

        labels = ["id", "title", "kind"]
        state_g = GaugeMetricFamily("agent_node_state", "Node Graph node state: 1 ok, 0 degraded, -1 stopped.", labels=labels)
        events_c = CounterMetricFamily("agent_node_events", "Events handled by a Node Graph node.", labels=labels)
        for node_id, title, kind, state, handled in nodes:
            state_g.add_metric([node_id, title, kind], state)
            events_c.add_metric([node_id, title, kind], handled)
        yield state_g
        yield events_c

        edge_c = CounterMetricFamily(
            "agent_edge_events", "Events that flowed along a Node Graph edge.", labels=["id", "source", "target"]
        )
        for source, target, n in edges:
            edge_c.add_metric([f"{source}->{target}", source, target], n)
        yield edge_c


def _counter(name: str, doc: str, labels: list[str], values: dict) -> CounterMetricFamily:
    """A counter family exposed as ``<name>_total``; tuple keys map to several labels."""
    family = CounterMetricFamily(name, doc, labels=labels)
    for key, value in values.items():
        family.add_metric(list(key) if isinstance(key, tuple) else [key], value)
    return family


@dataclass
class Exporter:
    """A running /metrics HTTP server; ``stop()`` shuts it down and frees the port."""

    server: WSGIServer
    thread: threading.Thread
    registry: CollectorRegistry
    collector: TelemetryCollector
    port: int
    bind: str
    _stopped: bool = field(default=False, repr=False)

    def stop(self) -> None:
        """Stop serving and close the listening socket; safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        # serve_forever() only notices shutdown() at its next 0.5 s poll; poking the socket
        # with an empty connection wakes it at once, so stop() takes milliseconds.
        closer = threading.Thread(target=self.server.shutdown, name="exporter-stop", daemon=True)
        closer.start()
        while closer.is_alive():
            self._poke()
            closer.join(0.02)
        self.server.server_close()
        self.thread.join(timeout=5)

    def _poke(self) -> None:
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.bind, self.bind)
        try:
            socket.create_connection((host, self.port), timeout=0.2).close()
        except OSError:
            pass  # already closed or unreachable: shutdown() still ends at the next poll


def start_exporter(live: LiveMetrics, *, port: int, bind: str = "127.0.0.1") -> Exporter:
    """Serve ``live`` on http://<bind>:<port>/metrics in a daemon thread (port 0 picks a free one)."""
    registry = CollectorRegistry(auto_describe=False)
    collector = TelemetryCollector(live)
    registry.register(collector)
    try:
        server, thread = start_http_server(port, addr=bind, registry=registry)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE or "in use" in str(exc).lower():
            raise OSError(
                exc.errno,
                f"Prometheus exporter cannot listen on {bind}:{port}: port {port} is already in use; "
                f"stop the other process or set PROMETHEUS_PORT to a free port",
            ) from exc
        raise
    return Exporter(
        server=server,
        thread=thread,
        registry=registry,
        collector=collector,
        port=int(server.server_address[1]),
        bind=bind,
    )
