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

Market rules in ``exchangeInfo`` filters (``PRICE_FILTER`` tickSize, ``LOT_SIZE``
stepSize/minQty, spot ``NOTIONAL`` minNotional, fapi ``MIN_NOTIONAL`` notional), from
``rules`` / ``BINANCE_RULES``. Funding history: ``GET /fapi/v1/fundingRate`` (symbol,
startTime, endTime, limit <= 1000; oldest first; ``fundingTime`` ends in ...000 or ...001).

``time_scale`` runs the fake's market clock faster than the wall clock (60: a 1m bar
closes every wall second); give the feed ``clock=fake.clock`` so both agree.

Shared machinery (servers, request log, candles, controls) is in ``fake_base``. Candles are a
deterministic function of (symbol, open time, market): ``candle(symbol, ts)``
gives the final values of a closed bar, so a test can check exactly which bars a feed
delivered. The newest (forming) candle is served with different, partial values, so a
feed that delivers a forming candle as closed is caught.

Controls: ``fail(status, count, path, retry_after)`` answers the next requests with 429 / 418 /
5xx (with ``Retry-After``);
``set_silent(True)`` stops every websocket message and freezes the REST data at that
instant (a silent exchange); ``drop_ws(down_s)`` closes every websocket and refuses new
ones for ``down_s`` seconds.

Order books (``/api/v3/depth``, ``/fapi/v1/depth`` and the ``@depth`` streams) sit around the
market's current price (``book_price``: by default the forming 1s candle's price, so the book
moves with the bars), ``BOOK_LEVELS`` levels a side one cent apart. Each diff publishes the new
levels and deletes the old ones (quantity "0"), so a client's book stays exactly the fake's.
Every book published is logged in ``books_sent`` (wall time, market, symbol, update id, bids,
asks), so a test can tell which book an order was priced on.

Shapes follow /work/shared/OFFLINE_TESTING.md (checked against ccxt 4.5.90).
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time

from aiohttp import web

from prod_core.domain import timeframe_to_ms
from prod_core.testing.fake_base import (  # noqa: F401  (re-exported for tests)
    DEFAULT_SYMBOLS,
    FUTURES_BASIS,
    FakeExchangeBase,
    MarketRules,
    RecordedRequest,
    _Conn,
    _Failure,
)

BOOK_LEVELS = 5
# Real values (2025) of Binance spot and USDT-M futures; other symbols get GENERIC_RULES.
BINANCE_RULES = {
    ("spot", "BTC/USDT"): MarketRules("0.01", "0.00001", "0.00001", "5"),
    ("spot", "ETH/USDT"): MarketRules("0.01", "0.0001", "0.0001", "5"),
    ("linear", "BTC/USDT"): MarketRules("0.10", "0.001", "0.001", "100"),
    ("linear", "ETH/USDT"): MarketRules("0.01", "0.001", "0.001", "20"),
}
GENERIC_RULES = {"spot": MarketRules("0.01", "0.001", "0.001", "5"), "linear": MarketRules("0.01", "0.01", "0.01", "5")}
FAPI_INTERVALS = ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1M")


