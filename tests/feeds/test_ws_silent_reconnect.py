"""A websocket the exchange keeps open but stops sending on is replaced after ``ws_silence_s``
(real ccxt client against the local Binance and Bybit fakes, market clock 60x: a 1m bar per wall second)."""

from __future__ import annotations

import logging
import time

import pytest

from prod_core.feeds.base import FeedHealth
from prod_core.feeds.ccxt_ws import CcxtWsFeed, default_ws_silence_s
from prod_core.testing.fake_bybit import FakeBybit
from prod_core.testing.fake_exchange import FakeBinance
from tests.feeds.test_exchanges_e2e import SCALE, SYMS, assert_exact, make_feed

FAKES = {"binance": FakeBinance, "bybit": FakeBybit}
SILENT_LINE = "websocket silent for"


def test_default_silence_is_two_bars_plus_grace_at_least_5_s():
    assert default_ws_silence_s(60_000, 5.0) == 125.0
    assert default_ws_silence_s(1_000, 1.0) == 5.0
    feed = CcxtWsFeed("binance", ["BTC/USDT"], "1m")
    assert feed.ws_silence_s == 2 * 60 + feed.grace_s
    assert CcxtWsFeed("binance", ["BTC/USDT"], "1m", ws_silence_s=30).ws_silence_s == 30.0
    with pytest.raises(ValueError):
        CcxtWsFeed("binance", ["BTC/USDT"], "1m", ws_silence_s=0)


def _silent_lines(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno == logging.WARNING and SILENT_LINE in r.getMessage()]


@pytest.mark.parametrize(("exchange", "kind"), [("binance", "spot"), ("bybit", "spot"), ("bybit", "perp")])
def test_silent_open_socket_is_replaced_and_the_gap_backfilled_exactly(exchange, kind, caplog):
    market = "linear" if kind == "perp" else "spot"
    caplog.set_level(logging.INFO)
    with FAKES[exchange]({"BTC/USDT": 65000.0, "ETH/USDT": 3400.0}, max_lifetime_s=180.0, time_scale=SCALE) as fake:
        feed = make_feed(fake, kind, True)  # stale_after_s 600 market s: the REST watchdog stays out of it
        silence_wall = feed.ws_silence_s / SCALE  # 125 market s: ~2.1 wall s
        feed.start(fake.clock())
        try:
            bars: list = []
            deadline = time.time() + 60  # an upper bound on an event wait, not a window
            while True:  # healthy, with live bars from the stream
                bars.extend(feed.poll(time.time()))
                live = sum(b.ts_ms >= feed.live_from_ms for b in bars)
                if live >= 2 * len(SYMS) and feed.health(time.time()) == FeedHealth.HEALTHY:
                    break
                assert time.time() < deadline, ("never healthy with live bars", feed.stats)
                time.sleep(0.05)
            assert feed.stats["silent_reconnects"] == 0 and not _silent_lines(caplog)
            before = fake.ws_connections
            open_before = len(fake._conns)

            fake.set_silent(True)  # sockets stay open (pings answered), no frame is sent
            silent_at = time.time()
            while fake.ws_connections == before:
                bars.extend(feed.poll(time.time()))
                assert time.time() - silent_at < silence_wall + 3.0, ("no new websocket", feed.stats)
                time.sleep(0.02)
            reconnected_after = time.time() - silent_at
            # not before the stream had been silent ws_silence_s (its last frame came <= ~0.3 s before the silence)
            assert reconnected_after >= silence_wall - 0.5, reconnected_after
            assert feed.stats["silent_reconnects"] >= 1
            assert len(_silent_lines(caplog)) == 1
            assert feed.health(time.time()) == FeedHealth.DEGRADED
            # still silent: replaced again, but at most once per ws_silence_s
            while time.time() - silent_at < 2.5 * silence_wall:
                bars.extend(feed.poll(time.time()))
                time.sleep(0.05)
            lines = _silent_lines(caplog)
            assert 1 <= len(lines) <= 2, [r.getMessage() for r in lines]
            assert feed.stats["silent_reconnects"] == len(lines)
            times = [r.created for r in lines]
            assert all(b - a >= silence_wall - 0.3 for a, b in zip(times, times[1:])), times
            assert len(fake._conns) <= open_before, "the silent sockets were left open"

            fake.set_silent(False)
            back_at = time.time()
            resumed_ms = fake.clock() * 1000
            while True:  # frames again: healthy, the gap backfilled over REST, live bars flowing
                bars.extend(feed.poll(time.time()))
                done = all(max((b.ts_ms for b in bars if b.symbol == s), default=0) >= resumed_ms
                           for s in SYMS)
                if done and feed.health(time.time()) == FeedHealth.HEALTHY and feed.state == "ok":
                    break
                assert time.time() - back_at < 10, ("no recovery", feed.stats, feed.state)
                time.sleep(0.05)
            assert len(_silent_lines(caplog)) == feed.stats["silent_reconnects"]  # none after the frames came back
            assert feed.stats["backfilled_bars"] >= len(SYMS)
            for sym in SYMS:
                # contiguous across the silence, exact final values, never a forming bar
                assert_exact(fake, bars, sym, market)
        finally:
            feed.stop()
