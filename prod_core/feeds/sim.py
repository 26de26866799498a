"""Deterministic simulated market for several correlated symbols (the embedded default feed).

A market factor runs through Markov regime segments (calm, trend up, trend down,
volatile; 200-600 bars each, starting calm) that set every symbol's volatility, drift,
jump rate and volume; symbol log-returns load on the factor with a slowly drifting
correlation (a slow OU process mapped into roughly 0.45-0.75, like crypto majors) plus idiosyncratic noise and
rare Poisson jumps, and OHLCV bars are built from them with open = previous close.
Bars are generated in fixed chunks of ``CHUNK_BARS`` timestamps, each from its own
``numpy.random.default_rng`` stream keyed by (seed, chunk), with only the price level
and correlation state carried across chunks, so the same seed and config give identical
bars however they are requested (``generate``, ``iter_bars`` or paced ``poll``) and an
endless run keeps only a few chunks in memory. Optional stress scenarios (``crash``,
``corr_spike``, ``feed_outage``) act on a window of live bars; the ground-truth regime
label of every bar is available through ``regime_at`` and ``SimBatch.regime``.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import repeat

import numpy as np

from prod_core.configs.symbols import SimConfig, SymbolConfig
from prod_core.domain import Bar, Regime, timeframe_to_ms
from prod_core.feeds.base import FeedHealth
from prod_core.feeds.sim_funding import SimFunding

CHUNK_BARS = 4096
"""Timestamps per internal generation chunk (part of the determinism contract)."""
UNPACED_POLL_BARS = 1024
"""Timestamps returned by one unpaced ``poll`` after the history."""
_CACHE_CHUNKS = 4

# Regime parameters indexed by Regime code (index 0, WARMUP, is never generated).
# Trend drift is 0.4 sigma per bar and segments last 200-600 bars: a causal per-symbol
# detector needs on the order of 2/d^2 bars of evidence to recognise a drift of d sigmas,
# so weaker or shorter trends would be mostly detection lag (at 0.3 sigma and 150-400
# bars the shipped detector agreed ~78% with the labels; here ~84%).
_VOL_MULT = np.array([1.0, 1.0, 1.1, 1.1, 3.0])
_DRIFT_SIGMA = np.array([0.0, 0.0, 0.4, -0.4, 0.0])
_VOLUME_MULT = np.array([1.0, 1.0, 1.3, 1.3, 2.5])
_JUMP_P = np.array([0.001, 0.001, 0.001, 0.001, 0.005])  # per bar, market and each symbol
_MARKOV_REGIMES = (Regime.CALM, Regime.TREND_UP, Regime.TREND_DOWN, Regime.VOLATILE)
_SEGMENT_MIN_BARS, _SEGMENT_MAX_BARS = 200, 600
_TREND_BALANCE_SIGMAS = 150.0  # scale of the pull of trend direction towards zero net drift

_RHO_MEAN, _RHO_AMP, _RHO_HALF_LIFE_BARS = 0.6, 0.15, 2000.0
_RHO_SPIKE = 0.95
_INTRABAR_RANGE = 0.6  # mean high/low excursion beyond the body, in current sigmas
_VOLUME_NOISE = 0.35  # lognormal volume noise
_CRASH_BARS = 20
_CRASH_DROP = (0.25, 0.32)  # total fall of each symbol over the crash bars
_MIN_STALE_S = 1.0

_STREAM_REGIMES, _STREAM_CHUNK, _STREAM_SCENARIO = 1, 2, 3


@dataclass(frozen=True)
class SimBatch:
    """Arrays for a run of consecutive timestamps: prices are ``[n_symbols, n]``."""

    symbols: tuple[str, ...]
    ts_ms: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    regime: np.ndarray

    def digest(self) -> str:
        """SHA-256 hex over symbols and every array: identical bars give identical hashes."""
        h = hashlib.sha256("\x1f".join(self.symbols).encode())
        for arr in (self.ts_ms, self.open, self.high, self.low, self.close, self.volume, self.regime):
            h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()


@dataclass(frozen=True)
class _State:
    """What one chunk hands to the next: log price, last close, correlation latent."""

    logp: np.ndarray
    close: np.ndarray
    ou_x: float


class _Chunk:
    """One generated chunk; list views are built lazily for the paced hot path."""

    __slots__ = ("ts_ms", "open", "high", "low", "close", "volume", "regime", "_lists")

    def __init__(self, ts_ms: np.ndarray, ohlcv: tuple[np.ndarray, ...], regime: np.ndarray) -> None:
        self.ts_ms = ts_ms
        self.open, self.high, self.low, self.close, self.volume = ohlcv
        self.regime = regime
        self._lists: tuple[list[int], list[tuple[list[float], ...]]] | None = None

    def lists(self) -> tuple[list[int], list[tuple[list[float], ...]]]:
        if self._lists is None:
            self._lists = _to_lists(self)
        return self._lists


def _to_lists(ch: _Chunk) -> tuple[list[int], list[tuple[list[float], ...]]]:
    cols = [
        (ch.open[s].tolist(), ch.high[s].tolist(), ch.low[s].tolist(), ch.close[s].tolist(), ch.volume[s].tolist())
        for s in range(ch.open.shape[0])
    ]
    return ch.ts_ms.tolist(), cols


def _bars_from_lists(
    symbols: tuple[str, ...], lists: tuple[list[int], list[tuple[list[float], ...]]], j0: int, j1: int
) -> list[Bar]:
    """Bars for rows ``j0..j1-1`` in time order, one per symbol per timestamp."""
    ts, cols = lists
    ts_part = ts[j0:j1]
    per_symbol = [
        list(map(Bar, repeat(sym), ts_part, o[j0:j1], h[j0:j1], lo[j0:j1], c[j0:j1], v[j0:j1]))
        for sym, (o, h, lo, c, v) in zip(symbols, cols)
    ]
    if len(per_symbol) == 1:
        return per_symbol[0]
    n_sym = len(per_symbol)
    out: list[Bar] = [None] * (len(ts_part) * n_sym)  # type: ignore[list-item]
    for s, bars in enumerate(per_symbol):
        out[s::n_sym] = bars
    return out


def _jump_sizes(rng: np.random.Generator, shape: int | tuple[int, ...]) -> np.ndarray:
    """Signed jump sizes of 4 sigmas plus an exponential tail (mean about 6 sigmas)."""
    sign = np.where(rng.random(shape) < 0.5, -1.0, 1.0)
    return sign * (4.0 + rng.standard_exponential(shape) * 2.0)


def _ou_path(x0: float, shocks: np.ndarray) -> tuple[np.ndarray, float]:
    """AR(1)/OU latent with unit stationary variance; returns the path and its last value."""
    a = math.exp(-math.log(2.0) / _RHO_HALF_LIFE_BARS)
    b = math.sqrt(1.0 - a * a)
    out = [0.0] * len(shocks)
    x = x0
    for k, e in enumerate(shocks.tolist()):
        x = a * x + b * e
        out[k] = x
    return np.array(out), x


class SimFeed:
    """Simulated correlated multi-symbol market implementing the ``Feed`` protocol.

    Pure API (``generate``, ``iter_bars``, ``regime_at``) ignores wall time and
    scenarios that only affect delivery (``feed_outage``). Paced mode delivers the
    history on the first ``poll`` after ``start`` and live bar k at
    ``t0 + (k + 1) * bar_interval_s``; unpaced mode returns bars as fast as polled.
    """

    def __init__(
        self,
        symbols: Sequence[SymbolConfig],
        sim: SimConfig,
        *,
        start_ms: int,
        paced: bool = True,
        bar_interval_s: float | None = None,
        name: str = "sim",
    ) -> None:
        if not symbols:
            raise ValueError("SimFeed needs at least one symbol")
        names = tuple(s.symbol for s in symbols)
        if len(set(names)) != len(names):
            raise ValueError(f"SimFeed symbols must be unique, were {names}")
        interval = sim.bar_interval_s if bar_interval_s is None else float(bar_interval_s)
        if not (interval > 0 and math.isfinite(interval)):
            raise ValueError(f"bar_interval_s must be positive, was {bar_interval_s!r}")
        self.name = name
        self.symbols = names
        self._sim = sim
        self._seed = sim.seed
        self._paced = paced
        self._interval_s = interval
        self._start_ms = int(start_ms)
        self._tf_ms = timeframe_to_ms(sim.timeframe)
        self._history = sim.history_bars
        self._funding_interval_ms = {s.symbol: int(s.funding_interval_h * 3_600_000) for s in symbols}
        self.live_from_ms = self._start_ms + self._history * self._tf_ms
        self._sigma = np.array([s.sim.vol_bps / 1e4 for s in symbols])[:, None]
        self._beta = np.array([s.sim.beta for s in symbols])[:, None]
        start_price = np.array([s.sim.start_price for s in symbols])
        self._start_price = start_price[:, None]
        self._volume_base = (2e6 / start_price)[:, None]  # about $2M per calm bar
        self._window = self._scenario_window()
        self._crash_path = self._make_crash_path()
        self._init_schedule()
        self._states: list[_State] = [_State(np.zeros(len(names)), start_price.copy(), 0.0)]
        self._cache: OrderedDict[int, _Chunk] = OrderedDict()
        self._aside: tuple[int, _Chunk] | None = None  # an old chunk rebuilt for funding, outside the cache
        self._chunks_made = 0  # chunks 0.._chunks_made-1 have been generated at least once
        self._reset_session()

    # ------------------------------------------------------------------ scenarios
    def _scenario_window(self) -> tuple[int, int] | None:
        if self._sim.scenario is None:
            return None
        w0 = self._history + self._sim.scenario_start_bar
        return w0, w0 + self._sim.scenario_bars

    def _in_window(self, scenario: str) -> tuple[int, int] | None:
        return self._window if self._sim.scenario == scenario else None

    def _make_crash_path(self) -> np.ndarray:
        """Per-symbol extra log-returns for the first crash bars (uneven: jump-like)."""
        rng = np.random.default_rng(np.random.SeedSequence(self._seed, spawn_key=(_STREAM_SCENARIO,)))
        n_bars = min(_CRASH_BARS, self._sim.scenario_bars)
        n_sym = len(self.symbols)
        drop = np.log1p(-rng.uniform(*_CRASH_DROP, size=n_sym))
        weights = rng.standard_exponential((n_sym, n_bars)) + 0.1
        weights /= weights.sum(axis=1, keepdims=True)
        return drop[:, None] * weights

    # ------------------------------------------------------------------ regimes
    def _init_schedule(self) -> None:
        self._regime_rng = np.random.default_rng(np.random.SeedSequence(self._seed, spawn_key=(_STREAM_REGIMES,)))
        self._seg_starts: list[int] = [0]
        self._seg_regimes: list[int] = [int(Regime.CALM)]
        self._seg_end = self._segment_length()
        self._trend_drift = 0.0  # cumulative scheduled drift, sigmas, up to _seg_end

    def _segment_length(self) -> int:
        return int(self._regime_rng.integers(_SEGMENT_MIN_BARS, _SEGMENT_MAX_BARS + 1))

    def _extend_schedule(self, upto: int) -> None:
        """Draw Markov segments until the schedule covers index ``upto``."""
        while self._seg_end <= upto:
            current = self._seg_regimes[-1]
            choices = [r for r in _MARKOV_REGIMES if int(r) != current]
            weights = np.array([self._transition_weight(r) for r in choices])
            nxt = int(choices[int(self._regime_rng.choice(len(choices), p=weights / weights.sum()))])
            length = self._segment_length()
            self._seg_starts.append(self._seg_end)
            self._seg_regimes.append(nxt)
            self._seg_end += length
            self._trend_drift += float(_DRIFT_SIGMA[nxt]) * length

    def _transition_weight(self, regime: Regime) -> float:
        """Uniform, except trend direction leans against the cumulative scheduled drift.

        This keeps price levels mean-reverting over very long runs (no 1000x drifts
        over a million bars) while the schedule stays independent of the prices.
        """
        p_up = 1.0 / (1.0 + math.exp(max(-50.0, min(50.0, self._trend_drift / _TREND_BALANCE_SIGMAS))))
        if regime is Regime.TREND_UP:
            return 2.0 * p_up
        if regime is Regime.TREND_DOWN:
            return 2.0 * (1.0 - p_up)
        return 1.0

    def _labels(self, i0: int, n: int) -> np.ndarray:
        """Ground-truth regime codes for indices ``i0..i0+n-1`` (crash window is VOLATILE)."""
        self._extend_schedule(i0 + n)
        out = np.empty(n, dtype=np.int8)
        k = bisect.bisect_right(self._seg_starts, i0) - 1
        pos = i0
        while pos < i0 + n:
            seg_end = self._seg_starts[k + 1] if k + 1 < len(self._seg_starts) else self._seg_end
            end = min(seg_end, i0 + n)
            out[pos - i0 : end - i0] = self._seg_regimes[k]
            pos, k = end, k + 1
        crash = self._in_window("crash")
        if crash is not None:
            lo, hi = max(crash[0], i0), min(crash[1], i0 + n)
            if lo < hi:
                out[lo - i0 : hi - i0] = int(Regime.VOLATILE)
        return out

    def regime_at(self, bar_index: int) -> Regime:
        """Ground-truth market-wide regime of bar index ``bar_index``."""
        if bar_index < 0:
            raise ValueError(f"bar_index must be >= 0, was {bar_index}")
        return Regime(int(self._labels(bar_index, 1)[0]))

    # ------------------------------------------------------------------ generation
    def _window_slice(self, scenario: str, i0: int, n: int) -> tuple[int, int, int] | None:
        """(chunk-local start, end, window offset) of a scenario window inside a chunk."""
        window = self._in_window(scenario)
        if window is None:
            return None
        lo, hi = max(window[0], i0), min(window[1], i0 + n)
        return (lo - i0, hi - i0, lo - window[0]) if lo < hi else None

    def _make_chunk(self, c: int, state: _State) -> tuple[_Chunk, _State]:
        n, i0 = CHUNK_BARS, c * CHUNK_BARS
        rng = np.random.default_rng(np.random.SeedSequence(self._seed, spawn_key=(_STREAM_CHUNK, c)))
        labels = self._labels(i0, n)
        returns, ou_end = self._returns(rng, state.ou_x, labels, i0)
        ohlcv = self._ohlcv(rng, state, returns, labels)
        ts = self._start_ms + np.arange(i0, i0 + n, dtype=np.int64) * self._tf_ms
        close = ohlcv[3]
        next_state = _State(state.logp + returns.sum(axis=1), close[:, -1].copy(), ou_end)
        return _Chunk(ts, ohlcv, labels), next_state

    def _rho(self, x0: float, shocks: np.ndarray, i0: int) -> tuple[np.ndarray, float]:
        x, x_end = _ou_path(x0, shocks)
        rho = _RHO_MEAN + _RHO_AMP * np.tanh(x)
        spike = self._window_slice("corr_spike", i0, len(shocks))
        if spike is not None:
            rho[spike[0] : spike[1]] = _RHO_SPIKE
        return rho, x_end

    def _returns(self, rng: np.random.Generator, ou_x: float, labels: np.ndarray, i0: int) -> tuple[np.ndarray, float]:
        """Log-returns ``[n_symbols, n]``; every draw happens whatever the scenario."""
        n, n_sym = len(labels), len(self.symbols)
        market = rng.standard_normal(n)
        idio = rng.standard_normal((n_sym, n))
        rho, ou_end = self._rho(ou_x, rng.standard_normal(n), i0)
        p_jump = _JUMP_P[labels]
        market_jump = np.where(rng.random(n) < p_jump, _jump_sizes(rng, n), 0.0)
        idio_jump = np.where(rng.random((n_sym, n)) < p_jump, _jump_sizes(rng, (n_sym, n)), 0.0)
        spike = self._window_slice("corr_spike", i0, n)
        if spike is not None:
            idio_jump[:, spike[0] : spike[1]] = 0.0
        beta = self._beta
        # Normalised so a symbol's calm volatility is vol_bps whatever beta and rho are.
        norm = 1.0 / np.sqrt(beta * beta * rho + (1.0 - rho))
        shock = norm * (beta * np.sqrt(rho) * market + np.sqrt(1.0 - rho) * idio)
        shock += beta * market_jump + idio_jump
        returns = self._sigma * (_VOL_MULT[labels] * shock + _DRIFT_SIGMA[labels])
        crash = self._window_slice("crash", i0, n)
        if crash is not None and crash[2] < self._crash_path.shape[1]:
            k_end = min(crash[1] - crash[0], self._crash_path.shape[1] - crash[2])
            returns[:, crash[0] : crash[0] + k_end] += self._crash_path[:, crash[2] : crash[2] + k_end]
        return returns, ou_end

    def _ohlcv(
        self, rng: np.random.Generator, state: _State, returns: np.ndarray, labels: np.ndarray
    ) -> tuple[np.ndarray, ...]:
        logp = state.logp[:, None] + np.cumsum(returns, axis=1)
        close = self._start_price * np.exp(logp)
        open_ = np.concatenate([state.close[:, None], close[:, :-1]], axis=1)
        cur_sigma = self._sigma * _VOL_MULT[labels]
        up = rng.standard_exponential(returns.shape) * _INTRABAR_RANGE * cur_sigma
        down = rng.standard_exponential(returns.shape) * _INTRABAR_RANGE * cur_sigma
        high = np.maximum(open_, close) * np.exp(up)
        low = np.minimum(open_, close) * np.exp(-down)
        noise = np.exp(_VOLUME_NOISE * rng.standard_normal(returns.shape) - 0.5 * _VOLUME_NOISE**2)
        activity = 1.0 + 0.3 * np.minimum(np.abs(returns) / cur_sigma, 10.0)
        volume = self._volume_base * _VOLUME_MULT[labels] * noise * activity
        return open_, high, low, close, volume

    def _chunk(self, c: int) -> _Chunk:
        """Chunk ``c`` from the LRU cache, generating it (and any missing predecessors)."""
        cached = self._cache.get(c)
        if cached is not None:
            self._cache.move_to_end(c)
            return cached
        while len(self._states) <= c:
            j = len(self._states) - 1
            chunk, nxt = self._make_chunk(j, self._states[j])
            self._states.append(nxt)
            self._remember(j, chunk)
        if c in self._cache:
            return self._cache[c]
        chunk, _ = self._make_chunk(c, self._states[c])
        self._remember(c, chunk)
        return chunk

    def _remember(self, c: int, chunk: _Chunk) -> None:
        self._chunks_made = max(self._chunks_made, c + 1)
        self._cache[c] = chunk
        self._cache.move_to_end(c)
        while len(self._cache) > _CACHE_CHUNKS:
            self._cache.popitem(last=False)

    # ------------------------------------------------------------------ pure API
    def generate(self, n_bars: int) -> SimBatch:
        """Arrays for the first ``n_bars`` timestamps of every symbol."""
        if n_bars < 0:
            raise ValueError(f"n_bars must be >= 0, was {n_bars}")
        n_chunks = -(-n_bars // CHUNK_BARS)
        chunks = [self._chunk(c) for c in range(n_chunks)]

        def cat(attr: str, axis: int) -> np.ndarray:
            parts = [getattr(ch, attr) for ch in chunks]
            if not parts:
                return np.empty((len(self.symbols), 0) if axis else 0)
            return np.concatenate(parts, axis=axis)[..., :n_bars]

        return SimBatch(
            symbols=self.symbols,
            ts_ms=cat("ts_ms", 0).astype(np.int64),
            open=cat("open", 1),
            high=cat("high", 1),
            low=cat("low", 1),
            close=cat("close", 1),
            volume=cat("volume", 1),
            regime=cat("regime", 0).astype(np.int8),
        )

    def iter_bars(self, n_bars: int | None = None) -> Iterator[Bar]:
        """Unpaced bars in time order, one per symbol per timestamp; ``None`` is endless."""
        c = 0
        while n_bars is None or c * CHUNK_BARS < n_bars:
            rows = CHUNK_BARS if n_bars is None else min(CHUNK_BARS, n_bars - c * CHUNK_BARS)
            chunk = self._chunk(c)
            lists = chunk._lists or _to_lists(chunk)
            yield from _bars_from_lists(self.symbols, lists, 0, rows)
            c += 1

    def _bars(self, a: int, b: int) -> list[Bar]:
        """Bars of indices ``a..b-1`` (no scenario filtering)."""
        out: list[Bar] = []
        while a < b:
            c = a // CHUNK_BARS
            c0 = c * CHUNK_BARS
            end = min(b, c0 + CHUNK_BARS)
            out.extend(_bars_from_lists(self.symbols, self._chunk(c).lists(), a - c0, end - c0))
            a = end
        return out

    # ------------------------------------------------------------------ funding
    @property
    def seed(self) -> int:
        return self._seed

    def funding_rates(self) -> SimFunding:
        """The sim market's funding rates (model ``SimConfig.funding``; see ``sim_funding``)."""
        return SimFunding(self, self._sim.funding, self._funding_interval_ms)

    def _known_end(self) -> int:
        """Exclusive bar index bound of what the sim has produced: the bars delivered in a
        session, else (pure API) the chunks generated so far."""
        if self._started:
            return self._next
        return self._chunks_made * CHUNK_BARS

    def closes_before(self, symbol_index: int, ts_ms: int, window_ms: int) -> np.ndarray | None:
        """Closes of symbol ``symbol_index`` for the bars with ``ts_ms - window_ms <= ts < ts_ms``
        (oldest first, empty before the first bar); None when the sim has not reached ``ts_ms``
        (the bar just before it is not produced yet). Generates nothing new."""
        tf, start = self._tf_ms, self._start_ms
        end = max(0, -(-(ts_ms - start) // tf))  # first index with ts >= ts_ms
        begin = max(0, -(-(ts_ms - window_ms - start) // tf))
        if end > self._known_end():
            return None
        parts = []
        a = begin
        while a < end:
            c = a // CHUNK_BARS
            c0 = c * CHUNK_BARS
            b = min(end, c0 + CHUNK_BARS)
            chunk = self._cache.get(c)
            if chunk is None:  # left the cache: rebuild it from its saved start state, aside
                if self._aside is None or self._aside[0] != c:
                    self._aside = (c, self._make_chunk(c, self._states[c])[0])
                chunk = self._aside[1]
            parts.append(chunk.close[symbol_index, a - c0 : b - c0])
            a = b
        return np.concatenate(parts) if parts else np.empty(0)

    # ------------------------------------------------------------------ Feed protocol
    def _reset_session(self) -> None:
        self._started = False
        self._stopped = False
        self._t0 = 0.0
        self._last_now = 0.0
        self._next = 0
        self._last_arrival_s = 0.0
        self.last_bar_index = -1

    @property
    def exhausted(self) -> bool:
        """A simulated market never ends."""
        return False

    def start(self, now_s: float) -> None:
        """Begin a fresh session at wall time ``now_s`` (history is due at once).

        Starting again after ``stop`` replays from bar 0 with a new ``t0``.
        """
        self._reset_session()
        self._started = True
        self._t0 = self._last_now = self._last_arrival_s = float(now_s)

    def stop(self) -> None:
        self._stopped = True

    def restart(self) -> None:
        """`cli restart-feed`: re-anchor the pacing at the last poll; the price path goes on
        where it was (no bar lost or repeated), the next bar is one interval away."""
        if not self._active() or not self._paced:
            return
        live_done = max(0, self._next - self._history)
        self._t0 = self._last_now - live_done * self._interval_s
        self._last_arrival_s = self._last_now

    def _active(self) -> bool:
        return self._started and not self._stopped

    def _live_due(self, now_s: float) -> int:
        """Number of live bars whose due time ``t0 + (k+1)*interval`` is <= ``now_s``."""
        t0, iv = self._t0, self._interval_s
        if now_s < t0 + iv:
            return 0
        n = int((now_s - t0) / iv)
        while t0 + (n + 1) * iv <= now_s:
            n += 1
        while n > 0 and t0 + n * iv > now_s:
            n -= 1
        return n

    def _due_end(self, now_s: float) -> int:
        """Exclusive index bound of the bars due by ``now_s``."""
        if self._paced:
            return self._history + self._live_due(now_s)
        if self._next < self._history:
            return self._history
        outage = self._in_window("feed_outage")
        if outage is not None and outage[0] <= self._next < outage[1]:
            self._next = outage[1]
        return self._next + UNPACED_POLL_BARS

    def _due_time(self, index: int) -> float:
        if index < self._history:
            return self._t0
        return self._t0 + (index - self._history + 1) * self._interval_s

    def poll(self, now_s: float) -> list[Bar]:
        """All bars due by ``now_s`` not yet returned, in time order (none before start)."""
        if not self._active():
            return []
        self._last_now = float(now_s)
        end = self._due_end(now_s)
        if end <= self._next:
            return []
        ranges = [(self._next, end)]
        outage = self._in_window("feed_outage")
        if outage is not None:
            ranges = [(self._next, min(end, outage[0])), (max(self._next, outage[1]), end)]
        self._next = end
        bars: list[Bar] = []
        for a, b in ranges:
            if a < b:
                bars.extend(self._bars(a, b))
                self.last_bar_index = b - 1
                self._last_arrival_s = self._due_time(b - 1)
        return bars

    def next_due_s(self) -> float | None:
        """Wall time of the next scheduled bar (nominal schedule, also during an outage)."""
        if not self._active():
            return None
        if not self._paced:
            return self._last_now
        return self._due_time(self._next)

    def health(self, now_s: float) -> int:
        """1 healthy, 0 when no bar arrived for over 3 intervals (min 1 s), -1 paused.

        Unpaced mode has no wall-clock schedule and is always healthy while started.
        """
        if not self._active():
            return int(FeedHealth.PAUSED)
        if not self._paced:
            return int(FeedHealth.HEALTHY)
        stale_after = max(3.0 * self._interval_s, _MIN_STALE_S)
        if now_s - self._last_arrival_s > stale_after:
            return int(FeedHealth.DEGRADED)
        return int(FeedHealth.HEALTHY)
