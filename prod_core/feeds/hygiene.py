"""Bar hygiene: malformed bars are rejected before any stage sees them."""

from __future__ import annotations

import math

from prod_core.domain import Bar

ANOMALY_KINDS = (
    "nan",
    "non_positive_price",
    "negative_volume",
    "high_below_low",
    "open_close_outside_range",
    "out_of_order",
    "duplicate",
)

_INF = math.inf


def is_clean(bar: Bar, last_ts_ms: int) -> bool:
    """Fast path: True when the bar is well formed and newer than ``last_ts_ms``."""
    low = bar.low
    high = bar.high
    return (
        0.0 < low <= bar.open <= high < _INF
        and low <= bar.close <= high
        and 0.0 <= bar.volume < _INF
        and bar.ts_ms > last_ts_ms
    )


def classify(bar: Bar, last_ts_ms: int) -> str | None:
    """The anomaly kind of a bar (slow path, only for bars that failed ``is_clean``)."""
    values = (bar.open, bar.high, bar.low, bar.close, bar.volume)
    if any(not isinstance(v, (int, float)) or not math.isfinite(v) for v in values):
        return "nan"
    if min(bar.open, bar.high, bar.low, bar.close) <= 0.0:
        return "non_positive_price"
    if bar.volume < 0.0:
        return "negative_volume"
    if bar.high < bar.low:
        return "high_below_low"
    if not (bar.low <= bar.open <= bar.high and bar.low <= bar.close <= bar.high):
        return "open_close_outside_range"
    if bar.ts_ms == last_ts_ms:
        return "duplicate"
    if bar.ts_ms < last_ts_ms:
        return "out_of_order"
    return None
