"""Trend following: enter with the trend when price resumes above/below the fast EMA."""

from __future__ import annotations

from pydantic import Field, model_validator

from prod_core.domain import Bar, Position, Regime, Side
from prod_core.regime import Features
from prod_core.strategies.api import Exit, Signal, Strategy, StrategyParams
from prod_core.strategies.base import atr_entry


class TrendFollowingParams(StrategyParams):
    fast_bars: int = Field(20, ge=2, description="Fast EMA length (also the regime detector's).")
    slow_bars: int = Field(60, ge=3, description="Slow EMA length (also the regime detector's).")
    stop_atr: float = Field(2.0, gt=0, description="Stop distance in ATRs.")
    target_atr: float = Field(4.0, gt=0, description="Target distance in ATRs.")

    @model_validator(mode="after")
    def _fast_below_slow(self) -> "TrendFollowingParams":
        if self.fast_bars >= self.slow_bars:
            raise ValueError(f"fast_bars ({self.fast_bars}) must be below slow_bars ({self.slow_bars})")
        return self


class TrendFollowing(Strategy[TrendFollowingParams]):
    Params = TrendFollowingParams

    def on_bar(self, bar: Bar, f: Features | None, position: Position | None) -> Signal:
        if f is None:
            return None
        if position is not None:
            if (f.ema_fast < f.ema_slow) if position.side is Side.BUY else (f.ema_fast > f.ema_slow):
                return Exit("fast EMA crossed the slow EMA against the position")
            return None
        atr = f.atr
        if atr <= 0.0:
            return None
        close = bar.close
        p = self.params
        if f.regime is Regime.TREND_UP and f.ema_fast > f.ema_slow and bar.open < f.ema_fast < close:
            return atr_entry(bar, Side.BUY, atr, p.stop_atr, p.target_atr,
                             f"trend_up: close {close:.6g} crossed above fast EMA {f.ema_fast:.6g} "
                             f"> slow {f.ema_slow:.6g}")
        if self.can_short and f.regime is Regime.TREND_DOWN and f.ema_fast < f.ema_slow and bar.open > f.ema_fast > close:
            return atr_entry(bar, Side.SELL, atr, p.stop_atr, p.target_atr,
                             f"trend_down: close {close:.6g} crossed below fast EMA {f.ema_fast:.6g} "
                             f"< slow {f.ema_slow:.6g}")
        return None
