"""Tests for the simulated market feed (prod_core.feeds.sim)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from prod_core.configs.symbols import SimConfig, SimSymbolConfig, SymbolConfig, SymbolsConfig
from prod_core.domain import Bar, Regime, timeframe_to_ms
from prod_core.feeds.base import Feed
from prod_core.feeds.sim import CHUNK_BARS, SimBatch, SimFeed

REPO = Path(__file__).resolve().parents[2]
START_MS = 1_700_000_000_000
SHIPPED = SymbolsConfig.model_validate(yaml.safe_load((REPO / "configs" / "symbols.yaml").read_text()))
SCENARIOS = (None, "crash", "corr_spike", "feed_outage")


def make_feed(symbols: tuple[SymbolConfig, ...] = SHIPPED.symbols, **sim: Any) -> SimFeed:
    paced = sim.pop("paced", True)
    interval = sim.pop("bar_interval_s_override", None)
    cfg = SimConfig(**{**SHIPPED.sim.model_dump(), "scenario": None, **sim})
    return SimFeed(symbols, cfg, start_ms=START_MS, paced=paced, bar_interval_s=interval)


def window(sim: SimConfig) -> tuple[int, int]:
    w0 = sim.history_bars + sim.scenario_start_bar
    return w0, w0 + sim.scenario_bars


def log_returns(close: np.ndarray) -> np.ndarray:
    return np.diff(np.log(close), axis=1)


def mean_pairwise_corr(returns: np.ndarray) -> float:
    corr = np.corrcoef(returns)
    n = corr.shape[0]
    return float(corr[~np.eye(n, dtype=bool)].mean())


def batch_rows(batch: SimBatch) -> list[tuple[str, int, float, float, float, float, float]]:
    """The batch as Bar tuples in feed order (time, then symbols order)."""
    rows = []
    for t in range(batch.ts_ms.shape[0]):
        for s, sym in enumerate(batch.symbols):
            rows.append(
                (
                    sym,
                    int(batch.ts_ms[t]),
                    float(batch.open[s, t]),
                    float(batch.high[s, t]),
                    float(batch.low[s, t]),
                    float(batch.close[s, t]),
                    float(batch.volume[s, t]),
                )
            )
    return rows


def slice_batch(batch: SimBatch, n: int) -> SimBatch:
    return SimBatch(
        symbols=batch.symbols,
        ts_ms=batch.ts_ms[:n],
        open=batch.open[:, :n],
        high=batch.high[:, :n],
        low=batch.low[:, :n],
        close=batch.close[:, :n],
        volume=batch.volume[:, :n],
        regime=batch.regime[:n],
    )


# 1. determinism -------------------------------------------------------------------


def test_same_seed_same_digest_different_seed_different() -> None:
    """The same seed and config give identical bars; another seed gives other bars."""
    a = make_feed(seed=7).generate(5000).digest()
    b = make_feed(seed=7).generate(5000).digest()
    c = make_feed(seed=8).generate(5000).digest()
    assert a == b
    assert a != c


def test_prefix_is_independent_of_request_size_and_api() -> None:
    """generate(2000) equals the first 2000 timestamps of generate(5000) and of iter_bars."""
    small = make_feed().generate(2000)
    big_feed = make_feed()
    big = big_feed.generate(5000)
    assert big.ts_ms.shape == (5000,) and big.close.shape == (5, 5000)
    assert small.digest() == slice_batch(big, 2000).digest()
    rows = [bar.as_tuple() for bar in make_feed().iter_bars(2000)]
    assert rows == batch_rows(small)


def test_access_order_does_not_change_bars() -> None:
    """Asking for a late chunk first (regime_at, then generate) gives the same bars as in order."""
    late_first = make_feed()
    late_first.regime_at(3 * CHUNK_BARS + 5)
    late_first.generate(3 * CHUNK_BARS + 10)
    expected = make_feed().generate(3 * CHUNK_BARS + 10)
    assert late_first.generate(3 * CHUNK_BARS + 10).digest() == expected.digest()


@settings(max_examples=15, deadline=None)
@given(steps=st.lists(st.floats(min_value=0.0, max_value=400.0), min_size=1, max_size=25))
def test_paced_poll_matches_iter_bars_however_chunked(steps: list[float]) -> None:
    """Paced polls at arbitrary wall times deliver exactly the iter_bars values in order."""
    feed = make_feed(history_bars=100)
    feed.start(0.0)
    now, got = 0.0, []
    for step in steps:
        now += step
        got.extend(bar.as_tuple() for bar in feed.poll(now))
    n_ts = len(got) // len(feed.symbols)
    assert len(got) % len(feed.symbols) == 0
    assert got == [bar.as_tuple() for bar in make_feed(history_bars=100).iter_bars(n_ts)]
    assert feed.last_bar_index == n_ts - 1


def test_unpaced_poll_matches_generate() -> None:
    """Unpaced polls return history first, then fixed chunks, with generate()'s values."""
    feed = make_feed(paced=False)
    assert feed.poll(0.0) == []  # not started
    feed.start(0.0)
    first = feed.poll(0.0)
    assert len(first) == 300 * 5
    got = [bar.as_tuple() for bar in first]
    for _ in range(5):
        got.extend(bar.as_tuple() for bar in feed.poll(0.0))
    n_ts = len(got) // 5
    assert n_ts == 300 + 5 * 1024
    assert got == batch_rows(make_feed().generate(n_ts))
    assert feed.exhausted is False


