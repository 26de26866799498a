"""PortfolioController: correlation and exposure watch that drives safe mode."""

from __future__ import annotations

from collections.abc import Sequence

from prod_core.configs.governance import PortfolioConfig
from prod_core.portfolio.correlation import CorrelationMonitor, SafeModeSwitch


class PortfolioController:
    """Owns ``safe_mode``. Fed once per timestamp with the symbols' log returns."""

    def __init__(self, symbols: Sequence[str], cfg: PortfolioConfig) -> None:
        self.cfg = cfg
        self.monitor = CorrelationMonitor(symbols, cfg.correlation_window_bars, cfg.correlation_baseline_bars)
        self.switch = SafeModeSwitch(cfg.safe_mode_corr_excess or 0.0, cfg.safe_mode_release_corr_excess,
                                     cfg.safe_mode_min_hold_bars)

    @property
    def safe_mode(self) -> bool:
        return self.switch.engaged

    @property
    def reason(self) -> str:
        return self.switch.reason

    def reconfigure(self, cfg: PortfolioConfig) -> None:
        """Apply new limits; the correlation estimate keeps its history when its spans are unchanged."""
        if (cfg.correlation_window_bars, cfg.correlation_baseline_bars) != (
            self.cfg.correlation_window_bars,
            self.cfg.correlation_baseline_bars,
        ):
            self.monitor = CorrelationMonitor(self.monitor.symbols, cfg.correlation_window_bars,
                                              cfg.correlation_baseline_bars)
        self.switch.enter_excess = cfg.safe_mode_corr_excess or 0.0
        self.switch.release_excess = cfg.safe_mode_release_corr_excess
        self.switch.min_hold_bars = cfg.safe_mode_min_hold_bars
        self.cfg = cfg

    def exposure_breach(self, equity_usd: float, gross_usd: float, net_usd: float) -> str:
        """A breach of the gross/net limits by open positions (prices moved after entry)."""
        if equity_usd <= 0:
            return "equity <= 0"
        gross_pct = gross_usd / equity_usd * 100.0
        net_pct = abs(net_usd) / equity_usd * 100.0
        # 0.5% tolerance: entries are sized up to the limits at plan prices, so a position
        # sitting exactly at a limit is not a breach; a price move beyond it is.
        if gross_pct > self.cfg.max_gross_exposure_pct * 1.005:
            return f"gross exposure {gross_pct:.1f}% > {self.cfg.max_gross_exposure_pct}%"
        if net_pct > self.cfg.max_net_exposure_pct * 1.005:
            return f"net exposure {net_pct:.1f}% > {self.cfg.max_net_exposure_pct}%"
        return ""

    def on_timestamp(self, returns: Sequence[float | None], breach: str = "") -> str | None:
        """Update correlation and the switch; returns 'engaged'/'released' on a flip.

        ``safe_mode_corr_excess: null`` turns safe mode off: no correlation work, and an engaged
        safe mode (before a reload) is released."""
        if self.cfg.safe_mode_corr_excess is None:
            if self.switch.engaged:
                self.switch.engaged = False
                self.switch.reason = ""
                return "released"
            return None
        self.monitor.update(returns)
        return self.switch.update(self.monitor.excess, self.monitor.ready, breach)
