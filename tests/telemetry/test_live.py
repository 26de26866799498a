"""StageTimes bucket placement and quantiles; LiveMetrics pre-seeding and inc."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prod_core.domain.types import STAGES
from prod_core.telemetry import FILL_REASONS, LATENCY_BUCKETS_MS, ORDER_STATUSES, LiveMetrics, StageTimes

INF = len(LATENCY_BUCKETS_MS)  # index of the +Inf bucket


def bucket_of(times: StageTimes, stage: str) -> int:
    counts = times.snapshot()[stage][0]
    assert sum(counts) == 1
    return counts.index(1)


@pytest.mark.parametrize(
    ("elapsed_ns", "bucket"),
    [
        (0, 0),
        (1_000, 0),  # exactly 0.001 ms: le is inclusive
        (1_001, 1),
        (2_500, 1),
        (999_999, 9),  # just under 1 ms
        (1_000_000, 9),  # exactly 1 ms
        (1_000_000_000, INF - 1),  # exactly 1000 ms
        (1_000_000_001, INF),
    ],
)
def test_record_places_values_on_inclusive_upper_bounds(elapsed_ns: int, bucket: int) -> None:
    """A value equal to a bucket bound is counted in that bucket, above the top bound in +Inf."""
    times = StageTimes()
    times.record(STAGES.index("strategy"), elapsed_ns)
    assert bucket_of(times, "strategy") == bucket
    counts, sum_ns, count = times.snapshot()["strategy"]
    assert (sum_ns, count, len(counts)) == (elapsed_ns, 1, INF + 1)


@given(st.lists(st.integers(min_value=0, max_value=5_000_000_000), max_size=50))
def test_snapshot_counts_sum_and_count_agree(values: list[int]) -> None:
    """Bucket counts add up to count and sum_ns is the exact total, whatever the values."""
    times = StageTimes(("a",))
    for v in values:
        times.record(0, v)
    counts, sum_ns, count = times.snapshot()["a"]
    assert sum(counts) == count == len(values)
    assert sum_ns == sum(values)


def test_quantile_is_zero_when_empty_and_interpolates_within_a_bucket() -> None:
    """quantile_ms is 0.0 without data and a linear estimate inside the bucket holding the rank."""
    times = StageTimes(("risk",))
    assert times.quantile_ms("risk", 0.95) == 0.0
    for _ in range(100):
        times.record(0, 30_000)  # 0.03 ms -> bucket (0.025, 0.05]
    assert 0.025 < times.quantile_ms("risk", 0.5) <= 0.05
    assert times.quantile_ms("risk", 0.5) == pytest.approx(0.0375)
    assert times.quantile_ms("risk", 1.0) == pytest.approx(0.05)
    times.record(0, 10**12)  # one outlier in +Inf does not move the median
    assert times.quantile_ms("risk", 0.5) < 0.05
    with pytest.raises(ValueError, match="quantile"):
        times.quantile_ms("risk", 1.5)


def test_quantile_p95_separates_fast_and_slow_stages() -> None:
    """With 90 fast and 10 slow observations p50 is fast and p99 lands in the slow bucket."""
    times = StageTimes(("feed",))
    for _ in range(90):
        times.record(0, 2_000)  # 0.002 ms
    for _ in range(10):
        times.record(0, 20_000_000)  # 20 ms
    assert times.quantile_ms("feed", 0.5) <= 0.0025
    assert 10 < times.quantile_ms("feed", 0.99) <= 25


def test_live_metrics_preseeds_every_known_series() -> None:
    """Every known label combination exists at 0 (or -1 for feeds) before the first event."""
    live = LiveMetrics(feeds=["sim", "ccxt"], symbols=["BTC/USDT"], strategies=["trend"])
    assert live.feed_health == {"sim": -1, "ccxt": -1}
    assert live.regime == {"BTC/USDT": 0}
    assert live.plans_total == {("trend", "approved"): 0}
    assert set(live.orders_total) == set(ORDER_STATUSES)
    assert set(live.fills_total) == {("BTC/USDT", r) for r in FILL_REASONS}
    assert set(live.errors_total) == {*STAGES, "runner"}
    assert (live.daily_lock_reason, live.dd_critical_r, live.stage_sla_ms) == ("limits_ok", 1.5, 50.0)


def test_inc_creates_new_series_and_adds() -> None:
    """inc adds to an existing key and creates an unknown one starting from zero."""
    live = LiveMetrics(feeds=["sim"], symbols=["BTC/USDT"], strategies=["trend"])
    live.inc(live.bars_total, "BTC/USDT")
    live.inc(live.bars_total, "BTC/USDT", 4)
    live.inc(live.anomalies_total, ("sim", "ohlc_inconsistent"))
    assert live.bars_total["BTC/USDT"] == 5
    assert live.anomalies_total == {("sim", "ohlc_inconsistent"): 1}


def test_typo_in_attribute_name_fails_loudly() -> None:
    """Assigning an unknown attribute raises instead of silently creating an unexported value."""
    live = LiveMetrics(feeds=[], symbols=[], strategies=[])
    with pytest.raises(AttributeError):
        live.feed_healt = {}  # type: ignore[attr-defined]


@given(st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([-10, -0.5, 0, 0.5, 3, 100])),
                max_size=60))
def test_value_histogram_cells_are_bisect_left_of_the_bounds(values: list[float]) -> None:
    """Fill slippage and fill time: a value equal to a bound lands in that bound's cell, NaN in the first,
    above every bound in +Inf; the sum and count follow every observation."""
    from bisect import bisect_left

    from prod_core.telemetry.live import SLIPPAGE_BUCKETS_BPS, ValueHistogram

    hist = ValueHistogram(SLIPPAGE_BUCKETS_BPS)
    expected = [0] * (len(SLIPPAGE_BUCKETS_BPS) + 1)
    for v in values:
        hist.observe("BTC/USDT", v)
        expected[bisect_left(SLIPPAGE_BUCKETS_BPS, v)] += 1
    if values:
        counts, total, n = hist.snapshot()["BTC/USDT"]
        assert counts == expected and n == len(values)
        assert total == pytest.approx(sum(values), nan_ok=True) or total == sum(values)
