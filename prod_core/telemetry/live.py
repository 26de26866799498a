"""Live telemetry state: plain attributes the runner mutates, read by the exporter at scrape time.

Nothing here touches prometheus_client: the hot path only assigns floats/ints and bumps
dict entries or list cells. Readers (the scrape thread) copy dicts/lists before iterating,
so a key added concurrently by the runner never breaks a scrape.
"""

from __future__ import annotations

from collections.abc import Hashable, MutableMapping, Sequence

from prod_core.domain.types import STAGES

LATENCY_BUCKETS_MS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000,
)
LOCK_REASONS: tuple[str, ...] = (
    "limits_ok", "max_daily_loss", "max_trades", "max_consecutive_losses", "manual",
)
ORDER_STATUSES: tuple[str, ...] = ("submitted", "filled", "partial", "rejected", "cancelled")
FILL_REASONS: tuple[str, ...] = ("entry", "stop", "target", "exit_signal", "kill_switch", "liquidation")
# Fill slippage against the fill model's reference price (bar open, stop, book), basis points;
# positive = paid (worse than the reference), negative = better (a gap through a limit).
SLIPPAGE_BUCKETS_BPS: tuple[float, ...] = (-10, -2, -0.5, 0, 0.5, 1, 2, 3, 5, 10, 20, 50, 100)
# Bar time from an order's decision bar to its last fill, seconds.
FILL_TIME_BUCKETS_S: tuple[float, ...] = (0, 60, 120, 300, 600, 900, 1800, 3600, 14400)

# Integer nanosecond upper bounds ("le") of the finite buckets; 0.001 ms == 1_000 ns exactly.
_BOUNDS_NS: tuple[int, ...] = tuple(round(b * 1_000_000) for b in LATENCY_BUCKETS_MS)


def _bucket(bounds: tuple, value: float) -> int:
    """The histogram cell of ``value``: how many bounds are below it (``bisect.bisect_left``: a value
    equal to a bound lands in that bound's "le" cell; NaN in the first). The compiled build runs it on
    C integers and doubles (live.pxd), where the library's bisect compares Python objects."""
    lo = 0
    hi = len(bounds)
    while lo < hi:
        mid = (lo + hi) // 2
        b = bounds[mid]
        if b < value:
            lo = mid + 1
        else:
            hi = mid
    return lo


