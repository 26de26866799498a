"""Portfolio: exposure and position-count limits applied to sized plans. Pure.

``fit(decision, book, cfg)`` scales a risk-approved decision down to the room left under
gross, net and per-symbol exposure caps, or vetoes it (max positions, no room).
"""

from prod_core.portfolio.limits import BookSnapshot, fit

__all__ = ["BookSnapshot", "fit"]
