"""Incremental regime detector.

Volatility regime: short EWMA variance of log returns (winsorised at ``vol_clip_z``
baseline sigmas, so single jumps do not count) against a slow baseline that tracks the
calm level (falls fast, rises slowly), with hysteresis. Trend regime: a
three-state Bayesian filter (flat / drifting up / drifting down by ``trend_drift``
standard deviations per bar, sticky transitions) over returns standardised by the short
EWMA volatility and clipped so that one jump cannot flip it. Both are O(1) per bar.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from prod_core.domain import Bar, Regime

_LN2 = math.log(2.0)


def _alpha(halflife_bars: float) -> float:
    return 1.0 - math.exp(-_LN2 / halflife_bars)


@dataclass(frozen=True, slots=True)
class RegimeParams:
    warmup_bars: int = 60
    drift_halflife: float = 40.0
    vol_halflife: float = 12.0
    base_rise_halflife: float = 1500.0
    base_fall_halflife: float = 60.0
    vol_enter: float = 2.0  # short vol / baseline vol to enter volatile
    vol_exit: float = 1.5
    trend_drift: float = 0.3  # drift of a trend, in standard deviations per bar
    switch_prob: float = 1.0 / 250.0  # prior probability per bar of leaving a drift state
    clip_z: float = 3.0  # standardised returns are clipped to +/- this
    vol_clip_z: float = 4.0  # after warm-up, returns are winsorised at this many baseline sigmas in the variances
    trend_enter_p: float = 0.6  # posterior probability of a drift state to enter a trend
    trend_exit_p: float = 0.3  # leave the trend when its posterior falls below this
    fast_bars: int = 20
    slow_bars: int = 60
    atr_bars: int = 14
    mr_bars: int = 40


class Features:
    """Per-symbol incremental state; attributes are read by strategies."""

    __slots__ = (
        "symbol",
        "n",
        "last_close",
        "mu",
        "var_long",
        "var_short",
        "var_base",
        "ema_fast",
        "ema_slow",
        "atr",
        "mr_mean",
        "mr_var",
        "regime",
        "p_flat",
        "p_up",
        "p_down",
    )

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.n = 0
        self.last_close = 0.0
        self.mu = 0.0
        self.var_long = 0.0
        self.var_short = 0.0
        self.var_base = 0.0
        self.ema_fast = 0.0
        self.ema_slow = 0.0
        self.atr = 0.0
        self.mr_mean = 0.0
        self.mr_var = 0.0
        self.regime = Regime.WARMUP
        self.p_flat = 1.0
        self.p_up = 0.0
        self.p_down = 0.0

    @property
    def vol_ratio(self) -> float:
        """Short-run volatility over the calm baseline."""
        return math.sqrt(self.var_short / self.var_base) if self.var_base > 0 else 0.0

    @property
    def drift_ratio(self) -> float:
        """EWMA mean return over its EWMA root mean square."""
        return self.mu / math.sqrt(self.var_long) if self.var_long > 0 else 0.0

    @property
    def zscore(self) -> float:
        """Distance of the last close from its EWMA mean, in EWMA standard deviations."""
        sd = math.sqrt(self.mr_var) if self.mr_var > 0 else 0.0
        return (self.last_close - self.mr_mean) / sd if sd > 0 else 0.0


class RegimeDetector:
    """Keeps ``Features`` per symbol; ``update`` returns them with the new regime."""

    def __init__(self, params: RegimeParams | None = None) -> None:
        p = params or RegimeParams()
        self.params = p
        self._a_mu = _alpha(p.drift_halflife)
        self._a_vs = _alpha(p.vol_halflife)
        self._a_up = _alpha(p.base_rise_halflife)
        self._a_dn = _alpha(p.base_fall_halflife)
        self._a_fast = 2.0 / (p.fast_bars + 1)
        self._a_slow = 2.0 / (p.slow_bars + 1)
        self._a_atr = 1.0 / p.atr_bars
        self._a_mr = 2.0 / (p.mr_bars + 1)
        self._stay = 1.0 - p.switch_prob
        self._move = p.switch_prob / 2.0
        self._half_d2 = 0.5 * p.trend_drift * p.trend_drift
        self._vol_enter2 = p.vol_enter * p.vol_enter
        self._vol_exit2 = p.vol_exit * p.vol_exit
        self._vol_clip2 = p.vol_clip_z * p.vol_clip_z
        self._warmup = p.warmup_bars
        self._clip_z = p.clip_z
        self._drift = p.trend_drift
        # exp(-dz - d^2/2) = exp(-d^2) / exp(dz - d^2/2): one exp per bar instead of two
        self._exp_d2 = math.exp(-2.0 * self._half_d2)
        self.features: dict[str, Features] = {}

    def get(self, symbol: str) -> Features:
        f = self.features.get(symbol)
        if f is None:
            f = self.features[symbol] = Features(symbol)
        return f

    def update(self, bar: Bar) -> Features:
        f = self.features.get(bar.symbol)
        if f is None:
            f = self.features[bar.symbol] = Features(bar.symbol)
        close = bar.close
        n = f.n
        if n == 0:
            f.n = 1
            f.last_close = close
            f.ema_fast = f.ema_slow = f.mr_mean = close
            f.atr = bar.high - bar.low
            return f
        prev = f.last_close
        r = math.log(close / prev)
        r2 = r * r
        warm = n >= self._warmup
        if warm:
            # Winsorise against the calm baseline so that one jump (news spike, bad tick
            # that passed hygiene) cannot flip the volatility regime: a 10-sigma return counts
            # as vol_clip_z sigmas. A sustained 3x volatility still lifts the short variance
            # well past vol_enter because most of its returns sit below the cap.
            cap = self._vol_clip2 * f.var_base
            if cap > 0.0 and r2 > cap:
                r2 = cap
        f.n = n + 1
        a_mu = self._a_mu
        f.mu += a_mu * (r - f.mu)
        f.var_long += a_mu * (r2 - f.var_long)
        vs = f.var_short + self._a_vs * (r2 - f.var_short)
        f.var_short = vs
        base = f.var_base
        if not warm:
            base = f.var_long  # warm-up: the baseline is the plain average level
        elif vs < base:
            base += self._a_dn * (vs - base)
        else:
            base += self._a_up * (vs - base)
        f.var_base = base
        f.ema_fast += self._a_fast * (close - f.ema_fast)
        f.ema_slow += self._a_slow * (close - f.ema_slow)
        high = bar.high
        low = bar.low
        f.atr += self._a_atr * ((high if high > prev else prev) - (low if low < prev else prev) - f.atr)
        a_mr = self._a_mr
        d = close - f.mr_mean
        f.mr_mean += a_mr * d
        f.mr_var = (1.0 - a_mr) * (f.mr_var + a_mr * d * d)
        f.last_close = close
        if vs > 0.0:
            # One forward step of the flat/up/down drift filter on the standardised return.
            z = r / math.sqrt(vs)
            clip = self._clip_z
            if z > clip:
                z = clip
            elif z < -clip:
                z = -clip
            stay = self._stay
            move = self._move
            flat = f.p_flat
            up = f.p_up
            down = f.p_down
            e_up = math.exp(self._drift * z - self._half_d2)
            q_flat = stay * flat + move * (up + down)
            q_up = (stay * up + move * (flat + down)) * e_up
            q_down = (stay * down + move * (flat + up)) * self._exp_d2 / e_up
            total = q_flat + q_up + q_down
            f.p_flat = q_flat / total
            f.p_up = q_up / total
            f.p_down = q_down / total
        if n + 1 < self._warmup or base <= 0.0:
            return f
        f.regime = self._classify(f, vs / base)
        return f

    def _classify(self, f: Features, ratio2: float) -> Regime:
        if f.regime is Regime.VOLATILE:
            if ratio2 > self._vol_exit2:
                return Regime.VOLATILE
        elif ratio2 > self._vol_enter2:
            return Regime.VOLATILE
        m = f
        p = self.params
        current = f.regime
        if current is Regime.TREND_UP and m.p_up > p.trend_exit_p:
            return Regime.TREND_UP
        if current is Regime.TREND_DOWN and m.p_down > p.trend_exit_p:
            return Regime.TREND_DOWN
        if m.p_up > p.trend_enter_p:
            return Regime.TREND_UP
        if m.p_down > p.trend_enter_p:
            return Regime.TREND_DOWN
        return Regime.CALM
