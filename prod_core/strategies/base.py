"""Strategy protocol and construction from governance config."""

from __future__ import annotations

from typing import Protocol

from prod_core.configs.governance import StrategiesConfig
from prod_core.domain import Bar, Position, Regime, Side, TradePlan
from prod_core.regime import Features


class Strategy(Protocol):
    name: str

    def propose(self, f: Features, bar: Bar, can_short: bool) -> TradePlan | None: ...

    def should_exit(self, f: Features, position: Position) -> bool: ...


def atr_plan(
    strategy: str, bar: Bar, side: Side, atr: float, stop_atr: float, target_atr: float, reason: str, regime: Regime
) -> TradePlan | None:
    """A plan entering at the bar's close with stop/target ``stop_atr``/``target_atr`` ATRs away.

    None when the ATR is degenerate (a stop at or below zero, or lost in rounding).
    """
    close = bar.close
    sign = side.sign
    stop = close - sign * stop_atr * atr
    target = close + sign * target_atr * atr
    if not (0.0 < stop < close < target if sign > 0 else 0.0 < target < close < stop):
        return None
    return TradePlan(
        plan_id=f"{strategy}-{bar.symbol}-{bar.ts_ms}",
        ts_ms=bar.ts_ms,
        strategy=strategy,
        symbol=bar.symbol,
        side=side,
        entry=close,
        stop=stop,
        target=target,
        reason=reason,
        regime=regime,
    )


def build_strategies(cfg: StrategiesConfig) -> dict[str, Strategy]:
    from prod_core.strategies.mean_reversion import MeanReversion
    from prod_core.strategies.trend_following import TrendFollowing

    return {
        "trend_following": TrendFollowing(cfg.trend_following),
        "mean_reversion": MeanReversion(cfg.mean_reversion),
    }
