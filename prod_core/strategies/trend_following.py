"""Trend following: enter with the trend when price resumes above/below the fast EMA."""

from __future__ import annotations

from prod_core.configs.governance import TrendFollowingConfig
from prod_core.domain import Bar, Position, Regime, Side, TradePlan
from prod_core.regime import Features


class TrendFollowing:
    name = "trend_following"

    def __init__(self, cfg: TrendFollowingConfig) -> None:
        self.cfg = cfg

    def propose(self, f: Features, bar: Bar, can_short: bool) -> TradePlan | None:
        atr = f.atr
        if atr <= 0.0:
            return None
        close = bar.close
        if f.regime is Regime.TREND_UP and f.ema_fast > f.ema_slow and bar.open < f.ema_fast < close:
            stop, target = close - self.cfg.stop_atr * atr, close + self.cfg.target_atr * atr
            if not 0.0 < stop < close < target:
                return None  # degenerate ATR (stop at or below zero, or lost in rounding): no plan
            return TradePlan(
                plan_id=f"{self.name}-{bar.symbol}-{bar.ts_ms}",
                ts_ms=bar.ts_ms,
                strategy=self.name,
                symbol=bar.symbol,
                side=Side.BUY,
                entry=close,
                stop=stop,
                target=target,
                reason=f"trend_up: close {close:.6g} crossed above fast EMA {f.ema_fast:.6g} > slow {f.ema_slow:.6g}",
                regime=f.regime,
            )
        if (
            can_short
            and f.regime is Regime.TREND_DOWN
            and f.ema_fast < f.ema_slow
            and bar.open > f.ema_fast > close
        ):
            stop, target = close + self.cfg.stop_atr * atr, close - self.cfg.target_atr * atr
            if not 0.0 < target < close < stop:
                return None
            return TradePlan(
                plan_id=f"{self.name}-{bar.symbol}-{bar.ts_ms}",
                ts_ms=bar.ts_ms,
                strategy=self.name,
                symbol=bar.symbol,
                side=Side.SELL,
                entry=close,
                stop=stop,
                target=target,
                reason=f"trend_down: close {close:.6g} crossed below fast EMA {f.ema_fast:.6g} < slow {f.ema_slow:.6g}",
                regime=f.regime,
            )
        return None

    def should_exit(self, f: Features, position: Position) -> bool:
        if position.side is Side.BUY:
            return f.ema_fast < f.ema_slow
        return f.ema_fast > f.ema_slow
