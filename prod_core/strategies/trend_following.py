"""Trend following: enter with the trend when price resumes above/below the fast EMA."""

from __future__ import annotations

from prod_core.configs.governance import TrendFollowingConfig
from prod_core.domain import Bar, Position, Regime, Side, TradePlan
from prod_core.regime import Features
from prod_core.strategies.base import atr_plan


class TrendFollowing:
    name = "trend_following"

    def __init__(self, cfg: TrendFollowingConfig) -> None:
        self.cfg = cfg

    def propose(self, f: Features, bar: Bar, can_short: bool) -> TradePlan | None:
        atr = f.atr
        if atr <= 0.0:
            return None
        close = bar.close
        cfg = self.cfg
        if f.regime is Regime.TREND_UP and f.ema_fast > f.ema_slow and bar.open < f.ema_fast < close:
            return atr_plan(self.name, bar, Side.BUY, atr, cfg.stop_atr, cfg.target_atr,
                            f"trend_up: close {close:.6g} crossed above fast EMA {f.ema_fast:.6g} "
                            f"> slow {f.ema_slow:.6g}", f.regime)
        if can_short and f.regime is Regime.TREND_DOWN and f.ema_fast < f.ema_slow and bar.open > f.ema_fast > close:
            return atr_plan(self.name, bar, Side.SELL, atr, cfg.stop_atr, cfg.target_atr,
                            f"trend_down: close {close:.6g} crossed below fast EMA {f.ema_fast:.6g} "
                            f"< slow {f.ema_slow:.6g}", f.regime)
        return None

    def should_exit(self, f: Features, position: Position) -> bool:
        if position.side is Side.BUY:
            return f.ema_fast < f.ema_slow
        return f.ema_fast > f.ema_slow
