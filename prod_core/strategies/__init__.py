"""Strategies: pure functions of a symbol's features that propose TradePlans.

A strategy never sizes, never reads the clock and never does IO: ``propose`` returns a
``TradePlan`` (entry, stop, target, reason) or None; ``should_exit`` says whether an
open position it owns should be closed at the next bar. Which strategies may propose
in which regime is governance's ``enable_map``.
"""

from prod_core.strategies.base import Strategy, build_strategies
from prod_core.strategies.mean_reversion import MeanReversion
from prod_core.strategies.trend_following import TrendFollowing

__all__ = ["MeanReversion", "Strategy", "TrendFollowing", "build_strategies"]
