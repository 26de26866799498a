"""Rate limits and IP bans, each exchange's way: the feed sends no request before the wait ends.

Binance: HTTP 429 + Retry-After (slow down), HTTP 418 + Retry-After (IP ban).
Bybit: retCode 10006 + X-Bapi-Limit-Reset-Timestamp (slow down), HTTP 403 "access too
frequent" (IP ban; no header, so the feed waits ``ban_s``). Proven from the fake's request
log: the first request after the failing one comes no earlier than the announced end.
"""

from __future__ import annotations

import time

import pytest

from prod_core.feeds.base import FeedHealth
from prod_core.testing.fake_bybit import FakeBybit
from prod_core.testing.fake_exchange import FakeBinance
from tests.feeds.test_exchanges_e2e import SCALE, assert_exact, collect, make_feed

CASES = [
    # exchange, injected status, Retry-After / reset (s), feed ban_s, expected wait (s), log word
    ("binance", 429, 1.5, None, 1.5, "rate_limited"),
    ("binance", 418, 2.0, None, 2.0, "banned"),
    ("binance", 418, None, 1.8, 1.8, "banned"),  # a ban without Retry-After: the configured ban length
    ("bybit", 10006, 1.5, None, 1.5, "rate_limited"),
    ("bybit", 403, None, 2.0, 2.0, "banned"),
]
KLINES = {"binance": "/fapi/v1/klines", "bybit": "/v5/market/kline"}


@pytest.mark.parametrize(("exchange", "status", "retry_after", "ban_s", "wait_s", "word"), CASES,
                         ids=[f"{c[0]}-{c[1]}-{'hdr' if c[2] else 'default'}" for c in CASES])
def test_rate_limit_is_honoured_and_counted(caplog, exchange, status, retry_after, ban_s, wait_s, word):
    cls = {"binance": FakeBinance, "bybit": FakeBybit}[exchange]
    with cls({"BTC/USDT": 65000.0}, max_lifetime_s=180.0, time_scale=SCALE) as fake:
        feed = make_feed(fake, "perp", False, symbols=("BTC/USDT",), ban_s=ban_s)
        feed.start(fake.clock())
        try:
            bars = collect(feed, 1.2)
            assert feed.rate_limited == 0
            fake.fail(status, count=1, path=KLINES[exchange], retry_after=retry_after)
            degraded = False
            end = time.time() + wait_s + 60  # an upper bound on an event wait, not a window
            while time.time() < end:
                bars.extend(feed.poll(time.time()))
                degraded |= feed.health(time.time()) == FeedHealth.DEGRADED
                if feed.rate_limited and feed.state == "ok" and feed.blocked_until_s < time.time() - 1.2:
                    break
                time.sleep(0.05)
            bars.extend(collect(feed, 1.2))
            assert feed.rate_limited == 1
            assert degraded, "health stayed 1 while rate limited"
            assert_exact(fake, bars, "BTC/USDT", "linear")  # the wait was backfilled exactly
        finally:
            feed.stop()
        reqs = fake.rest_requests()
    [failed] = [r for r in reqs if r.injected]
    after = [r.ts for r in reqs if r.ts > failed.ts]
    assert after, "the feed never came back"
    assert min(after) >= failed.ts + wait_s - 0.02, (min(after) - failed.ts, wait_s)
    assert min(after) <= failed.ts + wait_s + 1.5  # and it did not wait much longer than asked
    assert any(word in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]


def test_feed_rate_limited_total_is_exported_per_feed():
    """``LiveMetrics.feed_rate_limited`` (the runner copies ``feed.rate_limited``) -> feed_rate_limited_total{feed}."""
    from prometheus_client import CollectorRegistry, generate_latest

    from prod_core.telemetry import LiveMetrics
    from prod_core.telemetry.exporter import TelemetryCollector

    live = LiveMetrics(feeds=["ccxt"], symbols=["BTC/USDT"], strategies=["s"])
    registry = CollectorRegistry()
    registry.register(TelemetryCollector(live))
    assert 'feed_rate_limited_total{feed="ccxt"} 0.0' in generate_latest(registry).decode()
    live.feed_rate_limited["ccxt"] = 3
    assert 'feed_rate_limited_total{feed="ccxt"} 3.0' in generate_latest(registry).decode()
