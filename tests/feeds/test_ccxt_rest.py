"""The ccxt REST feed with the real ccxt client against a local fake Binance (127.0.0.1 only)."""

from __future__ import annotations

import random
import time

import pytest

from prod_core.feeds.base import Feed, FeedHealth
from prod_core.feeds.ccxt_rest import Backoff, CcxtRestFeed, FeedFatalError, classify_error, rewrite_urls
from prod_core.testing.fake_exchange import running_fake

TF_MS = 1000
ORDER_PATHS = ("/api/v3/order", "/api/v3/order/test", "/api/v3/orderList", "/sapi/v1/margin/order", "/fapi/v1/order")


@pytest.fixture
def fake():
    with running_fake({"BTC/USDT": 65000.0, "ETH/USDT": 3400.0}, max_lifetime_s=90.0) as server:
        yield server


def make_feed(fake, symbols=("BTC/USDT", "ETH/USDT"), **kw) -> CcxtRestFeed:
    kw.setdefault("history_bars", 5)
    kw.setdefault("stale_after_s", 2.0)
    kw.setdefault("backoff", Backoff(base_s=0.1, max_s=1.0, jitter=0.2, rng=random.Random(7)))
    return CcxtRestFeed("binance", symbols, "1s", api_url=fake.url, enable_rate_limit=False,
                        start_timeout_s=10.0, timeout_ms=3000, **kw)


def collect(feed, seconds: float, until=None) -> list:
    bars = []
    end = time.time() + seconds
    while time.time() < end:
        bars.extend(feed.poll(time.time()))
        if until is not None and until(bars):
            break
        time.sleep(0.05)
    return bars


def wait_healthy(feed, bars: list, timeout_s: float = 60.0) -> bool:
    """Poll into ``bars`` until a live bar has arrived and health is 1 (False on timeout).

    Waited for, not assumed after a fixed sleep: the first live bar lands up to one bar plus
    the poll lag after start, which is right at a 1.2 s staleness threshold for 1 s bars.
    """
    end = time.time() + timeout_s
    while time.time() < end:
        bars.extend(feed.poll(time.time()))
        if any(b.ts_ms >= feed.live_from_ms for b in bars) and feed.health(time.time()) == FeedHealth.HEALTHY:
            return True
        time.sleep(0.05)
    return False


def assert_exact(fake, bars, symbol):
    """Contiguous closed bars with the exact final values: nothing missing, doubled or forming."""
    mine = [b for b in bars if b.symbol == symbol]
    assert mine, f"no bars for {symbol}"
    ts = [b.ts_ms for b in mine]
    assert ts == list(range(ts[0], ts[-1] + TF_MS, TF_MS)), "missing or doubled bars"
    for b in mine:
        assert [b.ts_ms, b.open, b.high, b.low, b.close, b.volume] == fake.candle(symbol, b.ts_ms, TF_MS)


def test_markets_history_and_closed_bars(fake):
    feed = make_feed(fake)
    assert isinstance(feed, Feed)
    t0 = time.time()
    feed.start(t0)
    try:
        inst = feed.instruments()["BTC/USDT"]
        assert (inst.price_tick, inst.qty_step, inst.min_qty, inst.min_notional_usd) == (0.01, 1e-05, 1e-05, 5.0)
        assert feed.fees()["BTC/USDT"][1] > 0
        bars = collect(feed, 2.0)
        for sym in ("BTC/USDT", "ETH/USDT"):
            assert_exact(fake, bars, sym)
            mine = [b for b in bars if b.symbol == sym]
            # 5 warm-up bars, minus any that closed after start() (those are live)
            assert 1 <= sum(b.ts_ms < feed.live_from_ms for b in mine) <= 5
            assert mine[-1].ts_ms + TF_MS <= time.time() * 1000  # never a forming bar
        assert feed.health(time.time()) == FeedHealth.HEALTHY
        snap = feed.ticker("BTC/USDT")
        assert snap["bid"] < snap["ask"]
        book = feed.order_book("ETH/USDT", 5)
        assert book["bids"][0][0] < book["asks"][0][0]
    finally:
        feed.stop()
    assert feed.health(time.time()) == FeedHealth.PAUSED
    assert set(fake.paths()) <= {"/api/v3/exchangeInfo", "/api/v3/klines", "/api/v3/ticker/24hr", "/api/v3/depth"}


def test_silent_exchange_turns_health_to_zero_and_back(fake):
    feed = make_feed(fake, stale_after_s=1.2)
    feed.start(time.time())
    try:
        bars = []
        assert wait_healthy(feed, bars), feed.stats
        fake.set_silent(True)
        silent_at = time.time()
        while feed.health(time.time()) != FeedHealth.DEGRADED:
            bars.extend(feed.poll(time.time()))
            assert time.time() - silent_at < 1.2 + 1.0, "health did not drop within the staleness threshold"
            time.sleep(0.05)
        fake.set_silent(False)
        back_at = time.time()
        while feed.health(time.time()) != FeedHealth.HEALTHY:
            bars.extend(feed.poll(time.time()))
            assert time.time() - back_at < 3.0, "health did not recover"
            time.sleep(0.05)
        bars.extend(collect(feed, 1.1))
        for sym in ("BTC/USDT", "ETH/USDT"):
            assert_exact(fake, bars, sym)  # the silent stretch was backfilled exactly
    finally:
        feed.stop()