class StageTimes:
    """Per-stage latency histogram accumulated in plain lists (no prometheus objects on the hot path)."""

    __slots__ = ("stages", "bounds_ns", "counts", "sum_ns", "count")

    def __init__(self, stages: Sequence[str] = STAGES) -> None:
        self.stages: tuple[str, ...] = tuple(stages)
        self.bounds_ns: tuple[int, ...] = _BOUNDS_NS
        n_buckets = len(_BOUNDS_NS) + 1  # last cell is the +Inf overflow
        self.counts: list[list[int]] = [[0] * n_buckets for _ in self.stages]
        self.sum_ns: list[int] = [0] * len(self.stages)
        self.count: list[int] = [0] * len(self.stages)

    def record(self, stage_index: int, elapsed_ns: int) -> None:
        """Add one observation; a value equal to a bound lands in that bound's bucket (le)."""
        counts: list = self.counts[stage_index]
        counts[_bucket(self.bounds_ns, elapsed_ns)] += 1
        self.sum_ns[stage_index] += elapsed_ns
        self.count[stage_index] += 1

    def snapshot(self) -> dict[str, tuple[list[int], int, int]]:
        """Stage -> (non-cumulative bucket counts incl. +Inf, sum_ns, count), copied."""
        return {
            stage: (list(self.counts[i]), self.sum_ns[i], self.count[i])
            for i, stage in enumerate(self.stages)
        }

    def quantile_ms(self, stage: str, q: float) -> float:
        """Estimate the q-quantile in ms like PromQL histogram_quantile (linear within a bucket)."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile q must be in [0, 1], was {q}")
        counts = list(self.counts[self.stages.index(stage)])
        total = sum(counts)
        if total == 0:
            return 0.0
        rank = q * total
        cumulative = 0
        for i, c in enumerate(counts):
            if c and cumulative + c >= rank:
                if i == len(LATENCY_BUCKETS_MS):  # +Inf bucket: best answer is the top bound
                    return float(LATENCY_BUCKETS_MS[-1])
                lower = 0.0 if i == 0 else float(LATENCY_BUCKETS_MS[i - 1])
                upper = float(LATENCY_BUCKETS_MS[i])
                return lower + (upper - lower) * (rank - cumulative) / c
            cumulative += c
        return float(LATENCY_BUCKETS_MS[-1])  # pragma: no cover - rank <= total always hits


class ValueHistogram:
    """A labelled histogram in plain lists: ``observe(label, value)`` per event, read at scrape time."""

    __slots__ = ("bounds", "counts", "sums")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds: tuple[float, ...] = tuple(float(b) for b in bounds)
        self.counts: dict[str, list[int]] = {}
        self.sums: dict[str, float] = {}

    def observe(self, label: str, value: float) -> None:
        counts: list = self.counts.get(label)
        if counts is None:
            counts = self.counts[label] = [0] * (len(self.bounds) + 1)
            self.sums[label] = 0.0
        counts[_bucket(self.bounds, value)] += 1
        self.sums[label] += value

    def snapshot(self) -> dict[str, tuple[list[int], float, int]]:
        """Label -> (non-cumulative bucket counts incl. +Inf, sum, count), copied."""
        return {k: (list(c), self.sums.get(k, 0.0), sum(c)) for k, c in list(self.counts.items())}


class LiveMetrics:
    """Current telemetry state; every metric of DESIGN.md's table is read from here at scrape time.

    ``__slots__`` makes a typo in an attribute assignment fail loudly instead of creating
    a value nobody exports.
    """

    __slots__ = (
        "feeds", "symbols", "strategies", "stages", "feed_symbols",
        "feed_health", "feed_last_bar_ts", "daily_lock_reason", "dd_state", "max_dd_r", "dd_critical_r",
        "regime", "equity_usd", "pnl_cum_r", "open_positions_count",
        "exposure_gross_pct", "exposure_net_pct", "portfolio_safe_mode", "kill_switch_state",
        "runner_last_cycle_ts", "runner_up", "execution_reject_rate", "pending_plans",
        "stage_sla_ms", "alert_test", "storage_write_failing", "storage_retries",
        "bars_total", "anomalies_total", "feed_rate_limited", "plans_total", "orders_total", "fills_total",
        "errors_total", "stage_times", "funding_usd_total", "funding_events_total", "fill_slippage",
        "fill_time", "order_qty", "order_filled_qty", "strategy_errors_total",
    )

    def __init__(
        self,
        *,
        feeds: Sequence[str],
        symbols: Sequence[str],
        strategies: Sequence[str],
        stages: Sequence[str] = STAGES,
    ) -> None:
        self.feeds: tuple[str, ...] = tuple(feeds)
        self.symbols: tuple[str, ...] = tuple(symbols)
        self.strategies: tuple[str, ...] = tuple(strategies)
        self.stages: tuple[str, ...] = tuple(stages)
        # Which symbols each feed delivers (topology edges). Default: every feed, every symbol.
        self.feed_symbols: dict[str, tuple[str, ...]] = {f: self.symbols for f in self.feeds}

        # gauges
        self.feed_health: dict[str, int] = {f: -1 for f in self.feeds}
        # wall-clock unix seconds of the last bar each feed delivered (0 = none yet)
        self.feed_last_bar_ts: dict[str, float] = {f: 0.0 for f in self.feeds}
        self.daily_lock_reason: str = "limits_ok"
        self.dd_state: float = 0.0
        self.max_dd_r: float = 0.0
        self.dd_critical_r: float = 1.5
        self.regime: dict[str, int] = {s: 0 for s in self.symbols}
        self.equity_usd: float = 0.0
        self.pnl_cum_r: float = 0.0
        self.open_positions_count: int = 0
        self.exposure_gross_pct: float = 0.0
        self.exposure_net_pct: float = 0.0
        self.portfolio_safe_mode: int = 0
        self.kill_switch_state: int = 0
        self.runner_last_cycle_ts: float = 0.0
        self.runner_up: int = 0
        self.execution_reject_rate: float = 0.0
        self.pending_plans: int = 0
        self.stage_sla_ms: float = 50.0
        self.alert_test: dict[str, str] = {}
        # 1 while fills cannot be journaled (full disk, read-only, lasting lock): entries halted
        self.storage_write_failing: int = 0
        self.storage_retries: int = 0  # busy-database write retries (counter)

        # counters, pre-seeded so every series exists from the first scrape
        self.bars_total: dict[str, int] = {s: 0 for s in self.symbols}
        self.anomalies_total: dict[tuple[str, str], int] = {}
        # rate-limit / ban answers per feed (the runner copies ``feed.rate_limited`` in each cycle)
        self.feed_rate_limited: dict[str, int] = {f: 0 for f in self.feeds}
        self.plans_total: dict[tuple[str, str], int] = {(s, "approved"): 0 for s in self.strategies}
        # exceptions raised inside a strategy's on_bar (each holds the strategy)
        self.strategy_errors_total: dict[str, int] = {s: 0 for s in self.strategies}
        self.orders_total: dict[str, int] = {st: 0 for st in ORDER_STATUSES}
        self.fills_total: dict[tuple[str, str], int] = {
            (s, r): 0 for s in self.symbols for r in FILL_REASONS
        }
        self.errors_total: dict[str, int] = {c: 0 for c in (*self.stages, "runner")}
        self.stage_times: StageTimes = StageTimes(self.stages)
        # fill realism and funding, per symbol
        self.funding_usd_total: dict[str, float] = {}  # paid (negative: received) this run
        self.funding_events_total: dict[str, int] = {}
        self.fill_slippage: ValueHistogram = ValueHistogram(SLIPPAGE_BUCKETS_BPS)
        self.fill_time: ValueHistogram = ValueHistogram(FILL_TIME_BUCKETS_S)
        self.order_qty: dict[str, float] = {}  # ordered qty of orders that ended (filled, cancelled, rejected)
        self.order_filled_qty: dict[str, float] = {}

    @staticmethod
    def inc(counter: MutableMapping[Hashable, int], key: Hashable, n: int = 1) -> None:
        """Add ``n`` to ``counter[key]``, creating the series at 0 first if it is new."""
        counter[key] = counter.get(key, 0) + n
