"""ccxt.pro websocket feed: ``watch_ohlcv`` for closed bars (+ optional ``watch_trades`` /
``watch_order_book`` for execution snapshots), REST for warm-up and gap backfill.

A bar is delivered once the stream shows a newer bar (the exchange sends a bar's final
update before the first update of the next one). The feed keeps, per symbol, the last
delivered bar; whenever the bars between it and the forming bar are not all in hand
from the stream (after a reconnect, a silent stretch, or a first message), they are
fetched over REST: no closed bar is missed or delivered twice. Candle values cached
before a disconnect are discarded, so a partial bar is never delivered as closed.

Disconnects and rate limits are retried per stream with exponential backoff and jitter
(health 0 meanwhile); a watchdog backfills over REST when a stream stays silent longer
than the staleness threshold.

A websocket the exchange keeps open but stops sending on is replaced: when a symbol's
kline stream has had no frame (closed or forming update) for ``ws_silence_s`` (default two
bars plus the grace, at least 5 s, on the feed's clock), the feed logs one WARNING, counts
it in ``stats["silent_reconnects"]`` and fails the client's open websocket connections the
way ccxt's own keepalive timeout does (``client.on_error``): the pending watches raise, the
usual reconnect path opens new sockets and the gap is backfilled exactly. At most one such
reconnect per ``ws_silence_s``. Everything shared with the REST feed lives in
``ccxt_rest.CcxtFeedBase``.
"""

from __future__ import annotations

import asyncio
import logging
import math

from prod_core.feeds.ccxt_base import Backoff, CcxtFeedBase, FeedFatalError, classify_error, fatal_message

log = logging.getLogger("prod_core.feeds.ccxt_ws")

NAN = math.nan


def default_ws_silence_s(tf_ms: int, grace_s: float) -> float:
    """No kline frame for two bars plus the grace (at least 5 s): the socket is replaced (1m -> 125 s)."""
    return max(5.0, 2 * tf_ms / 1000.0 + grace_s)


