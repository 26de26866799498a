"""Telemetry adapter: the runner mutates plain attributes of ``LiveMetrics`` (costing
nothing per bar), ``TelemetryCollector`` turns them into every Prometheus metric of
DESIGN.md's table (plus the agent Node Graph topology) at scrape time, served by
``start_exporter`` on ``PROMETHEUS_PORT``; ``EventsCsv`` appends the rare notable events
to ``reports/telemetry_events.csv``."""

from prod_core.telemetry.events import EVENT_COLUMNS, EventsCsv, read_events
from prod_core.telemetry.exporter import Exporter, TelemetryCollector, start_exporter
from prod_core.telemetry.live import (
    FILL_REASONS,
    LATENCY_BUCKETS_MS,
    LOCK_REASONS,
    ORDER_STATUSES,
    LiveMetrics,
    StageTimes,
)

__all__ = [
    "EVENT_COLUMNS",
    "FILL_REASONS",
    "LATENCY_BUCKETS_MS",
    "LOCK_REASONS",
    "ORDER_STATUSES",
    "EventsCsv",
    "Exporter",
    "LiveMetrics",
    "StageTimes",
    "TelemetryCollector",
    "read_events",
    "start_exporter",
]
