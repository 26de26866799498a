"""A local fake Binance (spot + USDT-M futures REST, spot + futures websocket streams) for
testing the real ccxt client offline.

Loopback only (127.0.0.1), REST and websockets on two DIFFERENT random ports (``url``,
``ws_url``), started and stopped by tests, and bounded in time: it shuts itself down
after ``max_lifetime_s``. Every HTTP request (websocket upgrades included) is recorded in
``requests``, so a test can prove that no order endpoint was ever called.

Markets: spot ``/api/v3/...`` and USDT-M futures ``/fapi/v1/...`` (the same ids, e.g.
``BTCUSDT``; futures prices carry a small basis so a test can tell which one a feed
read). Websockets: spot on ``/stream/...``, futures on ``/fstream/...`` (what
``exchange.ws_url`` rewriting produces from ``stream.binance.com`` / ``fstream.binance.com``).
Futures reject the ``1s`` interval with ``-1120 Invalid interval`` like the real fapi.

``time_scale`` runs the fake's market clock faster than the wall clock (60: a 1m bar
closes every wall second); give the feed ``clock=fake.clock`` so both agree.

Candles are a deterministic function of (symbol, open time): ``candle(symbol, ts)``
gives the final values of a closed bar, so a test can check exactly which bars a feed
delivered. The newest (forming) candle is served with different, partial values, so a
feed that delivers a forming candle as closed is caught.

Controls: ``fail(status, count, path, retry_after)`` answers the next requests with 429 / 418 /
5xx (with ``Retry-After``);
``set_silent(True)`` stops every websocket message and freezes the REST data at that
instant (a silent exchange); ``drop_ws(down_s)`` closes every websocket and refuses new
ones for ``down_s`` seconds.

Shapes follow /work/shared/OFFLINE_TESTING.md (checked against ccxt 4.5.90).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import threading
import time
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web

from prod_core.domain import timeframe_to_ms

DEFAULT_SYMBOLS = {"BTC/USDT": 65000.0, "ETH/USDT": 3400.0}
BOOK_LEVELS = 5


FUTURES_BASIS = 1.001  # a perp candle = the spot candle x this (a feed reading the wrong market is caught)
FAPI_INTERVALS = ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1M")


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    ts: float
    method: str
    path: str
    query: dict
    port: int = 0
    injected: int = 0  # the status/retCode of an injected failure answered to it (0: served normally)


@dataclass(slots=True)
class _Failure:
    status: int
    remaining: int
    path_prefix: str
    retry_after: float | None


@dataclass(slots=True)
class _Conn:
    ws: web.WebSocketResponse
    path: str
    market: str  # 'spot' or 'linear'
    subs: dict = field(default_factory=dict)  # stream name -> per-stream state


class FakeExchangeBase:
    """Lifecycle, request log, failure injection, deterministic candles and a market clock."""

    name = "fake"

    def __init__(self, symbols: dict[str, float] | None = None, *, max_lifetime_s: float = 120.0,
                 tick_s: float = 0.05, kline_update_s: float = 0.25, time_scale: float = 1.0) -> None:
        self.prices = dict(symbols or DEFAULT_SYMBOLS)
        self.ids = {s.replace("/", ""): s for s in self.prices}
        self.max_lifetime_s = max_lifetime_s
        self.tick_s = tick_s
        self.kline_update_s = kline_update_s
        self.time_scale = float(time_scale)
        self._t0 = time.time()
        self.requests: list[RecordedRequest] = []
        self.ws_messages_sent = 0
        self.ws_connections = 0
        self.ws_received: list[dict] = []
        self._lock = threading.Lock()
        self._failures: list[_Failure] = []
        self._silent_since_ms: int | None = None
        self._refuse_ws_until = 0.0
        self._conns: list[_Conn] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runners: list[web.AppRunner] = []
        self._ready = threading.Event()
        self._stopped = threading.Event()
        self.port = 0
        self.ws_port = 0

    # ------------------------------------------------------------- lifecycle
    def start(self):
        self._thread = threading.Thread(target=self._run, name=f"fake-{self.name}", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake exchange did not start within 10 s")
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is not None and not self._stopped.is_set():
            try:
                asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(10)
            except Exception:
                pass
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        """The ``exchange.ws_url`` to configure: a different port than REST."""
        return f"ws://127.0.0.1:{self.ws_port}"

    def clock(self) -> float:
        """The fake market's wall clock in seconds (scaled by ``time_scale``); hand it to a feed."""
        now = time.time()
        return self._t0 + (now - self._t0) * self.time_scale

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve())
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            self._stopped.set()
            self._ready.set()

    def _routes(self, app: web.Application) -> None:  # pragma: no cover - subclasses
        raise NotImplementedError

    async def _site(self, app: web.Application) -> int:
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runners.append(runner)
        return site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _serve(self) -> None:
        app = web.Application(middlewares=[self._middleware])
        self._routes(app)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        ws_app = web.Application(middlewares=[self._middleware])
        ws_app.router.add_get("/{tail:.*}", self._ws)
        self.port = await self._site(app)
        self.ws_port = await self._site(ws_app)
        self._done = asyncio.Event()
        self._ready.set()
        ticker = asyncio.create_task(self._broadcast())
        try:
            await asyncio.wait_for(self._done.wait(), timeout=self.max_lifetime_s)
        except asyncio.TimeoutError:
            pass
        ticker.cancel()
        await self._close_all()
        for runner in self._runners:
            await runner.cleanup()

    async def _shutdown(self) -> None:
        self._done.set()

    async def _close_all(self) -> None:
        for conn in list(self._conns):
            try:
                await conn.ws.close()
            except Exception:
                pass
        self._conns.clear()

    # ---------------------------------------------------------------- controls
    def fail(self, status: int, count: int = 1, path: str = "/api/v3/klines", retry_after: float | None = None) -> None:
        """Answer the next ``count`` requests under ``path`` with ``status`` (see the subclass for codes)."""
        with self._lock:
            self._failures.append(_Failure(status, count, path, retry_after))

    def set_silent(self, silent: bool) -> None:
        """Silent: no websocket message and REST data frozen at this instant."""
        with self._lock:
            if silent and self._silent_since_ms is None:
                self._silent_since_ms = self._now_ms()
            elif not silent:
                self._silent_since_ms = None

    def drop_ws(self, down_s: float = 0.0) -> None:
        """Close every websocket; refuse new ones for ``down_s`` seconds."""
        self._refuse_ws_until = time.time() + down_s
        if self._loop is not None:
            asyncio.run_coroutine_threadsafe(self._close_all(), self._loop).result(10)

    def paths(self) -> list[str]:
        with self._lock:
            return [r.path for r in self.requests]

    def rest_requests(self, path: str | None = None) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.port == self.port and (path is None or r.path == path)]

    def count(self, path: str) -> int:
        return sum(1 for p in self.paths() if p == path)

    # ------------------------------------------------------------------- data
    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def now_ms(self) -> int:
        frozen = self._silent_since_ms
        return frozen if frozen is not None else self._now_ms()

    def candle(self, symbol: str, ts: int, tf_ms: int = 1000, partial: bool = False,
               market: str = "spot") -> list[float]:
        """[ts, o, h, l, c, v] of a bar; deterministic; ``partial`` = the forming state."""
        base = self.prices[symbol] * (FUTURES_BASIS if market == "linear" else 1.0)
        phase = len(symbol) * 0.37
        k = ts // tf_ms
        o = round(base * (1.0 + 0.01 * math.sin(k * 0.1 + phase)), 2)
        c = round(base * (1.0 + 0.01 * math.sin((k + 1) * 0.1 + phase)), 2)
        if partial:
            c = round((o + c) / 2, 2)
            return [ts, o, round(max(o, c) * 1.0002, 2), round(min(o, c) * 0.9998, 2), c, 0.5]
        return [ts, o, round(max(o, c) * 1.0005, 2), round(min(o, c) * 0.9995, 2), c, float(1 + k % 7)]

    def closed_bars(self, symbol: str, start_ms: int, end_ms: int, tf_ms: int = 1000,
                    market: str = "spot") -> list[list[float]]:
        """Every closed bar with start_ms <= ts <= end_ms (what a perfect feed delivers)."""
        first = -(-start_ms // tf_ms) * tf_ms
        return [self.candle(symbol, t, tf_ms, market=market) for t in range(first, end_ms + 1, tf_ms)]

    def _rows(self, symbol: str, tf_ms: int, market: str, start: int | None, end: int | None,
              limit: int) -> list[list[float]]:
        """Candles oldest-first: from ``start`` (aligned up) or the newest ``limit``; the newest is partial."""
        forming = self.now_ms() // tf_ms * tf_ms
        end = min(end, forming) if end is not None else forming
        first = -(-start // tf_ms) * tf_ms if start is not None else end - (limit - 1) * tf_ms
        return [self.candle(symbol, t, tf_ms, partial=(t == forming), market=market)
                for t in range(first, end + 1, tf_ms)][:limit]

    # -------------------------------------------------------------- handlers
    @web.middleware
    async def _middleware(self, request: web.Request, handler):
        port = request.transport.get_extra_info("sockname")[1] if request.transport else 0
        with self._lock:
            failure = None
            for f in self._failures:
                if f.remaining > 0 and request.path.startswith(f.path_prefix):
                    f.remaining -= 1
                    failure = f
                    break
            self.requests.append(RecordedRequest(time.time(), request.method, request.path, dict(request.query),
                                                 port, failure.status if failure else 0))
        if failure is not None:
            return self._failure_response(failure)
        return await handler(request)

    def _failure_response(self, failure: _Failure) -> web.Response:
        headers = {"Retry-After": f"{failure.retry_after:g}"} if failure.retry_after is not None else {}
        return web.Response(status=failure.status, text="Service Unavailable (fake)", headers=headers)

    async def _not_found(self, request: web.Request) -> web.Response:
        return web.json_response({"code": -1, "msg": f"fake {self.name}: no route {request.method} {request.path}"},
                                 status=404)

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        market = self._ws_market(request.path)
        if time.time() < self._refuse_ws_until or market is None:
            return web.Response(status=503 if market else 404, text="websocket down (fake)")
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        conn = _Conn(ws, request.path, market)
        self._conns.append(conn)
        self.ws_connections += 1
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    data = json.loads(msg.data)
                except ValueError:
                    continue
                self.ws_received.append(data)
                await self._on_ws_message(conn, data)
        finally:
            if conn in self._conns:
                self._conns.remove(conn)
        return ws

    def _ws_market(self, path: str) -> str | None:  # pragma: no cover - subclasses
        raise NotImplementedError

    async def _on_ws_message(self, conn: _Conn, data: dict) -> None:  # pragma: no cover - subclasses
        raise NotImplementedError

    async def _send(self, conn: _Conn, payload: dict) -> None:
        try:
            await conn.ws.send_str(json.dumps(payload))
            self.ws_messages_sent += 1
        except Exception:
            pass

    async def _broadcast(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            if self._silent_since_ms is not None:
                continue
            await self._tick(self._now_ms())

    async def _tick(self, now_ms: int) -> None:  # pragma: no cover - subclasses
        raise NotImplementedError

    async def _kline_tick(self, conn: _Conn, st: dict, now_ms: int, tf_ms: int, send_bar) -> None:
        """The final update of a bar that just closed, then the forming bar every ``kline_update_s``."""
        slot = now_ms // tf_ms * tf_ms
        last_slot = st.get("slot")
        if last_slot is not None and slot - last_slot == tf_ms:
            await send_bar(last_slot, True)
        if last_slot != slot or time.time() - st.get("sent", 0.0) >= self.kline_update_s:
            await send_bar(slot, False)
            st["slot"], st["sent"] = slot, time.time()


class FakeBinance(FakeExchangeBase):
    """Binance spot (``/api/v3``) and USDT-M futures (``/fapi/v1``); ws spot ``/stream``, futures ``/fstream``.

    ``fail(429|418, retry_after=s)`` answers ``{"code":-1003}`` with ``Retry-After`` (418 = IP ban);
    ``fail(400)`` answers ``{"code":-1121,"msg":"Invalid symbol."}``.
    """

    name = "binance"

    def __init__(self, symbols: dict[str, float] | None = None, **kwargs) -> None:
        super().__init__(symbols, **kwargs)
        self._book_seq = {s: 1000 for s in self.ids}
        self._trade_id = 0

    def _routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/api/v3/exchangeInfo", self._exchange_info)
        r.add_get("/api/v3/klines", self._klines)
        r.add_get("/api/v3/ticker/24hr", self._ticker)
        r.add_get("/api/v3/depth", self._depth)
        r.add_get("/api/v3/time", self._time)
        r.add_get("/api/v3/ping", self._ping)
        r.add_get("/fapi/v1/exchangeInfo", self._fapi_exchange_info)
        r.add_get("/fapi/v1/klines", self._klines)
        r.add_get("/fapi/v1/depth", self._depth)
        r.add_get("/fapi/v1/time", self._time)
        r.add_get("/fapi/v1/ping", self._ping)

    def _failure_response(self, failure: _Failure) -> web.Response:
        headers = {"Retry-After": f"{failure.retry_after:g}"} if failure.retry_after is not None else {}
        headers["X-MBX-USED-WEIGHT-1M"] = "6000"
        if failure.status in (418, 429):
            msg = ("Way too many requests; IP banned until later (fake)." if failure.status == 418
                   else "Too many requests; current limit of IP is 6000 requests per minute (fake).")
            return web.json_response({"code": -1003, "msg": msg}, status=failure.status, headers=headers)
        if failure.status == 400:  # e.g. a symbol delisted while running
            return web.json_response({"code": -1121, "msg": "Invalid symbol."}, status=400)
        return super()._failure_response(failure)

    def _market_id(self, request: web.Request) -> str | None:
        mid = request.query.get("symbol", "")
        return mid if mid in self.ids else None

    @staticmethod
    def _bad_symbol() -> web.Response:
        return web.json_response({"code": -1121, "msg": "Invalid symbol."}, status=400)

    async def _ping(self, request: web.Request) -> web.Response:
        return web.json_response({})

    async def _time(self, request: web.Request) -> web.Response:
        return web.json_response({"serverTime": int(time.time() * 1000)})

    async def _exchange_info(self, request: web.Request) -> web.Response:
        symbols = []
        for mid, sym in self.ids.items():
            base, quote = sym.split("/")
            symbols.append({
                "symbol": mid, "status": "TRADING", "baseAsset": base, "baseAssetPrecision": 8,
                "quoteAsset": quote, "quotePrecision": 8, "quoteAssetPrecision": 8,
                "orderTypes": ["LIMIT", "MARKET"], "isSpotTradingAllowed": True, "isMarginTradingAllowed": False,
                "permissions": ["SPOT"],
                "filters": [
                    {"filterType": "PRICE_FILTER", "minPrice": "0.01", "maxPrice": "1000000.00", "tickSize": "0.01"},
                    {"filterType": "LOT_SIZE", "minQty": "0.00001", "maxQty": "9000.00000", "stepSize": "0.00001"},
                    {"filterType": "NOTIONAL", "minNotional": "5.00", "applyMinToMarket": True,
                     "maxNotional": "9000000.00", "applyMaxToMarket": False, "avgPriceMins": 5},
                ],
            })
        return web.json_response({"timezone": "UTC", "serverTime": int(time.time() * 1000), "rateLimits": [],
                                  "exchangeFilters": [], "symbols": symbols})

    async def _fapi_exchange_info(self, request: web.Request) -> web.Response:
        symbols = []
        for mid, sym in self.ids.items():
            base, quote = sym.split("/")
            symbols.append({
                "symbol": mid, "pair": mid, "contractType": "PERPETUAL", "deliveryDate": 4133404800000,
                "onboardDate": 1569398400000, "status": "TRADING", "baseAsset": base, "quoteAsset": quote,
                "marginAsset": quote, "pricePrecision": 2, "quantityPrecision": 3, "baseAssetPrecision": 8,
                "quotePrecision": 8, "underlyingType": "COIN", "orderTypes": ["LIMIT", "MARKET"],
                "timeInForce": ["GTC"],
                "filters": [
                    {"filterType": "PRICE_FILTER", "minPrice": "0.10", "maxPrice": "4529764", "tickSize": "0.10"},
                    {"filterType": "LOT_SIZE", "stepSize": "0.001", "minQty": "0.001", "maxQty": "1000"},
                    {"filterType": "MARKET_LOT_SIZE", "stepSize": "0.001", "minQty": "0.001", "maxQty": "120"},
                    {"filterType": "MIN_NOTIONAL", "notional": "100"},
                ],
            })
        return web.json_response({"timezone": "UTC", "serverTime": int(time.time() * 1000), "rateLimits": [],
                                  "exchangeFilters": [], "assets": [], "symbols": symbols})

    async def _klines(self, request: web.Request) -> web.Response:
        mid = self._market_id(request)
        if mid is None:
            return self._bad_symbol()
        market = "linear" if request.path.startswith("/fapi/") else "spot"
        q = request.query
        interval = q.get("interval", "1m")
        try:
            if market == "linear" and interval not in FAPI_INTERVALS:
                raise ValueError(interval)
            tf_ms = timeframe_to_ms(interval)
        except ValueError:
            return web.json_response({"code": -1120, "msg": "Invalid interval."}, status=400)
        limit = min(int(q.get("limit", 500)), 1500 if market == "linear" else 1000)
        rows = self._rows(self.ids[mid], tf_ms, market, int(q["startTime"]) if "startTime" in q else None,
                          int(q["endTime"]) if "endTime" in q else None, limit)
        return web.json_response([[t, f"{o:.2f}", f"{h:.2f}", f"{lo:.2f}", f"{c:.2f}", f"{v:.5f}",
                                   t + tf_ms - 1, "0", 1, "0", "0", "0"] for t, o, h, lo, c, v in rows])

    def _book(self, mid: str, seq: int) -> tuple[list, list]:
        price = self.prices[self.ids[mid]]
        bids = [[f"{price - 0.01 * (i + 1):.2f}", f"{1 + (seq + i) % 5:.3f}"] for i in range(BOOK_LEVELS)]
        asks = [[f"{price + 0.01 * (i + 1):.2f}", f"{1 + (seq + 2 * i) % 5:.3f}"] for i in range(BOOK_LEVELS)]
        return bids, asks

    async def _depth(self, request: web.Request) -> web.Response:
        mid = self._market_id(request)
        if mid is None:
            return self._bad_symbol()
        seq = self._book_seq[mid]
        bids, asks = self._book(mid, seq)
        return web.json_response({"lastUpdateId": seq, "bids": bids, "asks": asks})

    async def _ticker(self, request: web.Request) -> web.Response:
        mid = self._market_id(request)
        if mid is None:
            return self._bad_symbol()
        now = self.now_ms()
        last = self.candle(self.ids[mid], now // 1000 * 1000, 1000, partial=True)[4]
        bids, asks = self._book(mid, self._book_seq[mid])
        return web.json_response({
            "symbol": mid, "priceChange": "0", "priceChangePercent": "0", "weightedAvgPrice": f"{last:.2f}",
            "lastPrice": f"{last:.2f}", "lastQty": "0.1", "bidPrice": bids[0][0], "bidQty": bids[0][1],
            "askPrice": asks[0][0], "askQty": asks[0][1], "openPrice": f"{last:.2f}", "highPrice": f"{last:.2f}",
            "lowPrice": f"{last:.2f}", "volume": "100", "quoteVolume": "100", "openTime": now - 86_400_000,
            "closeTime": now, "count": 1,
        })

    # ------------------------------------------------------------ websockets
    def _ws_market(self, path: str) -> str | None:
        if path.startswith("/stream/"):
            return "spot"
        if path.startswith("/fstream/"):
            return "linear"
        return None

    async def _on_ws_message(self, conn: _Conn, data: dict) -> None:
        method = data.get("method")
        params = data.get("params") or []
        if method == "SUBSCRIBE":
            for stream in params:
                conn.subs[stream] = {}
        elif method == "UNSUBSCRIBE":
            for stream in params:
                conn.subs.pop(stream, None)
        await conn.ws.send_str(json.dumps({"result": None, "id": data.get("id")}))

    def _kline_msg(self, mid: str, interval: str, tf_ms: int, ts: int, closed: bool, market: str) -> dict:
        o = self.candle(self.ids[mid], ts, tf_ms, partial=not closed, market=market)
        now = int(time.time() * 1000)
        return {"e": "kline", "E": now, "s": mid, "k": {
            "t": ts, "T": ts + tf_ms - 1, "s": mid, "i": interval, "f": 1, "L": 2,
            "o": f"{o[1]:.2f}", "c": f"{o[4]:.2f}", "h": f"{o[2]:.2f}", "l": f"{o[3]:.2f}", "v": f"{o[5]:.5f}",
            "n": 1, "x": closed, "q": "0", "V": "0", "Q": "0", "B": "0"}}

    async def _tick(self, now_ms: int) -> None:
        advanced: set[str] = set()
        for conn in list(self._conns):
            for stream, st in list(conn.subs.items()):
                mid_lower, _, kind = stream.partition("@")
                mid = mid_lower.upper()
                if mid not in self.ids:
                    continue
                if kind.startswith("kline_"):
                    interval = kind[len("kline_"):]
                    tf_ms = timeframe_to_ms(interval)

                    async def send_bar(ts, closed, conn=conn, mid=mid, interval=interval, tf_ms=tf_ms):
                        await self._send(conn, self._kline_msg(mid, interval, tf_ms, ts, closed, conn.market))

                    await self._kline_tick(conn, st, now_ms, tf_ms, send_bar)
                elif kind == "trade":
                    if time.time() - st.get("sent", 0.0) >= 0.2:
                        self._trade_id += 1
                        price = self.candle(self.ids[mid], now_ms // 1000 * 1000, 1000, partial=True)[4]
                        t = int(time.time() * 1000)
                        await self._send(conn, {"e": "trade", "E": t, "s": mid, "t": self._trade_id,
                                                "p": f"{price:.2f}", "q": "0.010", "T": t,
                                                "m": self._trade_id % 2 == 0, "M": True})
                        st["sent"] = time.time()
                elif kind.startswith("depth"):
                    if mid not in advanced and time.time() - st.get("sent", 0.0) >= 0.1:
                        advanced.add(mid)
                        prev = self._book_seq[mid]
                        seq = prev + 2
                        self._book_seq[mid] = seq
                        bids, asks = self._book(mid, seq)
                        t = int(time.time() * 1000)
                        msg = {"e": "depthUpdate", "E": t, "s": mid, "U": prev + 1, "u": seq, "pu": prev,
                               "b": bids, "a": asks}
                        for other in list(self._conns):
                            for s2, st2 in other.subs.items():
                                if s2.partition("@")[0] == mid_lower and s2.partition("@")[2].startswith("depth"):
                                    await self._send(other, msg)
                                    st2["sent"] = time.time()


@contextlib.contextmanager
def running_fake(symbols: dict[str, float] | None = None, **kwargs):
    """A started FakeBinance, always stopped on exit (for pytest fixtures)."""
    server = FakeBinance(symbols, **kwargs).start()
    try:
        yield server
    finally:
        server.stop()
