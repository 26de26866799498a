"""SMA crossover decided exactly: the parity scenario's rule (docs/PARITY.md).

d = SMA(fast) - SMA(slow) of closes. Its sign is decided in integers: each close is taken as
an integer number of ticks of 10^-k (k grows to the most decimals seen, rescaling the sums,
which keeps every earlier value exact), and sign(d) = sign(slow * sum_fast - fast * sum_slow).
Floating-point sums get the sign of an exact zero wrong (d is exactly 0 on 56 bars of the
shared Bybit 5m set), and a wrong sign is a different trade.

d is first defined on the symbol's ``slow``-th bar; a signal needs the previous bar's d too:
d > 0 >= previous d while flat -> buy; d < 0 <= previous d while long -> exit. Long only
(``short: true`` mirrors it on instruments that can short).
"""

from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator

from prod_core.domain import Bar, Position, Side
from prod_core.regime import Features
from prod_core.strategies.api import Entry, Exit, Scan, Signal, Strategy, StrategyParams

MAX_DECIMALS = 15


class SmaCrossParams(StrategyParams):
    fast: int = Field(10, ge=1, description="Bars of the fast simple moving average.")
    slow: int = Field(30, ge=2, description="Bars of the slow simple moving average.")
    short: bool = Field(False, description="Also sell short on the mirrored signal (instruments that can short).")

    @model_validator(mode="after")
    def _fast_below_slow(self) -> "SmaCrossParams":
        if self.fast >= self.slow:
            raise ValueError(f"fast ({self.fast}) must be below slow ({self.slow})")
        return self


