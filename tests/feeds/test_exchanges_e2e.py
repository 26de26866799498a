"""Binance and Bybit, spot and perp, REST and websocket feeds: the real ccxt client against local fakes.

Each fake serves REST and websockets on two different 127.0.0.1 ports and runs its market
clock 60x faster than the wall clock, so a 1m bar (Bybit has no 1s bars; Binance futures
neither) closes every wall second; the feed gets the same clock.
"""

from __future__ import annotations

import random
import time

import pytest

from prod_core.feeds.base import FeedHealth
from prod_core.feeds.ccxt_rest import Backoff, CcxtRestFeed
from prod_core.feeds.ccxt_ws import CcxtWsFeed
from prod_core.testing.fake_bybit import FakeBybit
from prod_core.testing.fake_exchange import FakeBinance

TF = "1m"
TF_MS = 60_000
SCALE = 60.0
SYMS = ("BTC/USDT", "ETH/USDT")
FAKES = {"binance": FakeBinance, "bybit": FakeBybit}


@pytest.fixture(params=["binance", "bybit"])
def fake(request):
    server = FAKES[request.param]({"BTC/USDT": 65000.0, "ETH/USDT": 3400.0}, max_lifetime_s=90.0,
                                  time_scale=SCALE).start()
    try:
        yield server
    finally:
        server.stop()


def make_feed(fake, kind: str, ws: bool, symbols=SYMS, timeframe=TF, **kw):
    kw.setdefault("history_bars", 5)
    kw.setdefault("stale_after_s", 600.0)  # market-clock seconds (10 wall seconds)
    kw.setdefault("backoff", Backoff(base_s=0.1, max_s=0.8, jitter=0.2, rng=random.Random(5)))
    kw.setdefault("enable_rate_limit", True)  # the production setting: ccxt's own limiter on
    markets = {s: (f"{s}:USDT" if kind == "perp" else s) for s in symbols}
    cls = CcxtWsFeed if ws else CcxtRestFeed
    if not ws:
        kw.setdefault("max_poll_s", 0.2)  # wall-clock cap on the poll sleep (the market clock runs 60x)
    return cls(fake.name, symbols, timeframe, api_url=fake.url, ws_url=fake.ws_url, market_symbols=markets,
               start_timeout_s=10.0, timeout_ms=3000, clock=fake.clock, **kw)


def collect(feed, seconds: float, until=None) -> list:
    bars = []
    end = time.time() + seconds
    while time.time() < end:
        bars.extend(feed.poll(time.time()))
        if until is not None and until(bars):
            break
        time.sleep(0.05)
    return bars


def assert_exact(fake, bars, symbol, market):
    """Contiguous closed bars of that market with the exact final values: nothing missing, doubled or forming."""
    mine = [b for b in bars if b.symbol == symbol]
    assert mine, f"no bars for {symbol}"
    ts = [b.ts_ms for b in mine]
    assert ts == list(range(ts[0], ts[-1] + TF_MS, TF_MS)), "missing or doubled bars"
    for b in mine:
        assert [b.ts_ms, b.open, b.high, b.low, b.close, b.volume] == fake.candle(symbol, b.ts_ms, TF_MS,
                                                                                  market=market)
    assert mine[-1].ts_ms + TF_MS <= fake.clock() * 1000  # never a forming bar


def rest_paths(fake) -> set[str]:
    return {r.path for r in fake.rest_requests()}


@pytest.mark.parametrize("kind", ["spot", "perp"])
@pytest.mark.parametrize("ws", [False, True], ids=["rest", "ws"])
def test_feed_delivers_exact_closed_bars_of_the_configured_market(fake, kind, ws):
    """Spot reads the spot market, perp the linear contract; bars keep the configured symbol name."""
    market = "linear" if kind == "perp" else "spot"
    feed = make_feed(fake, kind, ws)
    feed.start(fake.clock())
    try:
        inst = feed.instruments()["BTC/USDT"]
        assert inst.kind.value == kind
        bars = collect(feed, 60.0, until=lambda b: sum(x.ts_ms >= feed.live_from_ms for x in b) >= 2 * len(SYMS))
        for sym in SYMS:
            assert_exact(fake, bars, sym, market)
            assert any(b.ts_ms >= feed.live_from_ms for b in bars if b.symbol == sym), "no live bar"
        assert feed.health(time.time()) == FeedHealth.HEALTHY
    finally:
        feed.stop()
    paths = rest_paths(fake)
    if fake.name == "binance":
        assert paths <= ({"/api/v3/exchangeInfo", "/api/v3/klines"} if kind == "spot"
                         else {"/fapi/v1/exchangeInfo", "/fapi/v1/klines"})
    else:
        assert paths <= {"/v5/market/instruments-info", "/v5/market/kline"}
        cats = {r.query.get("category") for r in fake.rest_requests("/v5/market/kline")}
        assert cats == {market}
    ws_paths = {r.path for r in fake.requests if r.port == fake.ws_port}
    if ws:
        assert ws_paths, "no websocket connection"
        if fake.name == "binance":
            assert all(p.startswith("/stream/" if kind == "spot" else "/fstream/") for p in ws_paths), ws_paths
        else:
            assert ws_paths == {f"/stream/v5/public/{market}"}
    else:
        assert not ws_paths


