"""A local fake Bybit v5 (spot + linear REST, public websocket streams) for the real ccxt client.

Loopback only; REST and websockets on two different random ports (``url``, ``ws_url``);
bounded in time; every request is recorded (see ``FakeExchangeBase``). Shapes follow
/work/shared/OFFLINE_TESTING.md (ccxt 4.5.90) and docs/EXCHANGES.md:

- REST ``/v5/market/instruments-info``, ``/v5/market/kline`` (newest-first list, like
  Bybit), ``/v5/market/time``, ``/v5/market/orderbook``, ``/v5/market/tickers``; every
  JSON reply carries ``retCode``.
- ws ``.../v5/public/spot`` and ``.../v5/public/linear``: ``{"op":"subscribe"}`` gets an
  ack, ``{"op":"ping"}`` a pong; topics ``kline.<interval>.<id>``, ``publicTrade.<id>``.
  A bar's final frame has ``confirm: true``.
- Market rules in instruments-info from ``rules`` / ``BYBIT_RULES``: spot
  ``priceFilter.tickSize``, ``lotSizeFilter.basePrecision/minOrderQty/minOrderAmt``; linear
  ``priceFilter.tickSize``, ``lotSizeFilter.qtyStep/minOrderQty/minNotionalValue``.
- Funding history ``GET /v5/market/funding/history`` (category=linear, symbol, startTime,
  endTime, limit <= 200): the newest ``limit`` settlements up to endTime, newest first.

Rate limits: ``fail(10006, count, path, retry_after=s)`` answers HTTP 200 +
``retCode 10006`` with ``X-Bapi-Limit-Reset-Timestamp`` = now + s (ms);
``fail(403, ...)`` answers HTTP 403 ``access too frequent`` (Bybit's IP ban); any other
``fail(<retCode >= 10000>)`` answers HTTP 200 with that retCode (10003: invalid API key).
"""

from __future__ import annotations

import contextlib
import json
import time

from aiohttp import web

from prod_core.testing.fake_base import FakeExchangeBase, MarketRules, _Conn, _Failure

# Real values (2025) of Bybit spot and linear; other symbols get GENERIC_RULES.
BYBIT_RULES = {
    ("spot", "BTC/USDT"): MarketRules("0.01", "0.000001", "0.000048", "1"),
    ("spot", "ETH/USDT"): MarketRules("0.01", "0.00001", "0.00062", "1"),
    ("linear", "BTC/USDT"): MarketRules("0.10", "0.001", "0.001", "5"),
    ("linear", "ETH/USDT"): MarketRules("0.01", "0.01", "0.01", "5"),
}
GENERIC_RULES = {"spot": MarketRules("0.01", "0.001", "0.001", "1"), "linear": MarketRules("0.01", "0.01", "0.01", "5")}

# Bybit interval code -> ms (the real list; '1s' does not exist on Bybit)
INTERVALS = {"1": 60_000, "3": 180_000, "5": 300_000, "15": 900_000, "30": 1_800_000, "60": 3_600_000,
             "120": 7_200_000, "240": 14_400_000, "360": 21_600_000, "720": 43_200_000, "D": 86_400_000,
             "W": 604_800_000}


