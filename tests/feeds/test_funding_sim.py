"""Funding rates of the simulated market (prod_core.feeds.sim_funding over SimFeed)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from prod_core.configs.symbols import FundingModelConfig, SimConfig, SimSymbolConfig, SymbolConfig
from prod_core.feeds.funding import FundingRates, funding_times
from prod_core.feeds.sim import CHUNK_BARS, SimFeed
from prod_core.feeds.sim_funding import model_rate, noise_z, premium_bps, rate_from_closes

TF_MS = 300_000
H8 = 8 * 3_600_000
START_MS = 1_743_700_000_000 // TF_MS * TF_MS
SYMBOLS = (
    SymbolConfig(symbol="BTC/USDT", kind="perp", sim=SimSymbolConfig(start_price=80_000.0, vol_bps=20.0)),
    SymbolConfig(symbol="ETH/USDT", kind="perp", sim=SimSymbolConfig(start_price=1_800.0, vol_bps=30.0)),
)


def make_feed(seed: int = 7, funding: FundingModelConfig | None = None, paced: bool = False) -> SimFeed:
    sim = SimConfig(timeframe="5m", history_bars=0, seed=seed, funding=funding or FundingModelConfig())
    return SimFeed(SYMBOLS, sim, start_ms=START_MS, paced=paced, bar_interval_s=1.0)


def times_in_first_chunk() -> list[int]:
    return list(funding_times(START_MS, START_MS + (CHUNK_BARS - 1) * TF_MS, H8))


def all_rates(feed: SimFeed, times: list[int]) -> list[tuple[float | None, float | None]]:
    rates = feed.funding_rates()
    return [(rates.rate("BTC/USDT", t), rates.rate("ETH/USDT", t)) for t in times]


def test_sim_funding_rates_is_a_funding_rates_source() -> None:
    """SimFeed.funding_rates() satisfies the broker's FundingRates protocol."""
    assert isinstance(make_feed().funding_rates(), FundingRates)


def test_sim_funding_same_seed_gives_same_rates_whatever_the_call_order() -> None:
    """Two feeds of one seed give identical rates, even when asked in reverse order."""
    times = times_in_first_chunk()
    a, b = make_feed(), make_feed()
    a.generate(CHUNK_BARS)
    b.generate(CHUNK_BARS)
    forward = all_rates(a, times)
    backward = all_rates(b, times[::-1])[::-1]
    assert forward == backward
    assert all(r is not None for pair in forward for r in pair)


def test_sim_funding_different_seeds_give_different_rates() -> None:
    """Another seed, another market, other rates."""
    times = times_in_first_chunk()
    a, b = make_feed(seed=7), make_feed(seed=8)
    a.generate(CHUNK_BARS)
    b.generate(CHUNK_BARS)
    assert all_rates(a, times) != all_rates(b, times)


def test_sim_funding_rates_stay_within_the_clamp() -> None:
    """A strong premium weight pushes rates to the clamp and never past it."""
    model = FundingModelConfig(base_bps=1.0, premium_weight=5.0, noise_bps=3.0, clamp_bps=10.0)
    feed = make_feed(funding=model)
    feed.generate(CHUNK_BARS)
    values = [r for pair in all_rates(feed, times_in_first_chunk()) for r in pair]
    assert all(r is not None and abs(r) <= 10.0 / 10_000 for r in values)
    assert max(abs(r) for r in values if r is not None) == pytest.approx(10.0 / 10_000)


def test_sim_funding_rate_matches_the_model_on_the_bars_before_the_funding_time() -> None:
    """The rate at T is the model applied to the closes of the 8 h before T (ts < T)."""
    feed = make_feed()
    batch = feed.generate(CHUNK_BARS)
    t = times_in_first_chunk()[3]
    mask = (batch.ts_ms >= t - H8) & (batch.ts_ms < t)
    closes = batch.close[1, mask]
    assert closes.size == H8 // TF_MS
    expected = rate_from_closes(closes, noise_z(7, 1, t), FundingModelConfig())
    assert feed.funding_rates().rate("ETH/USDT", t) == expected


