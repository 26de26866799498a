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

from pydantic import Field, model_validator

from prod_core.domain import Bar, Position, Side
from prod_core.regime import Features
from prod_core.strategies.api import Entry, Exit, Signal, Strategy, StrategyParams

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

    def on_bar(self, bar: Bar, features: Features | None, position: Position | None) -> Signal:
        n = self._ticks(bar.close)
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
            return None
        x = slow * self._sum_fast - fast * self._sum_slow
        d = (x > 0) - (x < 0)
        prev, defined = self._prev, self._prev_defined
        self._prev, self._prev_defined = d, True
        if not defined:
            return None
        if position is None:
            if d > 0 >= prev:
                return Entry(Side.BUY, f"SMA{fast} crossed above SMA{slow}")
            if self._short and d < 0 <= prev:
                return Entry(Side.SELL, f"SMA{fast} crossed below SMA{slow}")
            return None
        if position.side is Side.BUY:
            return Exit(f"SMA{fast} crossed below SMA{slow}") if d < 0 <= prev else None
        return Exit(f"SMA{fast} crossed above SMA{slow}") if d > 0 >= prev else None
