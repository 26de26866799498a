"""Build the feed chosen by settings (FEED= / --feed)."""

from __future__ import annotations

from prod_core.configs import ConfigError
from prod_core.configs.settings import Settings
from prod_core.configs.symbols import SymbolsConfig
from prod_core.domain import timeframe_to_ms
from prod_core.feeds.base import Feed

DEFAULT_HISTORY_BARS = 300
START_WAIT_S = 5.0


def build_feed(settings: Settings, symbols: SymbolsConfig, args, now_s: float) -> Feed:
    """The feed for this run. ``args`` carries the runner's command-line overrides.

    replay: ``args.data`` (list of ``PATH`` or ``SYMBOL=PATH``), ``args.speed``
    (``max`` | ``realtime`` | ``10x``; default ``max``).
    ccxt / ccxt_ws: exchange and symbols from ``symbols.exchange`` / ``symbols.symbols``;
    optional ``args.history_bars``. Any problem is a ``ConfigError`` with a clear message.
    """
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
    if settings.feed == "replay":
        return _build_replay(symbols, args)
    if settings.feed in ("ccxt", "ccxt_ws"):
        return _build_ccxt(settings, symbols, args)
    raise ConfigError(f"FEED={settings.feed}: unknown feed; use sim, replay, ccxt or ccxt_ws")


def _build_replay(symbols: SymbolsConfig, args) -> Feed:
    from prod_core.feeds.candles import CandleFormatError
    from prod_core.feeds.replay import ReplayFeed, parse_speed

    data = list(getattr(args, "data", None) or [])
    if not data:
        raise ConfigError("FEED=replay needs --data PATH [PATH...] (CSV/Parquet candles or Binance kline dumps)")
    speed = getattr(args, "speed", None) or "max"
    from prod_core.feeds.session import SessionFormatError, SessionReplayFeed, is_recording

    if len(data) == 1 and is_recording(data[0]):  # reports/run_<id>/bars.parquet: replay the session
        try:
            return SessionReplayFeed.from_path(data[0])
        except SessionFormatError as exc:
            raise ConfigError(f"replay: {exc}") from None
    try:
        parse_speed(speed)
        return ReplayFeed.from_paths(data, speed=speed, known_symbols=symbols.names)
    except (CandleFormatError, ValueError) as exc:
        raise ConfigError(f"replay: {exc}") from None


def exchange_kwargs(settings: Settings, symbols: SymbolsConfig) -> dict:
    """Constructor arguments shared by the ccxt feeds (and fetch-history)."""
    ex = symbols.exchange
    key = settings.exchange_api_key.get_secret_value()
    secret = settings.exchange_api_secret.get_secret_value()
    return {
        "exchange_id": ex.id,
        "api_url": ex.api_url,
        "ws_url": ex.ws_url,
        "sandbox": ex.sandbox,
        # public market data needs no keys; they are only handed to a sandbox client
        "api_key": key if (ex.sandbox and key) else None,
        "secret": secret if (ex.sandbox and secret) else None,
    }


def _build_ccxt(settings: Settings, symbols: SymbolsConfig, args) -> Feed:
    if symbols.exchange.order_book and settings.feed != "ccxt_ws":
        raise ConfigError(
            f"FEED={settings.feed}: exchange.order_book: true in configs/symbols.yaml needs the websocket feed; "
            "use FEED=ccxt_ws (--feed ccxt_ws) or set order_book: false"
        )
    kwargs = exchange_kwargs(settings, symbols)
    history = getattr(args, "history_bars", None)
    common = dict(
        symbols=symbols.names,
        market_symbols=symbols.market_symbols,
        timeframe=symbols.exchange.timeframe,
        history_bars=DEFAULT_HISTORY_BARS if history is None else int(history),
        # the runner waits this long for the exchange at start, then keeps cycling (degraded)
        # while the feed connects in the background
        start_timeout_s=START_WAIT_S,
        # settled funding rates of the perps (fetchFundingRateHistory), for the paper broker
        funding=any(s.kind == "perp" for s in symbols.symbols),
        **kwargs,
    )
    try:
        if settings.feed == "ccxt":
            from prod_core.feeds.ccxt_rest import CcxtRestFeed

            return CcxtRestFeed(**common)
        from prod_core.feeds.ccxt_ws import CcxtWsFeed

        # exchange.order_book: stream the books; the paper broker walks them (execution.latency_ms)
        return CcxtWsFeed(**common, books=symbols.exchange.order_book)
    except ValueError as exc:
        raise ConfigError(f"FEED={settings.feed}: {exc}") from None
