"""What retrying cannot fix fails fast at start with one line naming the setting; after start it degrades."""

from __future__ import annotations

import logging
import time

import pytest

from prod_core.feeds.base import FeedHealth
from prod_core.feeds.ccxt_rest import FeedFatalError
from prod_core.testing.fake_bybit import FakeBybit
from prod_core.testing.fake_exchange import FakeBinance
from tests.feeds.test_exchanges_e2e import SCALE, assert_exact, collect, make_feed

FAKES = {"binance": FakeBinance, "bybit": FakeBybit}
KLINES = {"binance": "/fapi/v1/klines", "bybit": "/v5/market/kline"}


@pytest.fixture(params=["binance", "bybit"])
def fake(request):
    with FAKES[request.param]({"BTC/USDT": 65000.0}, max_lifetime_s=180.0, time_scale=SCALE) as server:
        yield server


def start_fails(feed, fake, match):
    t0 = time.time()
    with pytest.raises(FeedFatalError, match=match) as err:
        feed.start(fake.clock())
    assert time.time() - t0 < 3, "a fatal error must not be retried"
    assert "\n" not in str(err.value)
    assert feed.health(time.time()) == FeedHealth.PAUSED
    feed.stop()
    return str(err.value)


@pytest.mark.parametrize("ws", [False, True], ids=["rest", "ws"])
def test_timeframe_the_exchange_lacks_fails_at_start(fake, ws):
    """7m is in no exchange's ccxt timeframes: refused before any candle request."""
    feed = make_feed(fake, "spot", ws, symbols=("BTC/USDT",), timeframe="7m")
    start_fails(feed, fake, r"exchange\.timeframe '7m' is not offered by .*fix configs/symbols.yaml")
    assert not fake.rest_requests(KLINES[fake.name]) and not fake.rest_requests("/api/v3/klines")


def test_binance_futures_invalid_interval_fails_at_start():
    """ccxt lists 1s for binance, but USDT-M futures answer -1120 Invalid interval: fatal, not retried."""
    with FakeBinance({"BTC/USDT": 65000.0}, max_lifetime_s=180.0) as fake:
        from prod_core.feeds.ccxt_rest import CcxtRestFeed

        feed = CcxtRestFeed("binance", ("BTC/USDT",), "1s", api_url=fake.url, market_symbols={"BTC/USDT": "BTC/USDT:USDT"},
                            start_timeout_s=10.0, timeout_ms=3000, history_bars=5)
        msg = start_fails(feed, fake, r"-1120.*Invalid interval.*exchange\.timeframe")
        assert "BadRequest" in msg
        assert len(fake.rest_requests("/fapi/v1/klines")) == 1


@pytest.mark.parametrize("ws", [False, True], ids=["rest", "ws"])
def test_unknown_symbol_fails_at_start(fake, ws):
    feed = make_feed(fake, "perp", ws, symbols=("BTC/USDT", "NOPE/USDT"))
    start_fails(feed, fake, r"NOPE/USDT \(NOPE/USDT:USDT\) is not listed on .*symbols\[\]\.symbol")


def test_bybit_auth_error_fails_at_start():
    with FakeBybit({"BTC/USDT": 65000.0}, max_lifetime_s=180.0, time_scale=SCALE) as fake:
        fake.fail(10003, count=5, path="/v5/market/instruments-info")
        feed = make_feed(fake, "spot", False, symbols=("BTC/USDT",))
        start_fails(feed, fake, r"AuthenticationError.*EXCHANGE_API_KEY")
        assert len(fake.rest_requests("/v5/market/instruments-info")) == 1


def test_fatal_error_after_start_degrades_with_one_log_line(fake, caplog):
    """A fatal answer while running: health 0, one ERROR line, poll keeps working (no exception), no retry loop."""
    caplog.set_level(logging.INFO, logger="prod_core.feeds")
    feed = make_feed(fake, "perp", False, symbols=("BTC/USDT",))
    feed.start(fake.clock())
    try:
        collect(feed, 1.0)
        fake.fail(10001 if fake.name == "bybit" else 400, count=100, path=KLINES[fake.name])
        end = time.time() + 60  # an upper bound on an event wait, not a window
        while feed.state != "failed" and time.time() < end:
            feed.poll(time.time())
            time.sleep(0.05)
        assert feed.state == "failed" and feed.health(time.time()) == FeedHealth.DEGRADED
        n = len(fake.rest_requests(KLINES[fake.name]))
        collect(feed, 1.0)  # poll does not raise; nothing is retried
        assert len(fake.rest_requests(KLINES[fake.name])) == n
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and "health 0" in errors[0] and ("BadRequest" in errors[0] or "BadSymbol" in errors[0]), errors
    finally:
        feed.stop()
    assert feed.health(time.time()) == FeedHealth.DEGRADED  # stays visible until an operator restarts it


def test_ws_feed_fatal_error_after_start_degrades(fake, caplog):
    """A ws reconnect backfills over REST; a fatal answer there degrades the feed instead of looping."""
    caplog.set_level(logging.INFO, logger="prod_core.feeds")
    feed = make_feed(fake, "perp", True, symbols=("BTC/USDT",))
    feed.start(fake.clock())
    try:
        collect(feed, 1.0)
        fake.fail(10001 if fake.name == "bybit" else 400, count=100, path=KLINES[fake.name])
        fake.drop_ws(down_s=1.2)  # > 1 bar missed: the reconnect must backfill over REST
        end = time.time() + 60  # an upper bound on an event wait, not a window
        while feed.state != "failed" and time.time() < end:
            feed.poll(time.time())
            time.sleep(0.05)
        assert feed.state == "failed" and feed.health(time.time()) == FeedHealth.DEGRADED
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and "health 0" in errors[0], errors
    finally:
        feed.stop()


def test_restart_after_a_fatal_error_degrades_until_fixed_then_backfills_exactly(fake):
    """restart-feed while the exchange still refuses: FeedFatalError, health 0; once fixed: the gap is backfilled."""
    feed = make_feed(fake, "perp", False, symbols=("BTC/USDT",))
    feed.start(fake.clock())
    try:
        bars = collect(feed, 1.0)
        fake.fail(10001 if fake.name == "bybit" else 400, count=100, path=KLINES[fake.name])
        end = time.time() + 60  # an upper bound on an event wait, not a window
        while feed.state != "failed" and time.time() < end:
            bars.extend(feed.poll(time.time()))
            time.sleep(0.05)
        with pytest.raises(FeedFatalError):
            feed.restart()
        assert feed.state == "failed" and feed.health(time.time()) == FeedHealth.DEGRADED
        collect(feed, 1.2)  # bars close while the feed is down
        fake.clear_failures()
        feed.restart()
        bars.extend(collect(feed, 1.5))
        assert feed.state == "ok"
        assert_exact(fake, bars, "BTC/USDT", "linear")  # nothing missing or doubled across the outage
    finally:
        feed.stop()