class FakeBybit(FakeExchangeBase):
    name = "bybit"

    def __init__(self, symbols: dict[str, float] | None = None, **kwargs) -> None:
        super().__init__(symbols, **kwargs)
        self._trade_id = 0

    @staticmethod
    def _envelope(result: dict, ret_code: int = 0, msg: str = "OK", status: int = 200, headers=None) -> web.Response:
        return web.json_response({"retCode": ret_code, "retMsg": msg, "result": result, "retExtInfo": {},
                                  "time": int(time.time() * 1000)}, status=status, headers=headers)

    def _routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/v5/market/instruments-info", self._instruments)
        r.add_get("/v5/market/kline", self._kline)
        r.add_get("/v5/market/time", self._time)
        r.add_get("/v5/market/orderbook", self._orderbook)
        r.add_get("/v5/market/funding/history", self._funding_history)

    def default_rules(self, market: str, symbol: str) -> MarketRules:
        return BYBIT_RULES.get((market, symbol), GENERIC_RULES[market])

    async def _funding_history(self, request: web.Request) -> web.Response:
        q = request.query
        mid = q.get("symbol", "")
        if mid not in self.ids or q.get("category") != "linear":
            return self._envelope({}, 10001, "params error: symbol or category invalid")
        if "startTime" in q and "endTime" not in q:  # like Bybit: startTime alone is refused
            return self._envelope({}, 10001, "params error: endTime is required with startTime")
        limit = max(1, min(int(q.get("limit", 200)), 200))
        rows = self.settled_funding(self.ids[mid], int(q["startTime"]) if "startTime" in q else None,
                                    int(q["endTime"]) if "endTime" in q else None)[-limit:]
        lst = [{"symbol": mid, "fundingRate": f"{rate:.8f}".rstrip("0").rstrip(".") or "0",
                "fundingRateTimestamp": str(stamp)} for stamp, rate in reversed(rows)]
        return self._envelope({"category": "linear", "list": lst})

    def _failure_response(self, failure: _Failure) -> web.Response:
        wait = failure.retry_after if failure.retry_after is not None else 1.0
        if failure.status in (10006, 10018):
            reset_ms = int((time.time() + wait) * 1000)
            headers = {"X-Bapi-Limit-Status": "0", "X-Bapi-Limit": "10",
                       "X-Bapi-Limit-Reset-Timestamp": str(reset_ms)}
            return self._envelope({}, failure.status, "Too many visits. Exceeded the API Rate Limit.",
                                  headers=headers)
        if failure.status == 403:
            return web.Response(status=403, text="access too frequent")
        if failure.status >= 10000:  # any other retCode, e.g. 10003 invalid api key, 10001 params error
            return self._envelope({}, failure.status, f"fake retCode {failure.status}")
        return super()._failure_response(failure)

    async def _time(self, request: web.Request) -> web.Response:
        now = time.time()
        return self._envelope({"timeSecond": str(int(now)), "timeNano": str(int(now * 1e9))})

    async def _instruments(self, request: web.Request) -> web.Response:
        cat = request.query.get("category")
        out = []
        if request.query.get("status") == "PreLaunch":
            return self._envelope({"category": cat, "list": [], "nextPageCursor": ""})
        for mid, sym in self.ids.items():
            base, quote = sym.split("/")
            r = self.rules[("linear" if cat == "linear" else "spot", sym)]
            if cat == "spot":
                out.append({"symbol": mid, "baseCoin": base, "quoteCoin": quote, "innovation": "0",
                            "status": "Trading", "marginTrading": "none",
                            "lotSizeFilter": {"basePrecision": r.step, "quotePrecision": "0.00000001",
                                              "minOrderQty": r.min_qty, "maxOrderQty": "71.73956243",
                                              "minOrderAmt": r.min_notional, "maxOrderAmt": "2000000"},
                            "priceFilter": {"tickSize": r.tick}})
            elif cat == "linear":
                out.append({"symbol": mid, "contractType": "LinearPerpetual", "status": "Trading",
                            "baseCoin": base, "quoteCoin": quote, "settleCoin": quote,
                            "launchTime": "1585526400000", "deliveryTime": "0", "deliveryFeeRate": "",
                            "priceScale": "2", "fundingInterval": self.funding_interval_ms // 60_000,
                            "priceFilter": {"minPrice": r.tick, "maxPrice": "199999.80", "tickSize": r.tick},
                            "lotSizeFilter": {"minOrderQty": r.min_qty, "maxOrderQty": "100.000", "qtyStep": r.step,
                                              "minNotionalValue": r.min_notional},
                            "leverageFilter": {"minLeverage": "1", "maxLeverage": "100.00",
                                               "leverageStep": "0.01"}})
            else:
                return self._envelope({}, 10001, "params error: category")
        return self._envelope({"category": cat, "list": out, "nextPageCursor": ""})

    async def _kline(self, request: web.Request) -> web.Response:
        q = request.query
        cat = q.get("category", "linear")
        mid = q.get("symbol", "")
        if mid not in self.ids or cat not in ("spot", "linear"):
            return self._envelope({}, 10001, "params error: symbol invalid")
        tf_ms = INTERVALS.get(q.get("interval", ""))
        if tf_ms is None:
            return self._envelope({}, 10001, "params error: Invalid period!")
        limit = min(int(q.get("limit", 200)), 1000)
        rows = self._rows(self.ids[mid], tf_ms, cat, int(q["start"]) if "start" in q else None,
                          int(q["end"]) if "end" in q else None, limit)
        lst = [[str(t), f"{o:.2f}", f"{h:.2f}", f"{lo:.2f}", f"{c:.2f}", f"{v:.5f}", f"{v * c:.4f}"]
               for t, o, h, lo, c, v in rows]
        return self._envelope({"symbol": mid, "category": cat, "list": lst[::-1]})  # newest first

    async def _orderbook(self, request: web.Request) -> web.Response:
        mid = request.query.get("symbol", "")
        if mid not in self.ids:
            return self._envelope({}, 10001, "params error: symbol invalid")
        p = self.prices[self.ids[mid]]
        return self._envelope({"s": mid, "b": [[f"{p - 0.01:.2f}", "1.0"]], "a": [[f"{p + 0.01:.2f}", "1.0"]],
                               "ts": int(time.time() * 1000), "u": 1, "seq": 1})

    # ------------------------------------------------------------ websockets
    def _ws_market(self, path: str) -> str | None:
        if path.endswith("/v5/public/spot"):
            return "spot"
        if path.endswith("/v5/public/linear"):
            return "linear"
        return None

    async def _on_ws_message(self, conn: _Conn, data: dict) -> None:
        op = data.get("op")
        req_id = str(data.get("req_id", ""))
        if op == "ping":
            await conn.ws.send_str(json.dumps({"success": True, "ret_msg": "", "conn_id": "fake", "req_id": req_id,
                                               "op": "pong"}))
        elif op in ("subscribe", "unsubscribe"):
            bad = [a for a in data.get("args") or [] if a.split(".")[-1] not in self.ids]
            for topic in data.get("args") or []:
                if op == "subscribe" and topic not in bad:
                    conn.subs[topic] = {}
                else:
                    conn.subs.pop(topic, None)
            ack = {"success": not bad, "ret_msg": f"Invalid topic: {bad}" if bad else "", "conn_id": "fake",
                   "req_id": req_id, "op": op}
            await conn.ws.send_str(json.dumps(ack))

    def _kline_frame(self, topic: str, interval: str, mid: str, tf_ms: int, ts: int, closed: bool,
                     market: str) -> dict:
        o = self.candle(self.ids[mid], ts, tf_ms, partial=not closed, market=market)
        now = int(time.time() * 1000)
        return {"topic": topic, "type": "snapshot", "ts": now, "data": [{
            "start": ts, "end": ts + tf_ms - 1, "interval": interval, "open": f"{o[1]:.2f}", "close": f"{o[4]:.2f}",
            "high": f"{o[2]:.2f}", "low": f"{o[3]:.2f}", "volume": f"{o[5]:.5f}", "turnover": f"{o[5] * o[4]:.4f}",
            "confirm": closed, "timestamp": now}]}

    async def _tick(self, now_ms: int) -> None:
        for conn in list(self._conns):
            for topic, st in list(conn.subs.items()):
                parts = topic.split(".")
                if parts[0] == "kline" and len(parts) == 3 and parts[1] in INTERVALS:
                    interval, mid, tf_ms = parts[1], parts[2], INTERVALS[parts[1]]

                    async def send_bar(ts, closed, conn=conn, topic=topic, interval=interval, mid=mid, tf_ms=tf_ms):
                        await self._send(conn, self._kline_frame(topic, interval, mid, tf_ms, ts, closed,
                                                                 conn.market))

                    await self._kline_tick(conn, st, now_ms, tf_ms, send_bar)
                elif parts[0] == "publicTrade" and time.time() - st.get("sent", 0.0) >= 0.2:
                    self._trade_id += 1
                    mid = parts[1]
                    price = self.candle(self.ids[mid], now_ms // 60_000 * 60_000, 60_000, partial=True,
                                        market=conn.market)[4]
                    t = int(time.time() * 1000)
                    await self._send(conn, {"topic": topic, "type": "snapshot", "ts": t, "data": [{
                        "T": t, "s": mid, "S": "Buy" if self._trade_id % 2 else "Sell", "v": "0.010",
                        "p": f"{price:.2f}", "L": "PlusTick", "i": str(self._trade_id), "BT": False}]})
                    st["sent"] = time.time()


@contextlib.contextmanager
def running_fake_bybit(symbols: dict[str, float] | None = None, **kwargs):
    """A started FakeBybit, always stopped on exit (for pytest fixtures)."""
    server = FakeBybit(symbols, **kwargs).start()
    try:
        yield server
    finally:
        server.stop()
