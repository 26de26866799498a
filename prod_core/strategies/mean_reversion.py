"""Mean reversion: fade stretched moves in a calm market back toward the mean."""

from __future__ import annotations

from prod_core.configs.governance import MeanReversionConfig
from prod_core.domain import Bar, Position, Regime, Side, TradePlan
from prod_core.regime import Features
from prod_core.strategies.base import atr_plan


class MeanReversion:
    name = "mean_reversion"

    def __init__(self, cfg: MeanReversionConfig) -> None:
        self.cfg = cfg

    def propose(self, f: Features, bar: Bar, can_short: bool) -> TradePlan | None:
        atr = f.atr
        if f.regime is not Regime.CALM or atr <= 0.0:
            return None
        z = f.zscore
        cfg = self.cfg
        if z <= -cfg.entry_z:
            return atr_plan(self.name, bar, Side.BUY, atr, cfg.stop_atr, cfg.target_atr,
                            f"calm: z={z:.2f} <= -{cfg.entry_z}", f.regime)
        if can_short and z >= cfg.entry_z:
            return atr_plan(self.name, bar, Side.SELL, atr, cfg.stop_atr, cfg.target_atr,
                            f"calm: z={z:.2f} >= {cfg.entry_z}", f.regime)
        return None

    def should_exit(self, f: Features, position: Position) -> bool:
        return f.regime is Regime.VOLATILE