def test_rate_limit_and_server_errors_back_off(fake):
    feed = make_feed(fake, symbols=("BTC/USDT",))
    feed.start(time.time())
    try:
        collect(feed, 1.0)
        fake.fail(429, count=2, path="/api/v3/klines")
        fake.fail(503, count=2, path="/api/v3/klines")
        bars = collect(feed, 60.0, until=lambda b: feed.stats["rate_limited"] + feed.stats["network_errors"] >= 4
                       and feed.state == "ok" and len(b) >= 1)
        assert feed.stats["rate_limited"] == 2 and feed.stats["network_errors"] == 2
        failed = [r.ts for r in fake.requests if r.path == "/api/v3/klines"]
        gaps = [b - a for a, b in zip(failed, failed[1:])]
        # exponential: the waits after the failures grow (0.1, 0.2, 0.4, 0.8 s minus jitter)
        tail = gaps[-4:]
        assert tail[-1] > tail[0] * 2.5, gaps
        bars.extend(collect(feed, 1.1))
        assert_exact(fake, bars, "BTC/USDT")
        assert feed.health(time.time()) == FeedHealth.HEALTHY
    finally:
        feed.stop()


def test_degraded_while_rate_limited(fake):
    feed = make_feed(fake, symbols=("BTC/USDT",), backoff=Backoff(base_s=0.6, max_s=0.6, jitter=0.0))
    feed.start(time.time())
    try:
        fake.fail(429, count=2, path="/api/v3/klines")
        end = time.time() + 60  # an upper bound on an event wait, not a window
        seen = set()
        while time.time() < end and not ("rate_limited" in seen and feed.state == "ok"):
            seen.add(feed.state)
            if feed.state == "rate_limited":
                assert feed.health(time.time()) == FeedHealth.DEGRADED
            feed.poll(time.time())
            time.sleep(0.05)
        assert "rate_limited" in seen and feed.state == "ok"
    finally:
        feed.stop()


def test_bad_symbol_fails_fast_with_a_clear_message(fake):
    feed = make_feed(fake, symbols=("BTC/USDT", "DOGE/USDT"))
    t0 = time.time()
    with pytest.raises(FeedFatalError, match=r"DOGE/USDT.*not listed on binance"):
        feed.start(t0)
    assert time.time() - t0 < 3
    assert feed.health(time.time()) == FeedHealth.PAUSED
    feed.stop()


def test_markets_load_retries_through_server_errors(fake):
    fake.fail(503, count=2, path="/api/v3/exchangeInfo")
    feed = make_feed(fake, symbols=("BTC/USDT",))
    feed.start(time.time())
    try:
        assert feed.state == "ok" and feed.stats["network_errors"] == 2
        assert fake.count("/api/v3/exchangeInfo") == 3
    finally:
        feed.stop()


def test_restart_backfills_without_duplicates(fake):
    feed = make_feed(fake, symbols=("BTC/USDT",))
    feed.start(time.time())
    try:
        bars = collect(feed, 0.8)
        feed.stop()
        time.sleep(1.1)  # bars close while the feed is down
        feed.restart()
        bars.extend(collect(feed, 1.1))
        assert_exact(fake, bars, "BTC/USDT")
        assert feed.stats["reconnects"] == 1
    finally:
        feed.stop()


def test_classify_error():
    import ccxt

    assert classify_error(ccxt.RateLimitExceeded("x")) == "rate_limit"
    assert classify_error(ccxt.DDoSProtection("x")) == "rate_limit"
    assert classify_error(ccxt.ExchangeNotAvailable("x")) == "network"
    assert classify_error(ccxt.RequestTimeout("x")) == "network"
    assert classify_error(ccxt.AuthenticationError("x")) == "fatal"
    assert classify_error(ccxt.BadSymbol("x")) == "fatal"
    assert classify_error(ccxt.PermissionDenied("x")) == "fatal"
    # retrying an invalid interval or parameter cannot fix it (Binance -1120, Bybit 10001)
    assert classify_error(ccxt.BadRequest("binance {\"code\":-1120,\"msg\":\"Invalid interval.\"}")) == "fatal"
    assert classify_error(ccxt.ExchangeError("x")) == "other"


def test_backoff_grows_with_jitter_and_caps():
    b = Backoff(base_s=1.0, max_s=8.0, factor=2.0, jitter=0.5, rng=random.Random(1))
    delays = [b.next() for _ in range(6)]
    for d, nominal in zip(delays, (1, 2, 4, 8, 8, 8)):
        assert nominal * 0.5 <= d <= nominal
    b.reset()
    assert b.next() <= 1.0