class FakeBinance(FakeExchangeBase):
    """Binance spot (``/api/v3``) and USDT-M futures (``/fapi/v1``); ws spot ``/stream``, futures ``/fstream``.

    ``fail(429|418, retry_after=s)`` answers ``{"code":-1003}`` with ``Retry-After`` (418 = IP ban);
    ``fail(400)`` answers ``{"code":-1121,"msg":"Invalid symbol."}``.
    """

    name = "binance"

    def __init__(self, symbols: dict[str, float] | None = None, **kwargs) -> None:
        super().__init__(symbols, **kwargs)
        self._book_seq = {s: 1000 for s in self.ids}
        self._book_state: dict[tuple[str, str], tuple[list, list]] = {}  # (market, id) -> levels published
        self.books_sent: list[tuple[float, str, str, int, list, list]] = []
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
        r.add_get("/fapi/v1/fundingRate", self._funding_rate)

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

    def default_rules(self, market: str, symbol: str) -> MarketRules:
        return BINANCE_RULES.get((market, symbol), GENERIC_RULES[market])

    @staticmethod
    def default_funding_late_ms(funding_ts_ms: int) -> int:
        return (funding_ts_ms // 28_800_000) % 2  # fundingTime ends in ...000 or ...001

    async def _funding_rate(self, request: web.Request) -> web.Response:
        """``/fapi/v1/fundingRate``: from startTime (or the newest ``limit``), oldest first."""
        mid = self._market_id(request)
        if mid is None:
            return self._bad_symbol()
        q = request.query
        limit = max(1, min(int(q.get("limit", 100)), 1000))
        start = int(q["startTime"]) if "startTime" in q else None
        rows = self.settled_funding(self.ids[mid], start, int(q["endTime"]) if "endTime" in q else None)
        rows = rows[:limit] if start is not None else rows[-limit:]
        mark = self.prices[self.ids[mid]] * FUTURES_BASIS
        return web.json_response([{"symbol": mid, "fundingTime": stamp, "fundingRate": f"{rate:.8f}",
                                   "markPrice": f"{mark:.8f}"} for stamp, rate in rows])

    async def _ping(self, request: web.Request) -> web.Response:
        return web.json_response({})

    async def _time(self, request: web.Request) -> web.Response:
        return web.json_response({"serverTime": int(time.time() * 1000)})

    async def _exchange_info(self, request: web.Request) -> web.Response:
        symbols = []
        for mid, sym in self.ids.items():
            base, quote = sym.split("/")
            r = self.rules[("spot", sym)]
            symbols.append({
                "symbol": mid, "status": "TRADING", "baseAsset": base, "baseAssetPrecision": 8,
                "quoteAsset": quote, "quotePrecision": 8, "quoteAssetPrecision": 8,
                "orderTypes": ["LIMIT", "MARKET"], "isSpotTradingAllowed": True, "isMarginTradingAllowed": False,
                "permissions": ["SPOT"],
                "filters": [
                    {"filterType": "PRICE_FILTER", "minPrice": r.tick, "maxPrice": "1000000.00", "tickSize": r.tick},
                    {"filterType": "LOT_SIZE", "minQty": r.min_qty, "maxQty": "9000.00000", "stepSize": r.step},
                    {"filterType": "NOTIONAL", "minNotional": r.min_notional, "applyMinToMarket": True,
                     "maxNotional": "9000000.00", "applyMaxToMarket": False, "avgPriceMins": 5},
                ],
            })
        return web.json_response({"timezone": "UTC", "serverTime": int(time.time() * 1000), "rateLimits": [],
                                  "exchangeFilters": [], "symbols": symbols})

    async def _fapi_exchange_info(self, request: web.Request) -> web.Response:
        symbols = []
        for mid, sym in self.ids.items():
            base, quote = sym.split("/")
            r = self.rules[("linear", sym)]
            symbols.append({
                "symbol": mid, "pair": mid, "contractType": "PERPETUAL", "deliveryDate": 4133404800000,
                "onboardDate": 1569398400000, "status": "TRADING", "baseAsset": base, "quoteAsset": quote,
                "marginAsset": quote, "pricePrecision": 2, "quantityPrecision": 3, "baseAssetPrecision": 8,
                "quotePrecision": 8, "underlyingType": "COIN", "orderTypes": ["LIMIT", "MARKET"],
                "timeInForce": ["GTC"],
                "filters": [
                    {"filterType": "PRICE_FILTER", "minPrice": r.tick, "maxPrice": "4529764", "tickSize": r.tick},
                    {"filterType": "LOT_SIZE", "stepSize": r.step, "minQty": r.min_qty, "maxQty": "1000"},
                    {"filterType": "MARKET_LOT_SIZE", "stepSize": r.step, "minQty": r.min_qty, "maxQty": "120"},
                    {"filterType": "MIN_NOTIONAL", "notional": r.min_notional},
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

    def book_price(self, symbol: str, market: str, now_ms: int) -> float:
        """The price the book of ``symbol`` sits around at ``now_ms`` (its mid): the forming 1s candle's."""
        return self.candle(symbol, now_ms // 1000 * 1000, 1000, partial=True, market=market)[4]

    def _book(self, mid: str, seq: int, market: str = "spot") -> tuple[list, list]:
        price = round(self.book_price(self.ids[mid], market, self.now_ms()), 2)
        bids = [[f"{price - 0.01 * (i + 1):.2f}", f"{1 + (seq + i) % 5:.3f}"] for i in range(BOOK_LEVELS)]
        asks = [[f"{price + 0.01 * (i + 1):.2f}", f"{1 + (seq + 2 * i) % 5:.3f}"] for i in range(BOOK_LEVELS)]
        return bids, asks

    def _publish_book(self, mid: str, market: str, seq: int) -> tuple[list, list, list, list]:
        """New levels of a book at ``seq``: (bids, asks, bid diff, ask diff); the diffs delete the old levels."""
        bids, asks = self._book(mid, seq, market)
        old_bids, old_asks = self._book_state.get((market, mid), ([], []))
        gone_b = [[p, "0"] for p, _ in old_bids if p not in {q for q, _ in bids}]
        gone_a = [[p, "0"] for p, _ in old_asks if p not in {q for q, _ in asks}]
        self._book_state[(market, mid)] = (bids, asks)
        if len(self.books_sent) < 200_000:
            self.books_sent.append((time.time(), market, self.ids[mid], seq, bids, asks))
        return bids, asks, gone_b + bids, gone_a + asks

    async def _depth(self, request: web.Request) -> web.Response:
        mid = self._market_id(request)
        if mid is None:
            return self._bad_symbol()
        market = "linear" if request.path.startswith("/fapi/") else "spot"
        seq = self._book_seq[mid]
        state = self._book_state.get((market, mid))
        bids, asks = state if state is not None else self._publish_book(mid, market, seq)[:2]
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
                        t = int(time.time() * 1000)
                        msgs: dict[str, dict] = {}  # market -> its diff (spot and futures books differ)
                        for other in list(self._conns):
                            for s2, st2 in other.subs.items():
                                if s2.partition("@")[0] == mid_lower and s2.partition("@")[2].startswith("depth"):
                                    msg = msgs.get(other.market)
                                    if msg is None:
                                        _, _, b, a = self._publish_book(mid, other.market, seq)
                                        msg = msgs[other.market] = {"e": "depthUpdate", "E": t, "s": mid,
                                                                    "U": prev + 1, "u": seq, "pu": prev,
                                                                    "b": b, "a": a}
                                    await self._send(other, msg)
                                    st2["sent"] = time.time()


class TrendingFakeBinance(FakeBinance):
    """The fake with a random-walk price path that trends up and down within a minute, so the
    strategies trade on it (deterministic per symbol and second). ``bar_range`` widens each bar
    around its body; ``volume`` None gives 1..7 units a bar."""

    def __init__(self, *args, bar_range: float = 0.0004, volume: float | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._path: dict[str, dict[int, float]] = {}
        self.bar_range = bar_range
        self.bar_volume = volume

    def _price(self, symbol: str, k: int) -> float:
        path = self._path.setdefault(symbol, {})
        if not path:
            path[k - 5000] = self.prices[symbol]
        if k < min(path):
            raise ValueError("bar before the price path's anchor")
        last = k if k in path else max(j for j in path if j <= k)
        price = path[last]
        for j in range(last + 1, k + 1):
            rng = random.Random(f"{symbol}:{j}")
            drift = 0.0004 * math.copysign(1.0, math.sin(j / 20.0))  # trends up and down within a minute
            price *= math.exp(drift + 0.0008 * rng.gauss(0.0, 1.0))
            path[j] = price
        return path[k]

    def candle(self, symbol: str, ts: int, tf_ms: int = 1000, partial: bool = False, **_market) -> list[float]:
        k = ts // tf_ms
        o, c = round(self._price(symbol, k - 1), 2), round(self._price(symbol, k), 2)
        if partial:
            c = round((o + c) / 2, 2)
        volume = float(1 + k % 7) if self.bar_volume is None else self.bar_volume
        r = self.bar_range
        return [ts, o, round(max(o, c) * (1 + r), 2), round(min(o, c) * (1 - r), 2), c, volume]


@contextlib.contextmanager
def running_fake(symbols: dict[str, float] | None = None, **kwargs):
    """A started FakeBinance, always stopped on exit (for pytest fixtures)."""
    server = FakeBinance(symbols, **kwargs).start()
    try:
        yield server
    finally:
        server.stop()