class SmaCross(Strategy[SmaCrossParams]):
    Params = SmaCrossParams
    uses_features = False

    def setup(self) -> None:
        p = self.params
        self._fast, self._slow = p.fast, p.slow
        self._ring = [0] * p.slow
        self._i = 0
        self._sum_fast = 0
        self._sum_slow = 0
        self._scale = 1
        self._decimals = 0
        self._prev = 0  # sign of the previous bar's d (2 = undefined)
        self._prev_defined = False
        self._short = p.short and self.can_short
        self._up_reason = f"SMA{p.fast} crossed above SMA{p.slow}"
        self._down_reason = f"SMA{p.fast} crossed below SMA{p.slow}"

    @property
    def warmup_bars(self) -> int:
        return self._slow

    def _ticks(self, price: float) -> int:
        scale = self._scale
        n = round(price * scale)
        while n / scale != price and self._decimals < MAX_DECIMALS:
            self._decimals += 1
            scale = self._scale = scale * 10
            self._ring = [v * 10 for v in self._ring]
            self._sum_fast *= 10
            self._sum_slow *= 10
            n = round(price * scale)
        return n

    def _update(self, close: float) -> int:
        """Take one close; the cross it makes: 1 = d > 0 >= previous d, -1 = d < 0 <= previous d, 0 = none."""
        n = self._ticks(close)
        i = self._i
        fast, slow, ring = self._fast, self._slow, self._ring
        slot = i % slow
        if i >= fast:
            self._sum_fast -= ring[(i - fast) % slow]
        if i >= slow:
            self._sum_slow -= ring[slot]
        ring[slot] = n
        self._sum_fast += n
        self._sum_slow += n
        self._i = i + 1
        if i + 1 < slow:
            return 0
        x = slow * self._sum_fast - fast * self._sum_slow
        d = (x > 0) - (x < 0)
        prev, defined = self._prev, self._prev_defined
        self._prev, self._prev_defined = d, True
        if not defined:
            return 0
        if d > 0 >= prev:
            return 1
        if d < 0 <= prev:
            return -1
        return 0

    def on_bar(self, bar: Bar, features: Features | None, position: Position | None) -> Signal:
        cross = self._update(bar.close)
        if not cross:
            return None
        if position is None:
            if cross > 0:
                return Entry(Side.BUY, self._up_reason)
            return Entry(Side.SELL, self._down_reason) if self._short else None
        if position.side is Side.BUY:
            return Exit(self._down_reason) if cross < 0 else None
        return Exit(self._up_reason) if cross > 0 else None

    def scan(self, ts_ms: np.ndarray, ohlcv: np.ndarray) -> Scan:
        """``on_bar`` over a run of bars at once, in exact integer arithmetic (numpy int64 where the
        sums provably fit, else bar by bar)."""
        closes = np.ascontiguousarray(ohlcv[:, 3])
        crosses = self._crosses_vectorised(closes)
        if crosses is None:
            crosses = np.fromiter((self._update(c) for c in closes.tolist()), dtype=np.int8, count=closes.shape[0])
        up, down = crosses > 0, crosses < 0
        entry = up.astype(np.int8)
        if self._short:
            entry -= down
        return Scan(entry, down, up, self._up_reason, self._down_reason, self._down_reason, self._up_reason)

    def _crosses_vectorised(self, closes: np.ndarray) -> np.ndarray | None:
        """The crosses of ``_update`` over ``closes`` with the state advanced, or None (state untouched)
        when the ticks need more than ``MAX_DECIMALS`` decimals or the int64 sums could overflow."""
        m = closes.shape[0]
        if m == 0:
            return np.zeros(0, dtype=np.int8)
        fast, slow = self._fast, self._slow
        decimals, scale = self._decimals, self._scale
        while True:
            scaled = closes * scale
            if not np.all(np.abs(scaled) < 2.0**52):
                return None
            exact = np.round(scaled) / scale == closes
            if exact.all():
                break
            if decimals >= MAX_DECIMALS:
                return None
            decimals += 1
            scale *= 10
        ticks = np.round(closes * scale).astype(np.int64)
        growth = scale // self._scale
        i0 = self._i
        held = min(i0, slow)
        hist = [self._ring[j % slow] * growth for j in range(i0 - held, i0)]
        top = max(max((abs(v) for v in hist), default=0), int(np.abs(ticks).max()))
        if top * (m + slow) * slow >= 1 << 62:
            return None
        if growth != 1:  # what _ticks does, bar by bar, when a close needs more decimals
            self._decimals, self._scale = decimals, scale
            self._ring = [v * growth for v in self._ring]
            self._sum_fast *= growth
            self._sum_slow *= growth
        seq = np.concatenate([np.array(hist, dtype=np.int64), ticks])
        cs = np.zeros(held + m + 1, dtype=np.int64)
        np.cumsum(seq, out=cs[1:])
        g = np.arange(i0, i0 + m, dtype=np.int64)  # each bar's index in the symbol's stream
        end = np.arange(held + 1, held + m + 1)  # cs index just past each bar
        sum_fast = cs[end] - cs[end - np.minimum(fast, g + 1)]
        sum_slow = cs[end] - cs[end - np.minimum(slow, g + 1)]
        x = slow * sum_fast - fast * sum_slow
        d = np.sign(x).astype(np.int8)
        prev = np.empty(m, dtype=np.int8)
        prev[0] = self._prev
        prev[1:] = d[:-1]
        valid = g >= slow  # d defined on this bar and on the previous one
        crosses = np.zeros(m, dtype=np.int8)
        crosses[valid & (d > 0) & (prev <= 0)] = 1
        crosses[valid & (d < 0) & (prev >= 0)] = -1
        # the state on_bar would have left
        ring = self._ring
        for j, v in zip(range(i0 + max(0, m - slow), i0 + m), seq[held + max(0, m - slow):].tolist()):
            ring[j % slow] = v
        n_all = i0 + m
        last = held + m
        self._sum_fast = int(cs[last] - cs[last - min(fast, n_all)])
        self._sum_slow = int(cs[last] - cs[last - min(slow, n_all)])
        self._i = n_all
        if n_all >= slow:
            self._prev, self._prev_defined = int(d[-1]), True
        return crosses