@pytest.mark.parametrize("kind", ["spot", "perp"])
def test_ws_drop_reconnects_and_backfills_exactly(fake, kind):
    market = "linear" if kind == "perp" else "spot"
    feed = make_feed(fake, kind, True)
    feed.start(fake.clock())
    try:
        bars = collect(feed, 1.5)
        before = fake.ws_connections
        fake.drop_ws(down_s=2.2)  # > 2 bars of the market clock with the sockets down
        seen_degraded = False
        end = time.time() + 60  # an upper bound on an event wait, not a window
        while time.time() < end:
            bars.extend(feed.poll(time.time()))
            seen_degraded |= feed.health(time.time()) == FeedHealth.DEGRADED
            if seen_degraded and feed.state == "ok" and feed.stats["backfilled_bars"] >= len(SYMS):
                break
            time.sleep(0.05)
        bars.extend(collect(feed, 1.5))
        assert seen_degraded and fake.ws_connections > before
        assert feed.stats["backfilled_bars"] >= len(SYMS)
        for sym in SYMS:
            assert_exact(fake, bars, sym, market)
        assert feed.health(time.time()) == FeedHealth.HEALTHY
    finally:
        feed.stop()


def test_bybit_ws_ping_is_answered_and_subscriptions_acked():
    """ccxt pings Bybit with {"op":"ping"}; the fake's pong keeps the socket alive past 3 keepalives."""
    with FakeBybit({"BTC/USDT": 65000.0}, max_lifetime_s=60.0, time_scale=SCALE) as fake:
        feed = make_feed(fake, "perp", True, symbols=("BTC/USDT",), exchange_options={"ws": {"keepAlive": 300}})
        feed.start(fake.clock())
        try:
            bars = collect(feed, 2.5)  # > 3 x keepAlive: without pongs ccxt would drop the socket
            assert feed.stats["network_errors"] == 0 and fake.ws_connections == 1
            assert_exact(fake, bars, "BTC/USDT", "linear")
        finally:
            feed.stop()
        ops = [m.get("op") for m in fake.ws_received]
        assert "ping" in ops and "subscribe" in ops
        sub = next(m for m in fake.ws_received if m.get("op") == "subscribe")
        assert sub["args"] == ["kline.1.BTCUSDT"]


@pytest.mark.parametrize("exchange", ["binance", "bybit"])
def test_mainnet_by_default_testnet_only_when_asked(exchange):
    """No override, no sandbox: ccxt's mainnet hosts. sandbox=True: the testnet hosts (overrides still apply)."""
    import asyncio

    from prod_core.feeds.ccxt_rest import make_exchange

    def hosts(ex) -> set[str]:
        from urllib.parse import urlsplit

        out = set()
        for v in ex.urls["api"].values():
            for u in (v.values() if isinstance(v, dict) else [v]):
                if isinstance(u, str):
                    out.add(urlsplit(u.replace("{hostname}", ex.hostname or "")).hostname)
                elif isinstance(u, dict):
                    out |= {urlsplit(x.replace("{hostname}", ex.hostname or "")).hostname
                            for x in u.values() if isinstance(x, str)}
        return out

    async def go():
        mainnet = make_exchange(exchange, pro=True, symbols=("BTC/USDT", "BTC/USDT:USDT"))
        testnet = make_exchange(exchange, pro=True, symbols=("BTC/USDT:USDT",), sandbox=True)
        fake = make_exchange(exchange, pro=True, symbols=("BTC/USDT:USDT",), sandbox=True,
                             api_url="http://127.0.0.1:1", ws_url="ws://127.0.0.1:2")
        try:
            return hosts(mainnet), hosts(testnet), hosts(fake)
        finally:
            for ex in (mainnet, testnet, fake):
                await ex.close()

    main, test, fake = asyncio.run(go())
    assert not any("test" in h for h in main), main
    assert "fapi.binance.com" in main if exchange == "binance" else {"api.bybit.com", "stream.bybit.com"} <= main
    assert any("test" in h for h in test), test
    assert fake == {"127.0.0.1"}