def test_premium_term_gives_a_rising_path_a_higher_rate_than_a_falling_one() -> None:
    """Price above its interval mean (it rose) pays longs' funding: a higher rate than after a fall."""
    model = FundingModelConfig(base_bps=1.0, premium_weight=0.5, noise_bps=0.0, clamp_bps=75.0)
    rising = np.linspace(100.0, 104.0, 96)
    falling = np.linspace(104.0, 100.0, 96)
    flat = np.full(96, 100.0)
    assert premium_bps(float(rising[-1]), float(rising.mean())) > 0 > premium_bps(float(falling[-1]), float(falling.mean()))
    up, down, base = (rate_from_closes(c, 0.0, model) for c in (rising, falling, flat))
    assert up > base > down
    assert base == pytest.approx(1.0 / 10_000)


@given(
    premium=st.floats(-1e6, 1e6),
    z=st.floats(-10, 10),
    base=st.floats(-300, 300),
    weight=st.floats(0, 10),
    clamp=st.floats(0.01, 300),
)
def test_model_rate_never_exceeds_the_clamp(premium: float, z: float, base: float, weight: float, clamp: float) -> None:
    """Whatever the inputs, |rate| <= clamp_bps / 10_000."""
    model = FundingModelConfig(base_bps=base, premium_weight=weight, noise_bps=1.0, clamp_bps=clamp)
    assert abs(model_rate(premium, z, model)) <= clamp / 10_000


def test_noise_draw_depends_only_on_seed_symbol_and_time() -> None:
    """The noise of (seed, symbol, T) is fixed; changing any of the three changes it."""
    t = START_MS // H8 * H8 + H8
    z = noise_z(7, 0, t)
    assert noise_z(7, 0, t) == z
    assert len({z, noise_z(8, 0, t), noise_z(7, 1, t), noise_z(7, 0, t + H8)}) == 4


def test_sim_funding_rate_does_not_change_when_later_bars_are_generated() -> None:
    """No look-ahead: a rate known early is the same after many more chunks (and cache evictions)."""
    feed = make_feed()
    feed.generate(CHUNK_BARS)
    times = times_in_first_chunk()
    before = all_rates(feed, times)
    feed.generate(7 * CHUNK_BARS)  # the first chunk leaves the sim's cache
    assert all_rates(feed, times) == before


def test_sim_funding_is_none_beyond_the_generated_bars() -> None:
    """Unknown (None) until the sim has produced the bar just before the funding time."""
    feed = make_feed()
    rates = feed.funding_rates()
    first = times_in_first_chunk()[0]
    assert rates.rate("BTC/USDT", first) is None
    feed.generate(10)
    assert rates.rate("BTC/USDT", first) is not None
    beyond = START_MS + CHUNK_BARS * TF_MS + H8
    assert rates.rate("BTC/USDT", beyond) is None
    assert rates.rate("DOGE/USDT", first) is None  # not a sim symbol


def test_sim_funding_in_a_session_waits_for_the_delivered_bars() -> None:
    """In a paced session the rate at T is known once the bar before T has been delivered."""
    feed = make_feed(paced=True)
    rates = feed.funding_rates()
    t = times_in_first_chunk()[0]
    bars_before = (t - START_MS) // TF_MS
    feed.start(0.0)
    feed.poll(bars_before - 1.0)  # one bar short (one bar per wall second)
    assert rates.rate("BTC/USDT", t) is None
    feed.poll(float(bars_before))
    known = rates.rate("BTC/USDT", t)
    assert known is not None
    other = make_feed()
    other.generate(CHUNK_BARS)
    assert other.funding_rates().rate("BTC/USDT", t) == known


def test_sim_funding_lists_rates_up_to_what_is_known() -> None:
    """rates(symbol, after, upto) lists the known funding times in order and stops at the horizon."""
    feed = make_feed()
    feed.generate(CHUNK_BARS)
    rates = feed.funding_rates()
    listed = rates.rates("BTC/USDT", START_MS, START_MS + 30 * 86_400_000)
    assert [t for t, _ in listed] == times_in_first_chunk()
    assert all(r == rates.rate("BTC/USDT", t) for t, r in listed)
