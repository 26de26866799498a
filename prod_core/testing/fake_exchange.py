"""A local fake Binance (spot REST + websocket streams) for testing the real ccxt client offline.

Loopback only (127.0.0.1, random port), started and stopped by tests, and bounded in
time: it shuts itself down after ``max_lifetime_s``. Every HTTP request (websocket
upgrades included) is recorded in ``requests``, so a test can prove that no order
endpoint was ever called.

Candles are a deterministic function of (symbol, open time): ``candle(symbol, ts)``
gives the final values of a closed bar, so a test can check exactly which bars a feed
delivered. The newest (forming) candle is served with different, partial values, so a
feed that delivers a forming candle as closed is caught.

Controls: ``fail(status, count, path)`` answers the next requests with 429 / 5xx;
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


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    ts: float
    method: str
    path: str
    query: dict


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
    subs: dict = field(default_factory=dict)  # stream name -> per-stream state


class FakeBinance:
    def __init__(
        self,
        symbols: dict[str, float] | None = None,
        *,
        max_lifetime_s: float = 120.0,
        tick_s: float = 0.05,
        kline_update_s: float = 0.25,
    ) -> None:
        self.prices = dict(symbols or DEFAULT_SYMBOLS)
        self.ids = {s.replace("/", ""): s for s in self.prices}
        self.max_lifetime_s = max_lifetime_s
        self.tick_s = tick_s
        self.kline_update_s = kline_update_s
        self.requests: list[RecordedRequest] = []
        self.ws_messages_sent = 0
        self.ws_connections = 0
        self._lock = threading.Lock()
        self._failures: list[_Failure] = []
        self._silent_since_ms: int | None = None
        self._refuse_ws_until = 0.0
        self._conns: list[_Conn] = []
        self._book_seq = {s: 1000 for s in self.ids}
        self._trade_id = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._stopped = threading.Event()
        self.port = 0

    # ------------------------------------------------------------- lifecycle
    def start(self) -> "FakeBinance":
        self._thread = threading.Thread(target=self._run, name="fake-binance", daemon=True)
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

    def __enter__(self) -> "FakeBinance":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/stream/ws"

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

    async def _serve(self) -> None:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get("/api/v3/exchangeInfo", self._exchange_info)
        app.router.add_get("/api/v3/klines", self._klines)
        app.router.add_get("/api/v3/ticker/24hr", self._ticker)
        app.router.add_get("/api/v3/depth", self._depth)
        app.router.add_get("/api/v3/time", self._time)
        app.router.add_get("/api/v3/ping", self._ping)
        app.router.add_get("/stream/{tail:.*}", self._ws)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._done = asyncio.Event()
        self._ready.set()
        ticker = asyncio.create_task(self._broadcast())
        try:
            await asyncio.wait_for(self._done.wait(), timeout=self.max_lifetime_s)
        except asyncio.TimeoutError:
            pass
        ticker.cancel()
        await self._close_all()
        await self._runner.cleanup()

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
        """Answer the next ``count`` requests under ``path`` with HTTP ``status``."""
        with self._lock:
            self._failures.append(_Failure(status, count, path, retry_after))

    def set_silent(self, silent: bool) -> None:
        """Silent: no websocket message and REST data frozen at this instant."""
        with self._lock:
            if silent and self._silent_since_ms is None:
                self._silent_since_ms = int(time.time() * 1000)
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

    def count(self, path: str) -> int:
        return sum(1 for p in self.paths() if p == path)

    # ------------------------------------------------------------------- data
    def now_ms(self) -> int:
        frozen = self._silent_since_ms
        return frozen if frozen is not None else int(time.time() * 1000)

    def candle(self, symbol: str, ts: int, tf_ms: int = 1000, partial: bool = False) -> list[float]:
        """[ts, o, h, l, c, v] of a bar; deterministic; ``partial`` = the forming state."""
        base = self.prices[symbol]
        phase = len(symbol) * 0.37
        k = ts // tf_ms
        o = round(base * (1.0 + 0.01 * math.sin(k * 0.1 + phase)), 2)
        c = round(base * (1.0 + 0.01 * math.sin((k + 1) * 0.1 + phase)), 2)
        if partial:
            c = round((o + c) / 2, 2)
            return [ts, o, round(max(o, c) * 1.0002, 2), round(min(o, c) * 0.9998, 2), c, 0.5]
        return [ts, o, round(max(o, c) * 1.0005, 2), round(min(o, c) * 0.9995, 2), c, float(1 + k % 7)]

    def closed_bars(self, symbol: str, start_ms: int, end_ms: int, tf_ms: int = 1000) -> list[list[float]]:
        """Every closed bar with start_ms <= ts <= end_ms (what a perfect feed delivers)."""
        first = -(-start_ms // tf_ms) * tf_ms
        return [self.candle(symbol, t, tf_ms) for t in range(first, end_ms + 1, tf_ms)]

    # -------------------------------------------------------------- handlers
    @web.middleware
    async def _middleware(self, request: web.Request, handler):
        with self._lock:
            self.requests.append(RecordedRequest(time.time(), request.method, request.path, dict(request.query)))
            failure = None
            for f in self._failures:
                if f.remaining > 0 and request.path.startswith(f.path_prefix):
                    f.remaining -= 1
                    failure = f
                    break
        if failure is not None:
            headers = {"Retry-After": str(failure.retry_after)} if failure.retry_after is not None else {}
            if failure.status in (418, 429):
                return web.json_response({"code": -1003, "msg": "Too many requests; fake rate limit."},
                                         status=failure.status, headers=headers)
            return web.Response(status=failure.status, text="Service Unavailable (fake)", headers=headers)
        return await handler(request)

    def _market_id(self, request: web.Request) -> str | None:
        mid = request.query.get("symbol", "")
        return mid if mid in self.ids else None

    @staticmethod
    def _bad_symbol() -> web.Response:
        return web.json_response({"code": -1121, "msg": "Invalid symbol."}, status=400)

    async def _not_found(self, request: web.Request) -> web.Response:
        return web.json_response({"code": -1, "msg": f"fake binance: no route {request.method} {request.path}"},
                                 status=404)

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

    async def _klines(self, request: web.Request) -> web.Response:
        mid = self._market_id(request)
        if mid is None:
            return self._bad_symbol()
        symbol = self.ids[mid]
        q = request.query
        try:
            tf_ms = timeframe_to_ms(q.get("interval", "1m"))
        except ValueError:
            return web.json_response({"code": -1120, "msg": "Invalid interval."}, status=400)
        limit = min(int(q.get("limit", 500)), 1000)
        now = self.now_ms()
        forming = now // tf_ms * tf_ms
        end = min(int(q["endTime"]), forming) if "endTime" in q else forming
        if "startTime" in q:
            start = -(-int(q["startTime"]) // tf_ms) * tf_ms
        else:
            start = end - (limit - 1) * tf_ms
        rows = []
        for t in range(start, end + 1, tf_ms):
            if len(rows) >= limit:
                break
            o = self.candle(symbol, t, tf_ms, partial=(t == forming))
            rows.append([t, f"{o[1]:.2f}", f"{o[2]:.2f}", f"{o[3]:.2f}", f"{o[4]:.2f}", f"{o[5]:.5f}",
                         t + tf_ms - 1, "0", 1, "0", "0", "0"])
        return web.json_response(rows)

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
    async def _ws(self, request: web.Request) -> web.StreamResponse:
        if time.time() < self._refuse_ws_until:
            return web.Response(status=503, text="websocket down (fake)")
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        conn = _Conn(ws, request.path)
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
                method = data.get("method")
                params = data.get("params") or []
                if method == "SUBSCRIBE":
                    for stream in params:
                        conn.subs[stream] = {}
                elif method == "UNSUBSCRIBE":
                    for stream in params:
                        conn.subs.pop(stream, None)
                await ws.send_str(json.dumps({"result": None, "id": data.get("id")}))
        finally:
            if conn in self._conns:
                self._conns.remove(conn)
        return ws

    async def _send(self, conn: _Conn, payload: dict) -> None:
        try:
            await conn.ws.send_str(json.dumps(payload))
            self.ws_messages_sent += 1
        except Exception:
            pass

    def _kline_msg(self, mid: str, interval: str, tf_ms: int, ts: int, closed: bool) -> dict:
        o = self.candle(self.ids[mid], ts, tf_ms, partial=not closed)
        now = int(time.time() * 1000)
        return {"e": "kline", "E": now, "s": mid, "k": {
            "t": ts, "T": ts + tf_ms - 1, "s": mid, "i": interval, "f": 1, "L": 2,
            "o": f"{o[1]:.2f}", "c": f"{o[4]:.2f}", "h": f"{o[2]:.2f}", "l": f"{o[3]:.2f}", "v": f"{o[5]:.5f}",
            "n": 1, "x": closed, "q": "0", "V": "0", "Q": "0", "B": "0"}}

    async def _broadcast(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            if self._silent_since_ms is not None:
                continue
            now_ms = int(time.time() * 1000)
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
                        slot = now_ms // tf_ms * tf_ms
                        last_slot = st.get("slot")
                        if last_slot is not None and slot > last_slot:
                            if slot - last_slot == tf_ms:  # the final update of the bar that just closed
                                await self._send(conn, self._kline_msg(mid, interval, tf_ms, last_slot, True))
                        if last_slot != slot or now_ms - st.get("sent", 0) >= self.kline_update_s * 1000:
                            await self._send(conn, self._kline_msg(mid, interval, tf_ms, slot, False))
                            st["slot"], st["sent"] = slot, now_ms
                    elif kind == "trade":
                        if now_ms - st.get("sent", 0) >= 200:
                            self._trade_id += 1
                            price = self.candle(self.ids[mid], now_ms // 1000 * 1000, 1000, partial=True)[4]
                            await self._send(conn, {"e": "trade", "E": now_ms, "s": mid, "t": self._trade_id,
                                                    "p": f"{price:.2f}", "q": "0.010", "T": now_ms,
                                                    "m": self._trade_id % 2 == 0, "M": True})
                            st["sent"] = now_ms
                    elif kind.startswith("depth"):
                        if mid not in advanced and now_ms - st.get("sent", 0) >= 100:
                            advanced.add(mid)
                            prev = self._book_seq[mid]
                            seq = prev + 2
                            self._book_seq[mid] = seq
                            bids, asks = self._book(mid, seq)
                            msg = {"e": "depthUpdate", "E": now_ms, "s": mid, "U": prev + 1, "u": seq,
                                   "b": bids, "a": asks}
                            for other in list(self._conns):
                                for s2, st2 in other.subs.items():
                                    if s2.partition("@")[0] == mid_lower and s2.partition("@")[2].startswith("depth"):
                                        await self._send(other, msg)
                                        st2["sent"] = now_ms


@contextlib.contextmanager
def running_fake(symbols: dict[str, float] | None = None, **kwargs):
    """A started FakeBinance, always stopped on exit (for pytest fixtures)."""
    server = FakeBinance(symbols, **kwargs).start()
    try:
        yield server
    finally:
        server.stop()
