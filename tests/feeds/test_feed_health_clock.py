"""Feed health follows the bar clock: a bar not received by its close + grace degrades the feed
(real ccxt client, REST and websocket, against the Binance and Bybit fakes)."""

from __future__ import annotations

import random
import time

import pytest

from prod_core.feeds.base import FeedHealth
from prod_core.feeds.ccxt_rest import Backoff, CcxtRestFeed
from prod_core.feeds.ccxt_ws import CcxtWsFeed
from tests.feeds.test_exchanges_e2e import SYMS, fake  # noqa: F401 (the Binance/Bybit fixture, clock 60x)


@pytest.mark.parametrize("ws", [False, True], ids=["rest", "ws"])
def test_a_stall_degrades_within_the_bar_close_plus_grace(fake, ws: bool) -> None:  # noqa: F811
    """The exchange goes silent: health turns 0 once the next bar is later than its close + grace
    (1m bars: 5 s), before the old staleness threshold; it recovers when bars come again."""
    kw = {} if ws else {"max_poll_s": 0.2}
    feed = (CcxtWsFeed if ws else CcxtRestFeed)(
        fake.name, SYMS, "1m", api_url=fake.url, ws_url=fake.ws_url, history_bars=5, start_timeout_s=10.0,
        timeout_ms=3000, clock=fake.clock, backoff=Backoff(base_s=0.1, max_s=0.8, jitter=0.2, rng=random.Random(3)),
        **kw)
    assert feed.grace_s == 5.0
    feed.start(fake.clock())
    try:
        deadline = time.time() + 30
        while feed.health(fake.clock()) != FeedHealth.HEALTHY or not feed.poll(fake.clock()):
            assert time.time() < deadline, "feed never healthy"
            time.sleep(0.02)
        fake.set_silent(True)
        while True:
            # the bar clock of the symbol furthest behind, as the health check saw it (the feed's rule:
            # any symbol's missing bar degrades it; on a busy machine one symbol's poll may lag the
            # other's by a bar); a poll already in flight when the exchange went silent may still
            # deliver one bar right after the check
            before = min(t for t in feed.last_ts.values() if t is not None)
            if feed.health(fake.clock()) != FeedHealth.HEALTHY:
                break
            assert time.time() < deadline + 10, "still healthy 10 s (10 market minutes) into a stall"
            time.sleep(0.005)
        degraded_at = fake.clock()
        after = min(t for t in feed.last_ts.values() if t is not None)
        dues = [(t + 2 * feed.tf_ms) / 1000.0 + feed.grace_s for t in {before, after}]  # next bar's close + grace
        assert any(due <= degraded_at < due + 30.0 for due in dues), [degraded_at - d for d in dues]  # 0.5 wall s
        last = before
        assert degraded_at < (last + feed.tf_ms) / 1000.0 + feed.stale_after_s  # before the old threshold
        fake.set_silent(False)
        while feed.health(fake.clock()) != FeedHealth.HEALTHY:
            assert time.time() < deadline + 40, "no recovery after the stall"
            time.sleep(0.05)
    finally:
        feed.stop()
