"""Mean reversion: fade stretched moves in a calm market back toward the mean."""

from __future__ import annotations

from pydantic import Field

from prod_core.domain import Bar, Position, Regime, Side
from prod_core.regime import Features
from prod_core.strategies.api import Exit, Signal, Strategy, StrategyParams
from prod_core.strategies.base import atr_entry


class MeanReversionParams(StrategyParams):
    lookback_bars: int = Field(40, ge=5, description="Bars in the mean/deviation estimate (the regime detector's z-score).")
    entry_z: float = Field(2.0, gt=0, description="Enter when price deviates this many sigmas.")
    stop_atr: float = Field(1.5, gt=0, description="Stop distance in ATRs beyond entry.")
    target_atr: float = Field(1.5, gt=0, description="Target distance in ATRs.")


class MeanReversion(Strategy[MeanReversionParams]):
    Params = MeanReversionParams

    def on_bar(self, bar: Bar, f: Features | None, position: Position | None) -> Signal:
        if f is None:
            return None
        if position is not None:
            return Exit("volatile regime") if f.regime is Regime.VOLATILE else None
        atr = f.atr
        if f.regime is not Regime.CALM or atr <= 0.0:
            return None
        z = f.zscore
        p = self.params
        if z <= -p.entry_z:
            return atr_entry(bar, Side.BUY, atr, p.stop_atr, p.target_atr, f"calm: z={z:.2f} <= -{p.entry_z}")
        if self.can_short and z >= p.entry_z:
            return atr_entry(bar, Side.SELL, atr, p.stop_atr, p.target_atr, f"calm: z={z:.2f} >= {p.entry_z}")
        return None
