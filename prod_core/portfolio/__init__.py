"""Portfolio: exposure and position-count limits applied to sized plans. Pure.

``fit(decision, book, cfg)`` scales a risk-approved decision down to the room left under
gross, net and per-symbol exposure caps, or vetoes it (max positions, no room).
``PortfolioController`` watches the rolling return correlation of the universe and the
exposure of held positions and owns ``safe_mode`` (engaged on a breach, released with
hysteresis), which cuts risk and switches strategies to the safe-mode enable map.
"""

from prod_core.portfolio.controller import PortfolioController
from prod_core.portfolio.correlation import CorrelationMonitor, SafeModeSwitch
from prod_core.portfolio.limits import BookSnapshot, fit

__all__ = ["BookSnapshot", "CorrelationMonitor", "PortfolioController", "SafeModeSwitch", "fit"]
