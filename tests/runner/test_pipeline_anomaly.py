"""The pipeline's anomaly line: one line per burst with its true size, at most one per window, metric exact."""

from __future__ import annotations

import math
from pathlib import Path

from prod_core.configs import ConfigLoader
from prod_core.domain import Bar, Instrument, InstrumentKind
from prod_core.risk import GovernanceState
from prod_core.runner.pipeline import ANOMALY_LOG_EVERY_S, Pipeline
from prod_core.storage import Storage
from prod_core.telemetry import LiveMetrics
from tests.conftest import REPO

SYM = "BTC/USDT"
TF = 60_000


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def _pipeline(tmp_path: Path):
    loader = ConfigLoader(REPO / "configs")
    gov, sym = loader.load_governance(), loader.load_symbols()
    storage = Storage(str(tmp_path / "p.db"))
    storage.start_run("r1", mode="paper", feed="ccxt", config_hash="x", code_version="t", ts=0.0)
    instruments = {s.symbol: Instrument(symbol=s.symbol, kind=InstrumentKind(s.kind)) for s in sym.symbols}
    live = LiveMetrics(feeds=["ccxt"], symbols=list(instruments), strategies=["trend_following", "mean_reversion"])
    lines: list[tuple[str, dict, float]] = []
    clock = Clock()

    def notify(kind, message, **kw):
        if kind == "data_anomaly":
            lines.append((message, kw.get("fields") or {}, clock.now))

    p = Pipeline(run_id="r1", gov=gov, instruments=instruments, storage=storage, live=live, notify=notify,
                 state=GovernanceState(), feed_name="ccxt", clock_mode="wall", wall_clock=clock)
    return p, storage, live, lines, clock


class Bars:
    """Good bars in time order, and bad ones of a given kind at the current time."""

    def __init__(self) -> None:
        self.ts = 1_740_009_600_000

    def good(self) -> Bar:
        self.ts += TF
        return Bar(SYM, self.ts, 100.0, 101.0, 99.0, 100.5, 1.0)

    def bad(self, kind: str) -> Bar:
        if kind == "nan":
            return Bar(SYM, self.ts + TF // 2, math.nan, 101.0, 99.0, 100.5, 1.0)
        if kind == "duplicate":
            return Bar(SYM, self.ts, 100.0, 101.0, 99.0, 100.5, 1.0)
        return Bar(SYM, self.ts + TF // 2, 100.0, 98.0, 99.0, 100.5, 1.0)  # high_below_low


def _burst(p: Pipeline, bars: Bars, n: int, kinds=("nan", "duplicate", "high_below_low")) -> None:
    """n rejected bars in one poll, with good bars between them, as a ccxt catch-up delivers them."""
    for i in range(n):
        p.on_bar(bars.good())
        p.on_bar(bars.bad(kinds[i % len(kinds)]))


def test_burst_of_65_is_logged_once_with_its_true_count(tmp_path: Path) -> None:
    """65 rejected bars in one poll give one line «отклонено баров 65» at the next flush, not «1» at the first."""
    p, storage, live, lines, clock = _pipeline(tmp_path)
    bars = Bars()
    _burst(p, bars, 65)
    assert lines == []  # nothing while the burst is still being summed
    clock.now += 1.0
    p._anomaly(None)  # the flush `tick` makes once a second
    assert len(lines) == 1
    message, fields, _ = lines[0]
    assert "Фид ccxt: отклонено баров 65 " in message
    assert fields["burst"] == 65 and fields["kinds"] == {"nan": 22, "duplicate": 22, "high_below_low": 21}
    assert sum(n for (feed, _), n in live.anomalies_total.items() if feed == "ccxt") == 65
    p._anomaly(None)
    assert len(lines) == 1
    storage.close()


def test_next_burst_after_a_quiet_gap_logs_the_previous_one_without_a_flush(tmp_path: Path) -> None:
    """Without any flush call, the first bar of a later burst writes the finished burst's true count."""
    p, storage, live, lines, clock = _pipeline(tmp_path)
    bars = Bars()
    _burst(p, bars, 65)
    clock.now += 10.0
    _burst(p, bars, 3)
    assert [f["burst"] for _, f, _ in lines] == [65]
    clock.now += 10.0
    p._anomaly(None, final=True)  # at stop: what is pending is written
    assert [f["burst"] for _, f, _ in lines] == [65, 3]
    assert "отклонено баров 3 " in lines[1][0]
    storage.close()


def test_lines_are_rate_limited_and_their_counts_add_up(tmp_path: Path) -> None:
    """Bursts closer than the window merge into one line; a long flood gets one line per window; no bar is lost."""
    p, storage, live, lines, clock = _pipeline(tmp_path)
    bars = Bars()
    total = 0
    for second in range(40):
        if second in (0, 2, 3) or 10 <= second < 30:  # three short bursts, then a 20 s flood
            _burst(p, bars, 4)
            total += 4
        for _ in range(2):
            clock.now += 0.5
            p._anomaly(None)
    p._anomaly(None, final=True)
    logged = [f["burst"] for _, f, _ in lines]
    assert sum(logged) == total == sum(live.anomalies_total.values())
    assert logged[0] == 4  # the first burst alone, as soon as it was over
    assert len(lines) <= 40 / ANOMALY_LOG_EVERY_S + 2  # never per bar, never per burst inside the window
    stamps = [t for _, _, t in lines]
    assert all(b - a >= ANOMALY_LOG_EVERY_S for a, b in zip(stamps, stamps[1:]))
    storage.close()
