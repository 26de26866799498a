"""Build the feed chosen by settings (FEED= / --feed)."""

from __future__ import annotations

from prod_core.configs import ConfigError
from prod_core.configs.settings import Settings
from prod_core.configs.symbols import SymbolsConfig
from prod_core.domain import timeframe_to_ms
from prod_core.feeds.base import Feed


def build_feed(settings: Settings, symbols: SymbolsConfig, args, now_s: float) -> Feed:
    """The feed for this run. ``args`` carries the runner's command-line overrides."""
    if settings.feed == "sim":
        from prod_core.feeds.sim import SimFeed

        update = {}
        if getattr(args, "seed", None) is not None:
            update["seed"] = args.seed
        if getattr(args, "scenario", None) is not None:
            update["scenario"] = args.scenario
        sim = symbols.sim.model_copy(update=update)
        tf_ms = timeframe_to_ms(sim.timeframe)
        start_ms = (int(now_s * 1000) // tf_ms - sim.history_bars) * tf_ms
        interval = getattr(args, "bar_interval", None) or settings.sim_bar_interval_s
        return SimFeed(symbols.symbols, sim, start_ms=start_ms, paced=True, bar_interval_s=interval)
    raise ConfigError(f"FEED={settings.feed}: this feed is not available yet; use FEED=sim")
