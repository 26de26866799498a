"""The feed's streamed order books as the paper broker takes them (``PaperBroker.capture_books``).

A feed that streams books (ccxt_ws with ``exchange.order_book``) keeps, per symbol, its latest
snapshot ``{'bid','ask','bids','asks','nonce','ts_ms'}``. ``FeedBooks`` turns one into an
``execution.fills.Book``, or None when it cannot price an order honestly: a side empty, the book
crossed (best bid >= best ask), malformed levels, or stale (no timestamp, or older than
``stale_s`` on the wall clock). Skips are counted per reason in ``skipped``; the first of each
reason is logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from prod_core.execution.fills import Book

log = logging.getLogger("prod_core.runner.books")

STALE_BOOK_S = 5.0


class FeedBooks:
    """``book_of(symbol) -> Book | None`` over a feed's ``top_of_book``."""

    def __init__(self, top_of_book: Callable[[str], dict | None], *, stale_s: float = STALE_BOOK_S,
                 clock: Callable[[], float] = time.time) -> None:
        self._top = top_of_book
        self.stale_s = stale_s
        self._clock = clock
        self.skipped: dict[str, int] = {}  # reason -> books refused (empty, crossed, stale, invalid)
        self.taken = 0

    def __call__(self, symbol: str) -> Book | None:
        snap = self._top(symbol)
        if snap is None:
            return None  # nothing streamed yet
        bids, asks = snap.get("bids") or (), snap.get("asks") or ()
        if not bids or not asks:
            return self._skip("empty", symbol)
        ts_ms = snap.get("ts_ms")
        if ts_ms is None or self._clock() - ts_ms / 1000.0 > self.stale_s:
            return self._skip("stale", symbol)
        try:
            book = Book(bids=tuple((float(p), float(q)) for p, q, *_ in bids),
                        asks=tuple((float(p), float(q)) for p, q, *_ in asks))
        except (TypeError, ValueError):
            return self._skip("invalid", symbol)
        if book.bids[0][0] >= book.asks[0][0]:
            return self._skip("crossed", symbol)
        self.taken += 1
        return book

    def _skip(self, reason: str, symbol: str) -> None:
        n = self.skipped.get(reason, 0) + 1
        self.skipped[reason] = n
        if n == 1:
            log.warning("order book of %s not usable (%s): the order waits for a usable book, or fills on the "
                        "bar model", symbol, reason)
        return None
