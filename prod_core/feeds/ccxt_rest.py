"""ccxt REST feed: polls closed candles shortly after every bar close; ticker / order-book
snapshots on demand.

Only public market-data methods are ever called (``load_markets``, ``fetch_ohlcv``,
``fetch_ticker``, ``fetch_order_book``): paper mode never sends an order. Everything
shared with the websocket feed (thread, markets, health, rate limits, fatal errors,
backfill) is in ``ccxt_base``; the names other modules import from here are re-exported.
"""

from __future__ import annotations

import asyncio

from prod_core.feeds.ccxt_base import (
    Backoff,
    CcxtFeedBase,
    FeedFatalError,
    classify_error,
    default_stale_after_s,
    fatal_message,
    make_exchange,
    rewrite_urls,
)

__all__ = ["Backoff", "CcxtFeedBase", "CcxtRestFeed", "FeedFatalError", "classify_error", "default_stale_after_s",
           "fatal_message", "make_exchange", "rewrite_urls"]


# ---------------------------------------------------------------------- REST
class CcxtRestFeed(CcxtFeedBase):
    """Polls ``fetch_ohlcv`` shortly after every expected bar close."""

    pro = False

    def __init__(self, *args, poll_lag_s: float | None = None, max_poll_s: float = 60.0, **kwargs) -> None:
        kwargs.setdefault("name", "ccxt")
        super().__init__(*args, **kwargs)
        # how long after a bar's close to ask for it (exchanges need a moment to publish it)
        self.poll_lag_s = poll_lag_s if poll_lag_s is not None else min(2.0, self.tf_ms / 4000.0)
        self.max_poll_s = max_poll_s

    async def _run(self) -> None:
        for s in self.symbols:
            await self._history(s)
        self._mark_started()
        tf_s = self.tf_ms / 1000.0
        while True:
            now = self.clock()
            lasts = [t for t in self.last_ts.values() if t is not None]
            if lasts:
                next_close = (min(lasts) + 2 * self.tf_ms) / 1000.0  # close of the next missing bar
            else:
                next_close = (int(now * 1000) // self.tf_ms * self.tf_ms + self.tf_ms) / 1000.0
            if next_close + self.poll_lag_s <= now:
                # behind (e.g. the exchange was slow to publish): retry at a modest pace
                delay = max(self.poll_lag_s, min(tf_s / 4.0, 15.0))
            else:
                delay = next_close + self.poll_lag_s - now
            repairs = [t for t in (self.repair.next_attempt_s(s) for s in self.symbols) if t is not None]
            if repairs:  # a bar being repaired is re-requested on its own schedule, not at the next close
                delay = min(delay, max(0.05, min(repairs) - now))
            await asyncio.sleep(min(delay, self.max_poll_s))
            for s in self.symbols:
                await self._catch_up(s)
            await self._repair_due()
