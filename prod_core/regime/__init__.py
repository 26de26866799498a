"""Regime detection: incremental per-symbol trend/volatility features and a regime label.

``RegimeDetector.update(bar)`` is O(1) per bar and returns the symbol's ``Features``
(shared with the strategies so indicators are computed once) with its ``Regime``
code (0 warmup, 1 calm, 2 trend_up, 3 trend_down, 4 volatile). Pure: no IO, no clock.
"""

from prod_core.regime.detector import Features, RegimeDetector, RegimeParams

__all__ = ["Features", "RegimeDetector", "RegimeParams"]
