"""Strategies: classes with validated parameters and one per-bar hook (``prod_core.strategies.api``).

A strategy never sizes, never reads the clock and never does IO: ``on_bar`` sees the bar, the
regime detector's features and its own position, and answers an ``Entry``, an ``Exit`` or None.
Which strategies run is governance.yaml's ``strategies`` (by built-in name, entry point of group
``crupto.strategies`` or ``module:Class``); which may enter in which regime is its ``enable_map``.
The built-in ones (trend following, mean reversion, the exact SMA crossover of the parity
scenario) are ordinary users of the same API.
"""

from prod_core.strategies.api import Entry, Exit, Signal, Strategy, StrategyParams
from prod_core.strategies.base import StrategyConfigError, StrategyKind, build_kinds, resolve
from prod_core.strategies.mean_reversion import MeanReversion, MeanReversionParams
from prod_core.strategies.sma_cross import SmaCross, SmaCrossParams
from prod_core.strategies.trend_following import TrendFollowing, TrendFollowingParams

__all__ = [
    "Entry",
    "Exit",
    "MeanReversion",
    "MeanReversionParams",
    "Signal",
    "SmaCross",
    "SmaCrossParams",
    "Strategy",
    "StrategyConfigError",
    "StrategyKind",
    "StrategyParams",
    "TrendFollowing",
    "TrendFollowingParams",
    "build_kinds",
    "resolve",
]
