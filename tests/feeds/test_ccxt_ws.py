"""The ccxt.pro websocket feed with the real ccxt client against a local fake Binance (127.0.0.1 only)."""

from __future__ import annotations

import random
import time

import pytest

from prod_core.feeds.base import Feed, FeedHealth
from prod_core.feeds.ccxt_rest import Backoff, FeedFatalError
from prod_core.feeds.ccxt_ws import CcxtWsFeed
from prod_core.testing.fake_exchange import running_fake
from tests.feeds.test_ccxt_rest import assert_exact, collect, wait_healthy

SYMS = ("BTC/USDT", "ETH/USDT")
PUBLIC = {"/api/v3/exchangeInfo", "/api/v3/klines", "/api/v3/ticker/24hr", "/api/v3/depth"}


@pytest.fixture
def fake():
    with running_fake({"BTC/USDT": 65000.0, "ETH/USDT": 3400.0}, max_lifetime_s=90.0) as server:
        yield server


def make_feed(fake, symbols=SYMS, **kw) -> CcxtWsFeed:
    kw.setdefault("history_bars", 5)
    kw.setdefault("stale_after_s", 2.0)
    kw.setdefault("backoff", Backoff(base_s=0.1, max_s=0.8, jitter=0.2, rng=random.Random(3)))
    return CcxtWsFeed("binance", symbols, "1s", api_url=fake.url, ws_url=fake.ws_url, enable_rate_limit=False,
                      start_timeout_s=10.0, timeout_ms=3000, **kw)


def test_stream_delivers_exact_closed_bars_trades_and_books(fake):
    feed = make_feed(fake, trades=True, books=True)
    assert isinstance(feed, Feed)
    feed.start(time.time())
    try:
        assert feed.instruments()["ETH/USDT"].price_tick == 0.01
        bars = collect(feed, 2.2)
        for sym in SYMS:
            assert_exact(fake, bars, sym)
            assert [b for b in bars if b.symbol == sym][-1].ts_ms + 1000 <= time.time() * 1000
        assert feed.health(time.time()) == FeedHealth.HEALTHY
        # live bars came from the stream, not from REST polling
        klines = fake.count("/api/v3/klines")
        assert klines <= 4 * len(SYMS), (klines, feed.stats)
        book = feed.top_of_book("BTC/USDT")
        assert book is not None and book["bid"] < book["ask"]
        trade = feed.trade("ETH/USDT")
        assert trade is not None and trade["price"] > 0 and trade["side"] in ("buy", "sell")
    finally:
        feed.stop()
    bars.extend(feed.poll(time.time()))  # bars queued after the collection ended; none can follow a stop
    assert feed.stats["bars"] == len(bars)
    assert feed.health(time.time()) == FeedHealth.PAUSED
    paths = set(fake.paths())
    assert {p for p in paths if not p.startswith("/stream/")} <= PUBLIC
    assert any(p.startswith("/stream/ws") for p in paths)


def test_dropped_socket_reconnects_and_backfills_the_gap_exactly(fake):
    # staleness threshold above the outage: the gap is filled by the reconnect path, not the watchdog
    feed = make_feed(fake, stale_after_s=6.0)
    feed.start(time.time())
    try:
        bars = collect(feed, 1.0)
        before = fake.ws_connections
        fake.drop_ws(down_s=1.5)  # sockets closed, new ones refused (HTTP 503) for 1.5 s
        seen_degraded = False
        end = time.time() + 60  # an upper bound on an event wait, not a window
        while time.time() < end:
            bars.extend(feed.poll(time.time()))
            seen_degraded |= feed.health(time.time()) == FeedHealth.DEGRADED
            if seen_degraded and feed.state == "ok" and feed.stats["backfilled_bars"] >= len(SYMS):
                break
            time.sleep(0.05)
        bars.extend(collect(feed, 1.1))
        assert seen_degraded
        assert fake.ws_connections > before
        assert feed.stats["network_errors"] >= 2 and feed.stats["reconnects"] >= 1
        assert feed.stats["backfilled_bars"] >= len(SYMS)  # >= 1 s of 1 s bars per symbol
        for sym in SYMS:
            assert_exact(fake, bars, sym)  # no missing, no duplicate, no partial bar
        assert feed.health(time.time()) == FeedHealth.HEALTHY
    finally:
        feed.stop()


def test_silent_stream_turns_health_to_zero_and_back(fake):
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
        bars.extend(collect(feed, 1.2))
        for sym in SYMS:
            assert_exact(fake, bars, sym)
    finally:
        feed.stop()


def test_bad_symbol_fails_fast_with_a_clear_message(fake):
    feed = make_feed(fake, symbols=("BTC/USDT", "NOPE/USDT"))
    t0 = time.time()
    with pytest.raises(FeedFatalError, match=r"NOPE/USDT.*not listed on binance"):
        feed.start(t0)
    assert time.time() - t0 < 3
    feed.stop()
    assert not any(p.startswith("/stream") for p in fake.paths())


def test_restart_resumes_without_duplicates(fake):
    feed = make_feed(fake, symbols=("BTC/USDT",))
    feed.start(time.time())
    try:
        bars = collect(feed, 1.0)
        feed.restart()
        bars.extend(collect(feed, 1.2))
        assert_exact(fake, bars, "BTC/USDT")
    finally:
        feed.stop()
