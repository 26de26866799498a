"""Outages on both exchanges (real ccxt client, REST and websocket, Binance and Bybit fakes with
the market clock 60x): a 60 s exchange outage and a burst of HTTP 500s leave the delivered
series exact and contiguous, the feed degraded meanwhile and healthy after."""

from __future__ import annotations

import time

import pytest

from prod_core.feeds.base import FeedHealth
from tests.feeds.test_exchanges_e2e import SYMS, assert_exact, collect, fake, make_feed  # noqa: F401 (fixture)

KLINES = {"binance": "/api/v3/klines", "bybit": "/v5/market/kline"}


@pytest.mark.parametrize("ws", [False, True], ids=["rest", "ws"])
def test_a_60s_outage_is_backfilled_exactly(fake, ws):  # noqa: F811 (the shared fixture)
    """The exchange is silent for 90 market seconds (no bars, no frames): degraded, then the gap is
    delivered exactly once it answers again."""
    feed = make_feed(fake, "spot", ws, stale_after_s=600.0)
    feed.start(fake.clock())
    try:
        bars = collect(feed, 1.0)
        fake.set_silent(True)
        silent_at = fake.clock()
        seen_degraded = False
        while fake.clock() - silent_at < 90.0:
            bars.extend(feed.poll(time.time()))
            seen_degraded |= feed.health(fake.clock()) == FeedHealth.DEGRADED
            time.sleep(0.02)
        fake.set_silent(False)
        resumed_at = fake.clock()
        end = time.time() + 60  # an upper bound on an event wait, not a window
        while time.time() < end:
            bars.extend(feed.poll(time.time()))
            if all(max((b.ts_ms for b in bars if b.symbol == s), default=0) / 1000.0 > resumed_at + 60
                   for s in SYMS) and feed.health(fake.clock()) == FeedHealth.HEALTHY:
                break
            time.sleep(0.05)
        assert seen_degraded, "a 90 s silence never degraded the feed"
        for sym in SYMS:
            assert_exact(fake, bars, sym, "spot")
            assert max(b.ts_ms for b in bars if b.symbol == sym) / 1000.0 > resumed_at + 60, "no bar after the outage"
        assert feed.health(fake.clock()) == FeedHealth.HEALTHY
    finally:
        feed.stop()


def test_http_500s_back_off_and_lose_nothing(fake):  # noqa: F811 (the shared fixture)
    """Five HTTP 500 answers in a row on the candles endpoint: the REST feed backs off and retries,
    and the series stays exact and contiguous."""
    feed = make_feed(fake, "spot", False)
    feed.start(fake.clock())
    try:
        bars = collect(feed, 1.0)
        fake.fail(500, count=5, path=KLINES[fake.name])
        failed_at = fake.clock()
        end = time.time() + 60  # an upper bound on an event wait, not a window
        while time.time() < end:
            bars.extend(feed.poll(time.time()))
            if feed.stats["network_errors"] + feed.stats["other_errors"] >= 5 and all(
                    max((b.ts_ms for b in bars if b.symbol == s), default=0) / 1000.0 > failed_at + 60 for s in SYMS):
                break
            time.sleep(0.05)
        assert feed.stats["network_errors"] + feed.stats["other_errors"] >= 5, feed.stats
        for sym in SYMS:
            assert_exact(fake, bars, sym, "spot")
    finally:
        feed.stop()
