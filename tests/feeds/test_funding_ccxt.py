"""Funding rates of linear perps on the ccxt feeds: the real ccxt client's fetch_funding_rate_history
against the fakes (Binance /fapi/v1/fundingRate, Bybit /v5/market/funding/history).

The fakes' market clock starts shortly before a funding time and runs 600x faster (an hour
every 6 wall seconds), so a refresh after a funding time passes is seen within seconds; 1h
bars keep the candle traffic small. Tests wait for events, never for fixed times.
"""

from __future__ import annotations

import random
import time

import pytest

from prod_core.feeds.ccxt_rest import Backoff, CcxtRestFeed
from prod_core.feeds.ccxt_ws import CcxtWsFeed
from prod_core.feeds.funding import FundingRates, funding_instant, funding_times
from prod_core.testing.fake_bybit import FakeBybit
from prod_core.testing.fake_exchange import FakeBinance

FAKES = {"binance": FakeBinance, "bybit": FakeBybit}
FUNDING_PATH = {"binance": "/fapi/v1/fundingRate", "bybit": "/v5/market/funding/history"}
H8 = 8 * 3_600_000
DAY = 86_400_000
SCALE = 600.0


def next_funding_ms() -> int:
    return (int(time.time() * 1000) // H8 + 1) * H8


def start_fake(exchange: str, before_ms: int = 3_600_000, **kw):
    """A fake whose market clock reads ``before_ms`` before a funding time; returns (fake, that time)."""
    t = next_funding_ms()
    fake = FAKES[exchange]({"BTC/USDT": 65000.0, "ETH/USDT": 3400.0}, max_lifetime_s=180.0, time_scale=SCALE,
                           start_ms=t - before_ms, **kw).start()
    return fake, t


def make_feed(fake, symbols=("BTC/USDT", "ETH/USDT"), perps=("BTC/USDT", "ETH/USDT"), ws=False, **kw):
    kw.setdefault("history_bars", 2)
    kw.setdefault("stale_after_s", 36_000.0)
    kw.setdefault("backoff", Backoff(base_s=0.05, max_s=0.2, rng=random.Random(3)))
    kw.setdefault("funding_backoff", Backoff(base_s=0.05, max_s=0.2, rng=random.Random(4)))
    kw.setdefault("funding_poll_s", 0.05)
    kw.setdefault("funding", True)
    if not ws:
        kw.setdefault("max_poll_s", 0.2)
    cls = CcxtWsFeed if ws else CcxtRestFeed
    markets = {s: f"{s}:USDT" for s in perps}
    return cls(fake.name, symbols, "1h", api_url=fake.url, ws_url=fake.ws_url, market_symbols=markets,
               start_timeout_s=10.0, timeout_ms=3000, clock=fake.clock, **kw)


def wait_until(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"{what} not seen within {timeout} s")


@pytest.fixture(params=["binance", "bybit"])
def exchange(request):
    return request.param


def test_table_at_start_answers_the_settled_rate_at_each_8h_instant_of_the_last_day(exchange):
    """Binance stamps ...000/...001, here also a few ms late on Bybit: the table holds the exact instants."""
    fake, t = start_fake(exchange, funding_late_ms=lambda ts: 3 + (ts // H8) % 5)
    feed = make_feed(fake)
    try:
        now_ms = int(fake.clock() * 1000)
        feed.start(fake.clock())
        rates = feed.funding_rates()
        assert isinstance(rates, FundingRates)
        instants = list(funding_times(now_ms - DAY, now_ms, H8))
        assert len(instants) == 3
        wait_until(lambda: all(rates.rate(s, instants[-1]) is not None for s in feed.symbols), 60,
                   "the day's funding rates")
        for s in ("BTC/USDT", "ETH/USDT"):
            for ts in instants:
                assert rates.rate(s, ts) == fake.funding_rate_at(s, ts), (s, ts)
            assert [ts for ts, _ in rates.rows(s)] == instants  # exact multiples of 8 h, nothing else
            assert rates.rate(s, t) is None  # not settled yet
        assert feed.stats["funding_fetches"] == 2 and feed.stats["funding_errors"] == 0
        assert feed.health(fake.clock()) == 1
    finally:
        feed.stop()
        fake.stop()
    queries = [r.query for r in fake.rest_requests(FUNDING_PATH[exchange])]
    assert {q["symbol"] for q in queries} == {"BTCUSDT", "ETHUSDT"}
    if exchange == "bybit":
        assert all(q["category"] == "linear" and "endTime" in q for q in queries)


@pytest.mark.parametrize("ws", [False, True], ids=["rest", "ws"])
def test_refresh_after_a_funding_time_passes(exchange, ws):
    """The settlement at T is unknown before T and appears once the market clock passes T."""
    fake, t = start_fake(exchange, before_ms=3_600_000)
    feed = make_feed(fake, ws=ws)
    try:
        feed.start(fake.clock())
        rates = feed.funding_rates()
        wait_until(lambda: feed.stats["funding_fetches"] >= 2, 60, "the first funding fetch")
        assert rates.rate("BTC/USDT", t) is None and fake.clock() * 1000 < t
        wait_until(lambda: rates.rate("BTC/USDT", t) is not None and rates.rate("ETH/USDT", t) is not None,
                   60, "the refresh after the funding time")
        assert fake.clock() * 1000 >= t
        assert rates.rate("BTC/USDT", t) == fake.funding_rate_at("BTC/USDT", t)
        assert rates.rate("ETH/USDT", t) == fake.funding_rate_at("ETH/USDT", t)
        assert rates.last_ts("BTC/USDT") == t
        assert feed.funding_rates() is rates  # one object for the feed's life
        assert feed.stats["bars"] > 0 and feed.fatal_error is None
    finally:
        feed.stop()
        fake.stop()
    # after the funding time, it asks from just after the last known settlement
    queries = [r.query for r in fake.rest_requests(FUNDING_PATH[exchange]) if r.query["symbol"] == "BTCUSDT"]
    assert int(queries[-1]["startTime"]) == t - H8 + 1


def test_settlement_published_late_is_retried_with_backoff(exchange):
    """Stamped 55 s after the funding time (later than the feed's first ask): retried until it is in."""
    fake, t = start_fake(exchange, before_ms=1_800_000, funding_late_ms=55_000)
    # one sleep step is 0.01 wall s = 6 market s, and no ccxt throttle delay (50 ms = 30 market s):
    # the first ask comes a few market seconds after the funding time
    feed = make_feed(fake, symbols=("BTC/USDT",), perps=("BTC/USDT",), funding_settle_s=1.0, funding_poll_s=0.01,
                     enable_rate_limit=False)
    try:
        feed.start(fake.clock())
        rates = feed.funding_rates()
        wait_until(lambda: rates.rate("BTC/USDT", t) is not None, 60, "the late settlement")
        assert rates.rate("BTC/USDT", t) == fake.funding_rate_at("BTC/USDT", t)
        assert [ts for ts, _ in rates.rows("BTC/USDT")][-1] == t  # rounded down to the instant
    finally:
        feed.stop()
        fake.stop()
    after = [r for r in fake.rest_requests(FUNDING_PATH[exchange]) if int(r.query["startTime"]) == t - H8 + 1]
    assert len(after) >= 2  # asked before it was published, then again


def test_funding_failures_are_counted_and_never_stop_the_feed(exchange):
    """Server errors and a rate limit on the funding endpoint: retried (the ban honoured), bars go on."""
    fake, t = start_fake(exchange)
    path = FUNDING_PATH[exchange]
    fake.fail(500, count=2, path=path)
    fake.fail(429 if exchange == "binance" else 10006, count=1, path=path, retry_after=0.5)
    feed = make_feed(fake, symbols=("BTC/USDT",), perps=("BTC/USDT",))
    try:
        feed.start(fake.clock())
        rates = feed.funding_rates()
        last = t - H8
        wait_until(lambda: rates.rate("BTC/USDT", last) is not None, 60, "the funding table after failures")
        assert feed.stats["funding_errors"] == 3
        assert feed.stats["rate_limited"] == 1 and feed.stats["other_errors"] + feed.stats["network_errors"] == 2
        assert feed.fatal_error is None and feed.state in ("ok", "starting", "rate_limited")
    finally:
        feed.stop()
        fake.stop()
    served = [r for r in fake.rest_requests(path) if not r.injected]
    limited = [r for r in fake.rest_requests(path) if r.injected in (429, 10006)]
    assert served and limited and served[0].ts >= limited[0].ts + 0.45  # nothing before the announced end


def test_perp_feed_without_funding_opt_in_asks_for_none(exchange):
    """funding=False (the default): a perp feed calls only markets and klines, as before."""
    fake, _ = start_fake(exchange)
    feed = make_feed(fake, symbols=("BTC/USDT",), perps=("BTC/USDT",), funding=False)
    try:
        feed.start(fake.clock())
        assert feed.funding_rates() is None
        wait_until(lambda: feed.stats["bars"] > 0, 60, "perp bars")
    finally:
        feed.stop()
        fake.stop()
    assert fake.rest_requests(FUNDING_PATH[exchange]) == []


def test_spot_only_feed_has_no_funding_and_asks_for_none(exchange):
    fake, _ = start_fake(exchange)
    feed = make_feed(fake, symbols=("BTC/USDT",), perps=())
    try:
        feed.start(fake.clock())
        assert feed.funding_rates() is None
        wait_until(lambda: feed.stats["bars"] > 0, 60, "spot bars")
    finally:
        feed.stop()
        fake.stop()
    assert fake.rest_requests(FUNDING_PATH[exchange]) == []


@pytest.mark.parametrize("stamp, expected", [
    (H8 * 5, H8 * 5), (H8 * 5 + 1, H8 * 5), (H8 * 5 + 60_000, H8 * 5), (H8 * 5 + 60_001, H8 * 5 + 60_001),
    (H8 * 5 + 4 * 3_600_000 + 2, H8 * 5 + 4 * 3_600_000),  # a 4 h settlement keeps its own hour
])
def test_funding_instant_rounds_late_stamps_down_within_a_minute(stamp, expected):
    assert funding_instant(stamp) == expected
