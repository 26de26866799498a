"""Strategy protocol and construction from governance config."""

from __future__ import annotations

from typing import Protocol

from prod_core.configs.governance import StrategiesConfig
from prod_core.domain import Bar, Position, TradePlan
from prod_core.regime import Features


class Strategy(Protocol):
    name: str

    def propose(self, f: Features, bar: Bar, can_short: bool) -> TradePlan | None: ...

    def should_exit(self, f: Features, position: Position) -> bool: ...


def build_strategies(cfg: StrategiesConfig) -> dict[str, Strategy]:
    from prod_core.strategies.mean_reversion import MeanReversion
    from prod_core.strategies.trend_following import TrendFollowing

    return {
        "trend_following": TrendFollowing(cfg.trend_following),
        "mean_reversion": MeanReversion(cfg.mean_reversion),
    }