# 2-3. scenarios -----------------------------------------------------------------------


def test_corr_spike_raises_mean_pairwise_correlation() -> None:
    """corr_spike lifts the mean pairwise return correlation over the window by >= 0.3."""
    feed = make_feed(scenario="corr_spike")
    w0, w1 = window(feed._sim)
    close = feed.generate(w1 + 10).close
    length = w1 - w0
    inside = mean_pairwise_corr(log_returns(close[:, w0 - 1 : w1]))
    before = mean_pairwise_corr(log_returns(close[:, w0 - length - 1 : w0]))
    print(f"corr_spike mean pairwise correlation: before={before:.3f} window={inside:.3f}")
    assert inside - before >= 0.3


@pytest.mark.parametrize("seed", [1, 42, 2024])
def test_crash_drops_every_symbol_15_percent_within_30_bars(seed: int) -> None:
    """crash makes every symbol's close fall >= 15% within 30 bars of the window start, labelled VOLATILE."""
    feed = make_feed(scenario="crash", seed=seed)
    w0, w1 = window(feed._sim)
    batch = feed.generate(w1 + 10)
    ref = batch.close[:, w0 - 1]
    worst = batch.close[:, w0 : w0 + 30].min(axis=1) / ref - 1.0
    assert np.all(worst <= -0.15), worst
    assert np.all(batch.regime[w0:w1] == Regime.VOLATILE)
    assert feed.regime_at(w0) is Regime.VOLATILE


