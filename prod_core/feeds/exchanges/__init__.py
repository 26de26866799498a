"""Per-exchange quirks of the ccxt feeds: market types to load, ban signals, default waits.

The generic feeds (``ccxt_rest``, ``ccxt_ws``) ask ``quirks_for(exchange_id)`` for:
- ``ccxt_options(market_types)``: ccxt options so that ``load_markets`` fetches only the
  market types the configured symbols need (spot and/or linear contracts);
- ``rate_limit(exc, headers, now_s)``: how long to keep away from the exchange after a
  rate-limit or ban answer, read from the exchange's own signals (``Retry-After``,
  ``X-Bapi-Limit-Reset-Timestamp``), with a long default for IP bans.

Facts behind each rule are in docs/EXCHANGES.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# ccxt writes 'binance 429 Too Many Requests <body>' or 'bybit GET <url> 403 Forbidden <body>'
_STATUS = re.compile(r"^\S+(?: [A-Z]+ \S+)? (403|418|429) ")


@dataclass(frozen=True, slots=True)
class RateLimitSignal:
    """What the exchange said: keep away until ``wait_s`` seconds from now (None: use the backoff)."""

    kind: str  # 'rate_limited' (slow down) or 'banned' (IP ban: a long wait)
    wait_s: float | None
    detail: str


def lower_headers(headers) -> dict[str, str]:
    """ccxt keeps the server's header spelling; look them up case-insensitively."""
    return {str(k).lower(): str(v) for k, v in dict(headers or {}).items()}


def http_status(exc: BaseException) -> int | None:
    """The HTTP status ccxt wrote into its error message ('binance 429 Too Many Requests ...'), if any."""
    m = _STATUS.match(str(exc))
    return int(m.group(1)) if m else None


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value not in (None, "") else None
    except ValueError:
        return None


class ExchangeQuirks:
    """Defaults for an exchange without special rules: no ban signal, only the backoff."""

    id = "generic"
    ban_default_s = 300.0

    def ccxt_options(self, market_types: set[str]) -> dict:
        return {}

    def rate_limit(self, exc: BaseException, headers: dict, now_s: float, ban_s: float | None = None) -> RateLimitSignal:
        h = lower_headers(headers)
        return RateLimitSignal("rate_limited", _seconds(h.get("retry-after")), type(exc).__name__)


class BinanceQuirks(ExchangeQuirks):
    """Binance: HTTP 429 + Retry-After (seconds) = slow down; HTTP 418 + Retry-After = IP ban."""

    id = "binance"
    ban_default_s = 120.0  # Binance bans start at 2 minutes and grow to 3 days for repeat offenders

    def ccxt_options(self, market_types: set[str]) -> dict:
        types = [t for t in ("spot", "linear") if t in market_types] or ["spot"]
        # defaultType alone does not stop load_markets from calling the futures endpoints
        return {"fetchMarkets": {"types": types}, "fetchMargins": False, "fetchCurrencies": False}

    def rate_limit(self, exc, headers, now_s, ban_s=None):
        h = lower_headers(headers)
        retry_after = _seconds(h.get("retry-after"))
        status = http_status(exc)
        if status == 418:
            wait = retry_after if retry_after is not None else (ban_s if ban_s is not None else self.ban_default_s)
            return RateLimitSignal("banned", wait, f"HTTP 418 IP ban, Retry-After {h.get('retry-after')}")
        return RateLimitSignal("rate_limited", retry_after,
                               f"HTTP {status or '?'} rate limit, Retry-After {h.get('retry-after')}, "
                               f"weight {h.get('x-mbx-used-weight-1m')}")


class BybitQuirks(ExchangeQuirks):
    """Bybit v5: retCode 10006/10018 + X-Bapi-Limit-Reset-Timestamp (ms) = slow down;
    HTTP 403 'access too frequent' = IP ban (at least 10 minutes, per Bybit's docs)."""

    id = "bybit"
    ban_default_s = 600.0

    def ccxt_options(self, market_types: set[str]) -> dict:
        types = [t for t in ("spot", "linear") if t in market_types] or ["spot"]
        return {"fetchMarkets": {"types": types}}

    def rate_limit(self, exc, headers, now_s, ban_s=None):
        h = lower_headers(headers)
        status = http_status(exc)
        text = str(exc)
        if status == 403 or "too frequent" in text.lower():
            wait = ban_s if ban_s is not None else self.ban_default_s
            return RateLimitSignal("banned", wait, "HTTP 403 access too frequent (IP ban)")
        reset = _seconds(h.get("x-bapi-limit-reset-timestamp"))
        wait = None if reset is None else max(0.0, reset / 1000.0 - now_s)
        code = "10006" if "10006" in text else ("10018" if "10018" in text else "?")
        return RateLimitSignal("rate_limited", wait,
                               f"retCode {code}, X-Bapi-Limit-Reset-Timestamp {h.get('x-bapi-limit-reset-timestamp')}")


_QUIRKS: dict[str, ExchangeQuirks] = {"binance": BinanceQuirks(), "binanceusdm": BinanceQuirks(), "bybit": BybitQuirks()}


def quirks_for(exchange_id: str) -> ExchangeQuirks:
    return _QUIRKS.get(exchange_id, ExchangeQuirks())
