"""What the local fake exchanges share: two loopback servers (REST and websockets on
different random ports), a request log, failure injection, deterministic candles and a
market clock that may run faster than the wall clock (``time_scale``), optionally starting at
a chosen instant (``start_ms``, e.g. just before a funding time).

Market rules (tick size, lot step, minimum quantity and notional) are ``MarketRules`` per
(market, symbol), realistic defaults per exchange, overridable with ``rules=``. Settled funding
rates of the perps follow ``funding_rate`` (a constant, or ``f(symbol, funding_ts_ms)``) at
every multiple of ``funding_interval_ms``, stamped ``funding_late_ms(funding_ts_ms)`` ms late
like the real exchanges, and are published once the market clock passes the stamp.

Candles are a deterministic function of (symbol, open time, market): ``candle(...)``
gives the final values of a closed bar, and the newest (forming) candle is served with
different, partial values, so a feed that delivers a forming candle as closed is caught.
A perp candle is the spot candle times ``FUTURES_BASIS``, so a feed reading the wrong
market is caught too. Subclasses: ``fake_exchange.FakeBinance``, ``fake_bybit.FakeBybit``.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web

DEFAULT_SYMBOLS = {"BTC/USDT": 65000.0, "ETH/USDT": 3400.0}
FUTURES_BASIS = 1.001  # a perp candle = the spot candle x this (a feed reading the wrong market is caught)
FUNDING_INTERVAL_MS = 8 * 3_600_000


@dataclass(frozen=True, slots=True)
class MarketRules:
    """One market's trading rules, as decimal strings the way exchanges publish them."""

    tick: str  # price tick (Binance PRICE_FILTER.tickSize, Bybit priceFilter.tickSize)
    step: str  # quantity step (Binance LOT_SIZE.stepSize, Bybit qtyStep / basePrecision)
    min_qty: str  # Binance LOT_SIZE.minQty, Bybit minOrderQty
    min_notional: str  # quote currency: Binance NOTIONAL/MIN_NOTIONAL, Bybit minOrderAmt / minNotionalValue


def default_funding_rate(symbol: str, funding_ts_ms: int) -> float:
    """A deterministic rate per settlement: around +0.01% with a swing (some negative), 8 decimals."""
    k = funding_ts_ms // FUNDING_INTERVAL_MS
    return round(0.0001 + 0.00015 * math.sin(k * 0.7 + len(symbol)), 8)


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
                 tick_s: float = 0.05, kline_update_s: float = 0.25, time_scale: float = 1.0,
                 port: int = 0, ws_port: int = 0, start_ms: int | None = None,
                 rules: Mapping[tuple[str, str], MarketRules] | None = None,
                 funding_rate: float | Callable[[str, int], float] = default_funding_rate,
                 funding_interval_ms: int = FUNDING_INTERVAL_MS,
                 funding_late_ms: int | Callable[[int], int] | None = None) -> None:
        self.prices = dict(symbols or DEFAULT_SYMBOLS)
        # (market 'spot' | 'linear', symbol) -> rules; unset ones come from the subclass's defaults
        self.rules: dict[tuple[str, str], MarketRules] = {
            (m, s): (rules or {}).get((m, s)) or self.default_rules(m, s) for s in self.prices for m in ("spot", "linear")}
        self.funding_rate = funding_rate
        self.funding_interval_ms = int(funding_interval_ms)
        self.funding_late_ms = funding_late_ms if funding_late_ms is not None else self.default_funding_late_ms
        self._want_ports = (int(port), int(ws_port))  # 0: any free port (a test restarting "the exchange" reuses its ports)
        self.ids = {s.replace("/", ""): s for s in self.prices}
        self.max_lifetime_s = max_lifetime_s
        self.tick_s = tick_s
        self.kline_update_s = kline_update_s
        self.time_scale = float(time_scale)
        self._t0 = time.time()
        # the market clock reads start_ms at construction (default: the wall clock)
        self._offset_s = 0.0 if start_ms is None else start_ms / 1000.0 - self._t0
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
        return self._t0 + self._offset_s + (now - self._t0) * self.time_scale

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

    async def _site(self, app: web.Application, port: int = 0) -> int:
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port, reuse_address=True)
        await site.start()
        self._runners.append(runner)
        return site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _serve(self) -> None:
        app = web.Application(middlewares=[self._middleware])
        self._routes(app)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        ws_app = web.Application(middlewares=[self._middleware])
        ws_app.router.add_get("/{tail:.*}", self._ws)
        self.port = await self._site(app, self._want_ports[0])
        self.ws_port = await self._site(ws_app, self._want_ports[1])
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

    def clear_failures(self) -> None:
        """Serve every request normally again."""
        with self._lock:
            self._failures.clear()

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

    # ------------------------------------------------------------ rules, funding
    def default_rules(self, market: str, symbol: str) -> MarketRules:
        """Realistic rules of ``symbol`` on ``market`` (subclasses publish their exchange's)."""
        return MarketRules("0.01", "0.001", "0.001", "5")

    @staticmethod
    def default_funding_late_ms(funding_ts_ms: int) -> int:
        return 0

    def funding_rate_at(self, symbol: str, funding_ts_ms: int) -> float:
        """The rate settled at the funding instant ``funding_ts_ms`` (what a feed must report)."""
        model = self.funding_rate
        return float(model(symbol, funding_ts_ms)) if callable(model) else float(model)

    def funding_stamp(self, funding_ts_ms: int) -> int:
        """When the exchange stamps the settlement of ``funding_ts_ms`` (a few ms late)."""
        late = self.funding_late_ms
        return funding_ts_ms + int(late(funding_ts_ms) if callable(late) else late)

    def settled_funding(self, symbol: str, start_ms: int | None, end_ms: int | None) -> list[tuple[int, float]]:
        """(stamp, rate) of the settlements published by now with start <= stamp <= end, oldest first."""
        iv = self.funding_interval_ms
        now = self.now_ms()
        hi = now if end_ms is None else min(now, end_ms)
        lo = hi - 1000 * iv if start_ms is None else start_ms
        out = []
        for t in range((lo // iv - 1) * iv, hi + 1, iv):
            stamp = self.funding_stamp(t)
            if lo <= stamp <= hi:
                out.append((stamp, self.funding_rate_at(symbol, t)))
        return out

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
