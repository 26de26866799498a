"""Building a ccxt client for public market data: market types, URL overrides, sandbox.

URL overrides (``exchange.api_url`` / ``exchange.ws_url``) replace only the scheme and
host of ccxt's own URL map, so every path ccxt relies on survives:
- REST: ``https://fapi.binance.com/fapi/v1`` -> ``<api_url>/fapi/v1``;
- websockets: ``wss://fstream.binance.com/ws`` -> ``<ws_url>/fstream/ws``. The original
  host's first label becomes the first path segment, because ccxt tells spot from
  contract streams by the URL (Binance: ``/stream`` = spot; Bybit: ``spot`` in the path),
  and one proxy (or test fake) can then serve every stream of the exchange.
Without an override a URL stays ccxt's (mainnet unless ``sandbox``); REST and
websocket overrides are independent.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from prod_core.feeds.exchanges import quirks_for


class FeedFatalError(RuntimeError):
    """A feed error that retrying cannot fix (bad symbol, timeframe, authentication, unknown exchange)."""


def _ws_rewrite(url: str, ws_base: str) -> str:
    parts = urlsplit(url)
    label = (parts.hostname or "ws").split(".")[0]
    return f"{ws_base.rstrip('/')}/{label}{parts.path}"


def _rewrite_ws(value: dict, ws_url: str) -> None:
    for key, v in list(value.items()):
        if isinstance(v, str) and v.startswith("ws"):
            value[key] = _ws_rewrite(v, ws_url)
        elif isinstance(v, dict):
            _rewrite_ws(v, ws_url)


def rewrite_urls(urls: dict, api_url: str | None, ws_url: str | None = None) -> None:
    """Point every REST url of a ccxt ``urls['api']``-like dict at ``api_url`` (paths kept),
    and every websocket url at ``ws_url`` (host label + path kept). ``None`` leaves that kind alone."""
    base = api_url.rstrip("/") if api_url else None
    for key, value in list(urls.items()):
        if isinstance(value, dict):
            if key in ("ws", "ws-api"):
                if ws_url:
                    _rewrite_ws(value, ws_url)
            else:
                rewrite_urls(value, api_url, ws_url)
        elif isinstance(value, str) and base and value.startswith("http"):
            parts = urlsplit(value)
            urls[key] = base + parts.path + (f"?{parts.query}" if parts.query else "")


def market_types(symbols: Sequence[str]) -> set[str]:
    """'spot' for ``BASE/QUOTE``, 'linear' for ``BASE/QUOTE:SETTLE`` (ccxt's contract symbols)."""
    return {"linear" if ":" in s else "spot" for s in symbols}


def make_exchange(
    exchange_id: str,
    *,
    pro: bool = False,
    sync: bool = False,
    symbols: Sequence[str] = (),
    api_url: str | None = None,
    ws_url: str | None = None,
    sandbox: bool = False,
    api_key: str | None = None,
    secret: str | None = None,
    enable_rate_limit: bool = True,
    timeout_ms: int = 10_000,
    options: dict | None = None,
):
    """A ccxt client (async; ``pro``: ccxt.pro; ``sync``: plain ccxt) for public market data.

    ``symbols`` are ccxt symbols: ``BTC/USDT`` loads spot markets, ``BTC/USDT:USDT`` linear ones.
    """
    if pro:
        import ccxt.pro as module
    elif sync:
        import ccxt as module
    else:
        import ccxt.async_support as module
    cls = getattr(module, exchange_id, None)
    if cls is None or not isinstance(cls, type):
        raise FeedFatalError(f"exchange.id {exchange_id!r} is not a ccxt{'.pro' if pro else ''} exchange; "
                             "fix configs/symbols.yaml")
    opts: dict = {"enableRateLimit": enable_rate_limit, "timeout": timeout_ms, "options": {}}
    opts["options"].update(quirks_for(exchange_id).ccxt_options(market_types(symbols) if symbols else {"spot"}))
    opts["options"].update(options or {})
    if api_key:
        opts["apiKey"] = api_key
    if secret:
        opts["secret"] = secret
    ex = cls(opts)
    if api_key and exchange_id == "bybit":
        ex.has["fetchCurrencies"] = False  # else load_markets calls a private endpoint first
    if api_url or ws_url:
        rewrite_urls(ex.urls["api"], api_url, ws_url)
        if isinstance(ex.urls.get("test"), dict):
            rewrite_urls(ex.urls["test"], api_url, ws_url)
    if sandbox:
        try:
            ex.set_sandbox_mode(True)
        except Exception as exc:  # ccxt raises NotSupported for exchanges without a testnet
            raise FeedFatalError(f"{exchange_id} has no sandbox/testnet in ccxt ({exc}); "
                                 "set exchange.sandbox: false") from None
    return ex
