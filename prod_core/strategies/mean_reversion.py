"""Mean reversion: fade stretched moves in a calm market back toward the mean."""

from __future__ import annotations

from prod_core.configs.governance import MeanReversionConfig
from prod_core.domain import Bar, Position, Regime, Side, TradePlan
from prod_core.regime import Features


class MeanReversion:
    name = "mean_reversion"

    def __init__(self, cfg: MeanReversionConfig) -> None:
        self.cfg = cfg

    def propose(self, f: Features, bar: Bar, can_short: bool) -> TradePlan | None:
        atr = f.atr
        if f.regime is not Regime.CALM or atr <= 0.0:
            return None
        z = f.zscore
        close = bar.close
        if z <= -self.cfg.entry_z:
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
                reason=f"calm: z={z:.2f} <= -{self.cfg.entry_z}",
                regime=f.regime,
            )
        if can_short and z >= self.cfg.entry_z:
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
                reason=f"calm: z={z:.2f} >= {self.cfg.entry_z}",
                regime=f.regime,
            )
        return None

    def should_exit(self, f: Features, position: Position) -> bool:
        return f.regime is Regime.VOLATILE