def test_rewrite_urls_keeps_paths_and_sets_rest_and_ws_hosts_separately():
    """api_url replaces only REST hosts; ws_url only websocket hosts (host label kept as a path prefix)."""
    urls = {"public": "https://api.binance.com/api/v3", "fapiPublic": "https://fapi.binance.com/fapi/v1",
            "ws": {"spot": "wss://stream.binance.com:9443/ws", "linear": "wss://fstream.binance.com/ws",
                   "ws-api": {"spot": "wss://ws-api.binance.com:443/ws-api/v3"}}}
    rewrite_urls(urls, "http://127.0.0.1:8080")
    assert urls["public"] == "http://127.0.0.1:8080/api/v3"
    assert urls["fapiPublic"] == "http://127.0.0.1:8080/fapi/v1"
    assert urls["ws"]["spot"] == "wss://stream.binance.com:9443/ws"  # no ws_url: ccxt's own
    rewrite_urls(urls, None, "ws://127.0.0.1:9090")
    assert urls["public"] == "http://127.0.0.1:8080/api/v3"
    assert urls["ws"]["spot"] == "ws://127.0.0.1:9090/stream/ws"  # '/stream' keeps it a spot stream for ccxt
    assert urls["ws"]["linear"] == "ws://127.0.0.1:9090/fstream/ws"  # and no '/stream': a contract stream
    assert urls["ws"]["ws-api"]["spot"] == "ws://127.0.0.1:9090/ws-api/ws-api/v3"
    bybit = {"public": "https://api.{hostname}", "ws": {"public": {
        "spot": "wss://stream.{hostname}/v5/public/spot", "linear": "wss://stream.{hostname}/v5/public/linear"}}}
    rewrite_urls(bybit, "http://127.0.0.1:1", "ws://127.0.0.1:2")
    assert bybit["public"] == "http://127.0.0.1:1"
    assert bybit["ws"]["public"] == {"spot": "ws://127.0.0.1:2/stream/v5/public/spot",
                                     "linear": "ws://127.0.0.1:2/stream/v5/public/linear"}


def test_sandbox_urls_can_be_overridden_too(fake):
    import asyncio

    from prod_core.feeds.ccxt_rest import make_exchange

    async def go():
        ex = make_exchange("binance", sandbox=True, api_url=fake.url, enable_rate_limit=False, symbols=("BTC/USDT",))
        try:
            assert ex.urls["api"]["public"] == fake.url + "/api/v3"
            markets = await ex.load_markets()
            return markets["BTC/USDT"]["precision"]["price"], await ex.fetch_ohlcv("BTC/USDT", "1s", limit=2)
        finally:
            await ex.close()

    tick, rows = asyncio.run(go())
    assert tick == 0.01 and len(rows) == 2
    assert set(fake.paths()) == {"/api/v3/exchangeInfo", "/api/v3/klines"}


def test_factory_builds_ccxt_feeds_from_config(tmp_path):
    from pathlib import Path

    from pydantic import SecretStr

    from prod_core.configs import ConfigLoader, load_settings
    from prod_core.feeds.ccxt_ws import CcxtWsFeed
    from prod_core.feeds.factory import build_feed, exchange_kwargs

    repo = Path(__file__).resolve().parents[2]
    symbols = ConfigLoader(repo / "configs").load_symbols()
    assert symbols.exchange.sandbox is False  # paper decisions use mainnet public data by default
    symbols = symbols.model_copy(update={"exchange": symbols.exchange.model_copy(
        update={"api_url": "http://127.0.0.1:9", "ws_url": "ws://127.0.0.1:10", "timeframe": "5m"})})
    env = {"EXCHANGE_API_KEY": "k-123", "EXCHANGE_API_SECRET": "s-456"}
    for name, cls in (("ccxt", CcxtRestFeed), ("ccxt_ws", CcxtWsFeed)):
        settings = load_settings(flags={"feed": name}, environ=env, env_file=tmp_path / "none")
        feed = build_feed(settings, symbols, object(), 0.0)  # not started: no network
        assert isinstance(feed, cls) and feed.name == name
        assert feed.symbols == symbols.names and feed.timeframe == "5m"
        assert feed._ex_kwargs["api_url"] == "http://127.0.0.1:9"
        assert feed._ex_kwargs["ws_url"] == "ws://127.0.0.1:10"
        assert feed._ex_kwargs["enable_rate_limit"] is True  # ccxt's own limiter on in production
        # a perp is the linear contract; bars keep the configured name
        assert feed.market_symbols["BTC/USDT"] == "BTC/USDT:USDT" and feed.market_symbols["BNB/USDT"] == "BNB/USDT"
        assert "BTC/USDT:USDT" in feed._ex_kwargs["symbols"]
        # public market data needs no keys: they go only to a sandbox client
        assert feed._ex_kwargs["api_key"] is None and feed._ex_kwargs["secret"] is None
    sandbox = symbols.model_copy(update={"exchange": symbols.exchange.model_copy(update={"sandbox": True})})
    settings = load_settings(flags={"feed": "ccxt"}, environ=env, env_file=tmp_path / "none")
    assert exchange_kwargs(settings, sandbox)["api_key"] == "k-123"
    assert "k-123" not in repr(settings) and isinstance(settings.exchange_api_key, SecretStr)
