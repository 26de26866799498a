"""Feed health follows the bar clock: a bar not received by its close + grace degrades the feed
(real ccxt client, REST and websocket, against the local fake)."""

from __future__ import annotations

import random
import time

import pytest

from prod_core.feeds.base import FeedHealth
from prod_core.feeds.ccxt_rest import Backoff, CcxtRestFeed
from prod_core.feeds.ccxt_ws import CcxtWsFeed
from prod_core.testing.fake_exchange import running_fake

SYMS = ("BTC/USDT", "ETH/USDT")


@pytest.mark.parametrize("ws", [False, True], ids=["rest", "ws"])
def test_a_stall_degrades_within_the_bar_close_plus_grace(ws: bool) -> None:
    """The exchange goes silent: health turns 0 once the next bar is later than its close + grace
    (1s bars, 1 s grace), long before the old 6.5 s staleness threshold; it recovers with the bars."""
    with running_fake({"BTC/USDT": 65000.0, "ETH/USDT": 3400.0}, max_lifetime_s=60.0) as fake:
        cls = CcxtWsFeed if ws else CcxtRestFeed
        feed = cls("binance", SYMS, "1s", api_url=fake.url, ws_url=fake.ws_url, history_bars=5, start_timeout_s=10.0,
                   timeout_ms=3000, backoff=Backoff(base_s=0.1, max_s=0.8, jitter=0.2, rng=random.Random(3)))
        assert feed.grace_s == 1.0
        feed.start(time.time())
        try:
            deadline = time.time() + 30
            while feed.health(time.time()) != FeedHealth.HEALTHY or not feed.poll(time.time()):
                assert time.time() < deadline, "feed never healthy"
                time.sleep(0.05)
            fake.set_silent(True)
            silent_at = time.time()
            while feed.health(time.time()) == FeedHealth.HEALTHY:
                assert time.time() - silent_at < 10, "still healthy 10 s into a stall"
                time.sleep(0.02)
            degraded_at = time.time()
            last = max(t for t in feed.last_ts.values() if t is not None)
            due = (last + 2 * feed.tf_ms) / 1000.0 + feed.grace_s
            # degraded once the next bar is overdue, within the polling slack, not at the 6.5 s threshold
            assert degraded_at - silent_at < feed.stale_after_s - 2.0, (degraded_at - silent_at)
            assert degraded_at >= due - 0.05 and degraded_at - due < 1.0, (degraded_at - due)
            fake.set_silent(False)
            while feed.health(time.time()) != FeedHealth.HEALTHY:
                assert time.time() - degraded_at < 30, "no recovery after the stall"
                time.sleep(0.05)
        finally:
            feed.stop()
