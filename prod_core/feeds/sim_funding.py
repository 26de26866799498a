"""The simulated market's funding rate: a pure model plus a lazy ``FundingRates`` over a ``SimFeed``.

At a funding time T the rate of a symbol is, in basis points,
``clamp(base_bps + premium_weight * premium_bps + noise, +/- clamp_bps)``, where
``premium_bps = (last close before T / mean close over the interval before T - 1) * 10_000``
(bars with ``ts < T`` only, so nothing after T is seen) and the noise is
``N(0, noise_bps)`` from a generator keyed by (sim seed, symbol index, T): the same seed
gives the same rates whatever the order of the calls. Nothing runs per bar: a rate is
computed when asked, from the bars the sim has generated (its chunks are regenerated
from their saved start states when they have left the cache).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from prod_core.configs.symbols import FundingModelConfig
from prod_core.feeds.funding import funding_times

if TYPE_CHECKING:
    from prod_core.feeds.sim import SimFeed

_STREAM_FUNDING = 4
"""SeedSequence stream of the funding noise (the sim uses 1-3 for regimes, chunks, scenarios)."""


def premium_bps(last_close: float, mean_close: float) -> float:
    """How far the last close sits above (positive) or below the interval's mean close, bps."""
    if not (mean_close > 0 and math.isfinite(mean_close) and math.isfinite(last_close)):
        return 0.0
    return (last_close / mean_close - 1.0) * 10_000.0


def model_rate(premium: float, noise_z: float, model: FundingModelConfig) -> float:
    """The rate (a fraction: 0.0001 = 0.01%) for a premium in bps and a standard-normal draw."""
    bps = model.base_bps + model.premium_weight * premium + noise_z * model.noise_bps
    bps = min(model.clamp_bps, max(-model.clamp_bps, bps))
    return bps / 10_000.0


def rate_from_closes(closes: np.ndarray, noise_z: float, model: FundingModelConfig) -> float:
    """``model_rate`` for the closes of the interval before a funding time (oldest first).

    No close at all (the funding time precedes the sim's first bar) is a zero premium.
    """
    if closes.size == 0:
        return model_rate(0.0, noise_z, model)
    return model_rate(premium_bps(float(closes[-1]), float(np.mean(closes))), noise_z, model)


def noise_z(seed: int, symbol_index: int, funding_ts_ms: int) -> float:
    """The standard-normal draw of (seed, symbol, funding time): independent of any other call."""
    key = (_STREAM_FUNDING, int(symbol_index), int(funding_ts_ms) & 0xFFFF_FFFF_FFFF_FFFF)
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=key))
    return float(rng.standard_normal())


class SimFunding:
    """``FundingRates`` of a ``SimFeed`` (see module doc); None beyond the bars it has.

    ``interval_ms`` per symbol is the averaging window of the premium (the symbol's
    funding interval). A symbol the sim does not trade is None.
    """

    def __init__(self, feed: SimFeed, model: FundingModelConfig, interval_ms: dict[str, int]) -> None:
        self._feed = feed
        self._model = model
        self._index = {sym: i for i, sym in enumerate(feed.symbols)}
        self._interval_ms = dict(interval_ms)

    def rate(self, symbol: str, funding_ts_ms: int) -> float | None:
        s = self._index.get(symbol)
        if s is None:
            return None
        closes = self._feed.closes_before(s, int(funding_ts_ms), self._interval_ms[symbol])
        if closes is None:
            return None
        return rate_from_closes(closes, noise_z(self._feed.seed, s, funding_ts_ms), self._model)

    def rates(self, symbol: str, after_ms: int, upto_ms: int) -> list[tuple[int, float]]:
        """``(funding_ts_ms, rate)`` for the funding times in ``(after_ms, upto_ms]`` known so far."""
        if symbol not in self._index:
            return []
        out: list[tuple[int, float]] = []
        for t in funding_times(after_ms, upto_ms, self._interval_ms[symbol]):
            r = self.rate(symbol, t)
            if r is None:
                break
            out.append((t, r))
        return out
