"""Rolling return correlation across the symbol universe and the safe-mode switch.

``CorrelationMonitor`` keeps EWMA means and covariances of per-symbol log returns sampled
once per timestamp (O(n^2) per timestamp, n = symbols) and reports the mean pairwise
correlation. Crypto majors are highly correlated most of the time, so safe mode does not
compare that number with an absolute threshold: ``SafeModeSwitch`` compares it with its own
slow baseline and engages on a jump above it (or on an exposure breach), releasing with
hysteresis after a minimum hold.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


class CorrelationMonitor:
    def __init__(self, symbols: Sequence[str], window_bars: int, baseline_bars: int, clip_sd: float = 3.0) -> None:
        self.clip_sd = clip_sd
        self.symbols = tuple(symbols)
        self.index = {s: i for i, s in enumerate(self.symbols)}
        n = len(self.symbols)
        self._a = 2.0 / (window_bars + 1.0)
        self._ab = 2.0 / (baseline_bars + 1.0)
        self._mean = [0.0] * n
        self._var = [0.0] * n
        self._pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
        self._cov = [0.0] * len(self._pairs)
        self._dev: list[float | None] = [None] * n
        self.samples = 0
        self.warmup = window_bars
        self.mean_corr = 0.0
        self.baseline = 0.0

    def update(self, returns: Sequence[float | None]) -> float:
        """Add one timestamp of returns (None where a symbol had no bar). Returns mean pairwise corr."""
        a = self._a
        keep = 1.0 - a
        mean = self._mean
        var = self._var
        dev = self._dev
        clip = self.clip_sd if self.samples > self.warmup else 0.0
        for i, r in enumerate(returns):
            if r is None:
                dev[i] = None
                continue
            d = r - mean[i]
            v = var[i]
            if clip and v > 0.0:
                # winsorise: one jump of the whole market must not read as a correlation regime
                lim = clip * math.sqrt(v)
                if d > lim:
                    d = lim
                elif d < -lim:
                    d = -lim
            mean[i] += a * d
            var[i] = keep * (v + a * d * d)
            dev[i] = d
        cov = self._cov
        sd = [math.sqrt(v) if v > 0.0 else 0.0 for v in var]
        total = 0.0
        pairs = 0
        for k, (i, j) in enumerate(self._pairs):
            di = dev[i]
            dj = dev[j]
            if di is not None and dj is not None:
                cov[k] = keep * (cov[k] + a * di * dj)
            s = sd[i] * sd[j]
            if s > 0.0:
                total += cov[k] / s
                pairs += 1
        self.samples += 1
        self.mean_corr = total / pairs if pairs else 0.0
        if self.samples <= self.warmup:
            self.baseline = self.mean_corr
        else:
            self.baseline += self._ab * (self.mean_corr - self.baseline)
        return self.mean_corr

    @property
    def ready(self) -> bool:
        return self.samples > self.warmup

    @property
    def excess(self) -> float:
        """Mean pairwise correlation above its own slow baseline."""
        return self.mean_corr - self.baseline


class SafeModeSwitch:
    """Hysteresis on correlation excess (and exposure breaches)."""

    def __init__(self, enter_excess: float, release_excess: float, min_hold_bars: int) -> None:
        self.enter_excess = enter_excess
        self.release_excess = release_excess
        self.min_hold_bars = min_hold_bars
        self.engaged = False
        self.held_bars = 0
        self.reason = ""

    def update(self, excess: float, ready: bool, exposure_breach: str = "") -> str | None:
        """Feed one timestamp. Returns 'engaged' or 'released' when the state flips, else None."""
        if self.engaged:
            self.held_bars += 1
            if exposure_breach:
                self.reason = exposure_breach
                return None
            if self.held_bars >= self.min_hold_bars and (not ready or excess < self.release_excess):
                self.engaged = False
                self.reason = ""
                return "released"
            return None
        if exposure_breach or (ready and excess > self.enter_excess):
            self.engaged = True
            self.held_bars = 0
            self.reason = exposure_breach or f"correlation {excess:+.2f} above baseline"
            return "engaged"
        return None