class CcxtWsFeed(CcxtFeedBase):
    pro = True

    def __init__(self, *args, trades: bool = False, books: bool = False, book_depth: int = 10,
                 ws_silence_s: float | None = None, **kwargs) -> None:
        kwargs.setdefault("name", "ccxt_ws")
        super().__init__(*args, **kwargs)
        if ws_silence_s is None:
            ws_silence_s = default_ws_silence_s(self.tf_ms, self.grace_s)
        if ws_silence_s <= 0:
            raise ValueError("ws_silence_s must be > 0")
        self.ws_silence_s = float(ws_silence_s)
        self.stats.setdefault("silent_reconnects", 0)
        self._last_frame_s: dict[str, float] = {}  # symbol -> feed clock of its last kline frame
        self._silent_reconnect_s = -math.inf  # feed clock of the last forced reconnect
        self.watch_trades = trades
        self.watch_books = books
        self.book_depth = book_depth
        self.last_trade: dict[str, dict] = {}
        self.books: dict[str, dict] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._backoffs: dict[str, Backoff] = {}
        self._burst: set[str] = set()

    # -------------------------------------------------------- snapshots API
    def top_of_book(self, symbol: str) -> dict | None:
        """Latest streamed book {'bid','ask','bids','asks','nonce','ts_ms'} (``books=True``)."""
        return self.books.get(symbol)

    def trade(self, symbol: str) -> dict | None:
        """Latest streamed trade {'ts_ms','price','qty','side'} (``trades=True``)."""
        return self.last_trade.get(symbol)

    # ----------------------------------------------------------------- loop
    async def _run(self) -> None:
        self._locks = {s: asyncio.Lock() for s in self.symbols}
        for s in self.symbols:
            async with self._locks[s]:
                await self._history(s)
        self._mark_started()
        now = self.clock()
        self._last_frame_s = {s: now for s in self.symbols}
        jobs = [self._watch_bars(s) for s in self.symbols]
        if self.watch_trades:
            jobs += [self._watch_trades(s) for s in self.symbols]
        if self.watch_books:
            jobs += [self._watch_book(s) for s in self.symbols]
        jobs.append(self._watchdog())
        tasks = [asyncio.create_task(j) for j in jobs]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _stream_failed(self, key: str, what: str, exc: Exception) -> None:
        kind = classify_error(exc)
        if kind == "fatal":
            raise FeedFatalError(fatal_message(self.name, self.exchange_id, what, exc)) from None
        if kind == "rate_limit":
            self._trouble[key] = "rate_limited"
            self._rate_limited(exc, what)
            await self._wait_ban()
            return
        else:
            self.stats["network_errors" if kind == "network" else "other_errors"] += 1
            self._trouble[key] = "reconnecting"
        if key not in self._burst:  # log once per burst
            self._burst.add(key)
            log.warning("%s: %s failed (%s: %s); reconnecting with backoff", self.name, what,
                        type(exc).__name__, str(exc)[:200])
        backoff = self._backoffs.setdefault(key, self.backoff.clone())
        await asyncio.sleep(backoff.next())
        await self._wait_ban()  # an IP ban announced over REST covers the reconnect too

    def _stream_ok(self, key: str) -> None:
        if key in self._trouble:
            del self._trouble[key]
            self.stats["reconnects"] += 1
            log.info("%s: %s stream back", self.name, key)
        self._burst.discard(key)
        b = self._backoffs.get(key)
        if b is not None:
            b.reset()

    async def _watch_bars(self, symbol: str) -> None:
        key = f"ohlcv:{symbol}"
        pending: dict[int, list] = {}
        resync = True  # the first update is checked against what REST delivered
        while True:
            try:
                batch = await self.ex.watch_ohlcv(self.market_symbols[symbol], self.timeframe)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                pending.clear()  # candles cached before a disconnect may be partial
                resync = True
                await self._stream_failed(key, f"watch_ohlcv {symbol}", exc)
                continue
            self._last_frame_s[symbol] = self.clock()
            self._stream_ok(key)
            for c in batch:
                pending[int(c[0])] = c
            if not pending:
                continue
            forming = max(pending)
            async with self._locks[symbol]:
                await self._settle(symbol, pending, forming, resync)
            resync = False
            for t in [t for t in pending if t < forming]:
                del pending[t]

    async def _settle(self, symbol: str, pending: dict[int, list], forming: int, resync: bool) -> None:
        """Deliver every bar between the last delivered one and ``forming`` (exclusive)."""
        tf = self.tf_ms
        last = self.last_ts[symbol]
        if last is None:  # no warm-up history: start with the bar now forming
            self.last_ts[symbol] = forming - tf
            return
        if forming <= last + tf:
            return
        expected = range(last + tf, forming, tf)
        if resync or any(t not in pending for t in expected):
            n = await self._catch_up(symbol, before_ms=forming)
            self.stats["backfills"] += 1
            self.stats["backfilled_bars"] += n
            if n:
                log.info("%s: backfilled %d bar(s) of %s over REST", self.name, n, symbol)
        else:
            self._emit(symbol, [pending[t] for t in expected])

    async def _watchdog(self) -> None:
        """REST backfill for a symbol whose stream stays silent beyond the staleness threshold."""
        period = max(0.2, min(self.tf_ms / 1000.0, self.stale_after_s / 2))
        checked = self.clock()
        while True:
            await asyncio.sleep(min(period, 0.5))
            self._check_silence()
            for s in self.symbols:  # bars being repaired: re-requested on the repair's schedule
                if self.repair.held(s) or self.repair.wanted(s) is not None:
                    async with self._locks[s]:
                        await self._repair_due()
                    break
            now = self.clock()
            if now - checked < period:
                continue
            checked = now
            for s in self.symbols:
                if now - self._last_bar_s.get(s, now) > self.stale_after_s and self.last_ts[s] is not None:
                    async with self._locks[s]:
                        n = await self._catch_up(s)
                    if n:
                        self.stats["backfills"] += 1
                        self.stats["backfilled_bars"] += n

    def _check_silence(self) -> None:
        """Replace the websockets when a kline stream has been silent for ``ws_silence_s``."""
        now = self.clock()
        if now - self._silent_reconnect_s < self.ws_silence_s:
            return
        silent = [s for s in self.symbols if now - self._last_frame_s.get(s, now) >= self.ws_silence_s]
        if not silent:
            return
        gap = max(now - self._last_frame_s[s] for s in silent)
        if not self._drop_sockets(f"no frame for {gap:.0f} s"):
            return  # nothing open to replace (already reconnecting): the retry path is at work
        self._silent_reconnect_s = now
        self.stats["silent_reconnects"] += 1
        log.warning("%s: websocket silent for %.0f s (%s), reconnecting", self.name, gap, ", ".join(silent))

    def _drop_sockets(self, why: str) -> int:
        """Fail every open websocket of the client as ccxt's keepalive timeout does: pending watches
        raise ``NetworkError``, the client is forgotten and its socket closed, and the next watch
        dials and subscribes afresh. Returns how many sockets were dropped."""
        import ccxt

        clients = getattr(self.ex, "clients", None) or {}
        n = 0
        for client in list(clients.values()):
            if client.connecting or client.closed():
                continue  # a dial in progress has its own timeout
            client.on_error(ccxt.NetworkError(f"{self.name}: websocket {client.url} silent, {why}"))
            n += 1
        return n

    async def _watch_trades(self, symbol: str) -> None:
        key = f"trades:{symbol}"
        while True:
            try:
                trades = await self.ex.watch_trades(self.market_symbols[symbol])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await self._stream_failed(key, f"watch_trades {symbol}", exc)
                continue
            self._stream_ok(key)
            if trades:
                t = trades[-1]
                self.last_trade[symbol] = {"ts_ms": t.get("timestamp"), "price": t.get("price"),
                                           "qty": t.get("amount"), "side": t.get("side")}

    async def _watch_book(self, symbol: str) -> None:
        key = f"book:{symbol}"
        while True:
            try:
                ob = await self.ex.watch_order_book(self.market_symbols[symbol])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await self._stream_failed(key, f"watch_order_book {symbol}", exc)
                continue
            self._stream_ok(key)
            bids, asks = ob.get("bids") or [], ob.get("asks") or []
            n = self.book_depth
            self.books[symbol] = {
                "bid": bids[0][0] if bids else NAN, "ask": asks[0][0] if asks else NAN,
                "bids": [list(x[:2]) for x in bids[:n]], "asks": [list(x[:2]) for x in asks[:n]],
                "nonce": ob.get("nonce"), "ts_ms": ob.get("timestamp"),
            }