def test_feed_outage_skips_window_and_health_follows() -> None:
    """feed_outage emits no bars in the window; health is -1 paused, 1, 0 during the gap, 1 after."""
    feed = make_feed(scenario="feed_outage", history_bars=50, scenario_start_bar=20, scenario_bars=40)
    tf = timeframe_to_ms(feed._sim.timeframe)
    w0, w1 = window(feed._sim)
    assert feed.health(0.0) == -1
    t0 = 1000.0
    feed.start(t0)
    assert feed.health(t0) == 1
    history = feed.poll(t0)
    assert len(history) == 50 * 5
    seen_ts: list[int] = []
    health: dict[int, int] = {}
    for k in range(1, 100):  # live bar k-1 is due at t0 + k * 0.25
        now = t0 + k * 0.25
        seen_ts.extend(bar.ts_ms for bar in feed.poll(now))
        health[50 + k - 1] = feed.health(now)
    indices = sorted({(ts - START_MS) // tf for ts in seen_ts})
    assert indices == [i for i in range(50, 50 + 99) if not w0 <= i < w1]
    assert all(health[i] == 1 for i in range(50, w0))
    assert any(health[i] == 0 for i in range(w0, w1))
    assert health[w0 + 3] == 1 and health[w0 + 4] == 0  # stale after max(3 * 0.25, 1 s)
    assert all(health[i] == 1 for i in range(w1, 50 + 99))
    assert feed.last_bar_index == 50 + 98
    feed.stop()
    assert feed.health(t0 + 100) == -1
    assert feed.poll(t0 + 100) == []
    assert feed.next_due_s() is None


# 5. invariants ------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_ohlc_invariants_and_positivity(scenario: str | None) -> None:
    """Over 20k bars every bar has 0 < low <= min(open, close) <= max(open, close) <= high and volume > 0."""
    b = make_feed(scenario=scenario).generate(20_000)
    arrays = (b.open, b.high, b.low, b.close, b.volume)
    assert all(np.isfinite(a).all() for a in arrays)
    assert (b.low > 0).all()
    assert (b.low <= np.minimum(b.open, b.close)).all()
    assert (np.maximum(b.open, b.close) <= b.high).all()
    assert (b.volume > 0).all()
    assert np.array_equal(b.open[:, 1:], b.close[:, :-1])
    assert np.array_equal(np.diff(b.ts_ms), np.full(19_999, timeframe_to_ms("1m")))


def test_regimes_present_and_symbols_positively_correlated() -> None:
    """10k bars show all four regimes, a calm start of >= 150 bars and positive mean correlation."""
    feed = make_feed()
    b = feed.generate(10_000)
    codes = set(np.unique(b.regime).tolist())
    assert codes == {int(r) for r in (Regime.CALM, Regime.TREND_UP, Regime.TREND_DOWN, Regime.VOLATILE)}
    assert (b.regime[:150] == Regime.CALM).all()
    assert [feed.regime_at(i) for i in (0, 5000, 9999)] == [Regime(int(b.regime[i])) for i in (0, 5000, 9999)]
    assert mean_pairwise_corr(log_returns(b.close)) > 0.2


def test_regimes_visible_in_each_symbols_own_returns() -> None:
    """Each symbol's returns show the regime: trend drift signs and about 3x volatility when volatile."""
    b = make_feed().generate(20_000)
    r = log_returns(b.close)
    labels = b.regime[1:]
    sigma = np.array([s.sim.vol_bps / 1e4 for s in SHIPPED.symbols])
    calm_vol = r[:, labels == Regime.CALM].std(axis=1) / sigma
    vol_ratio = r[:, labels == Regime.VOLATILE].std(axis=1) / r[:, labels == Regime.CALM].std(axis=1)
    up = r[:, labels == Regime.TREND_UP].mean(axis=1) / sigma
    down = r[:, labels == Regime.TREND_DOWN].mean(axis=1) / sigma
    assert np.all((calm_vol > 0.9) & (calm_vol < 1.2)), calm_vol
    assert np.all(vol_ratio > 2.5), vol_ratio
    assert np.all(up > 0.15) and np.all(down < -0.15), (up, down)


def test_prices_positive_and_finite_over_a_million_bars() -> None:
    """A high-volatility symbol stays positive and finite over 1e6 bars."""
    wild = (SymbolConfig(symbol="WILD/USDT", sim=SimSymbolConfig(start_price=0.01, vol_bps=100.0, beta=2.0)),)
    b = make_feed(wild, scenario="crash").generate(1_000_000)
    assert np.isfinite(b.low).all() and (b.low > 0).all()
    assert np.isfinite(b.high).all()


# 6. paced mode -----------------------------------------------------------------------------------------


def test_paced_history_then_one_timestamp_per_interval_and_catch_up() -> None:
    """History comes on the first poll, then one timestamp per interval; a long gap is caught up in order."""
    feed = make_feed(history_bars=300, bar_interval_s_override=0.5)
    assert isinstance(feed, Feed)
    tf = timeframe_to_ms("1m")
    assert feed.live_from_ms == START_MS + 300 * tf
    assert feed.next_due_s() is None and feed.poll(5.0) == []
    t0 = 100.0
    feed.start(t0)
    assert feed.next_due_s() == t0
    history = feed.poll(t0)
    assert len(history) == 300 * 5
    assert all(bar.ts_ms < feed.live_from_ms for bar in history)
    assert history[-1].ts_ms == feed.live_from_ms - tf
    assert feed.poll(t0) == [] and feed.poll(t0 + 0.49) == []
    assert feed.next_due_s() == t0 + 0.5
    for k in range(5):
        bars = feed.poll(t0 + (k + 1) * 0.5)
        assert [b.symbol for b in bars] == list(feed.symbols)
        assert {b.ts_ms for b in bars} == {feed.live_from_ms + k * tf}
        assert feed.poll(t0 + (k + 1) * 0.5 + 0.1) == []
    assert feed.last_bar_index == 304
    caught_up = feed.poll(t0 + 15 * 0.5 + 0.2)  # live bars 5..14 are due
    ts = [b.ts_ms for b in caught_up]
    assert ts == sorted(ts) and len(caught_up) == 10 * 5
    assert sorted(set(ts)) == [feed.live_from_ms + k * tf for k in range(5, 15)]
    assert feed.next_due_s() == t0 + 16 * 0.5
    assert feed.health(t0 + 15 * 0.5 + 0.2) == 1


def test_iter_bars_is_endless_across_chunks() -> None:
    """iter_bars(None) keeps going past chunk boundaries in time order."""
    it = make_feed().iter_bars()
    bars: list[Bar] = [next(it) for _ in range(5 * (CHUNK_BARS + 3))]
    ts = [b.ts_ms for b in bars[::5]]
    assert ts == [START_MS + i * 60_000 for i in range(CHUNK_BARS + 3)]


def test_restart_continues_the_path_without_losing_or_repeating_bars() -> None:
    """restart() after a stall re-anchors pacing: the next bar is the next index, one interval later."""
    from prod_core.configs import ConfigLoader
    from prod_core.feeds.sim import SimFeed as _Sim

    sym = ConfigLoader("configs").load_symbols()
    sim = sym.sim.model_copy(update={"history_bars": 5, "bar_interval_s": 1.0})
    feed = _Sim(sym.symbols, sim, start_ms=0)
    feed.start(100.0)
    first = feed.poll(100.0) + feed.poll(102.0)
    feed.poll(102.5)
    feed.restart()
    assert feed.poll(103.0) == []
    after = feed.poll(103.6)
    n = len(sym.symbols)
    assert len(after) == n
    reference = list(_Sim(sym.symbols, sim, start_ms=0, paced=False).iter_bars(5 + 3))
    assert first + after == reference
