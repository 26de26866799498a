"""Malformed bars from a real exchange API leave no hole: the ccxt feeds re-request them (real
ccxt client, REST and websocket, against the Binance and Bybit fakes, which serve each bad bar
wrong twice, then right)."""

from __future__ import annotations

import math
import random
import time
import zlib

import pytest

from prod_core.feeds.ccxt_rest import Backoff, CcxtRestFeed
from prod_core.feeds.ccxt_ws import CcxtWsFeed
from prod_core.testing.fake_bybit import FakeBybit
from prod_core.testing.fake_exchange import FakeBinance

TF_MS = 60_000
SCALE = 60.0  # the fakes' market clock runs 60x: a 1m bar closes every wall second
SYMS = ("BTC/USDT", "ETH/USDT")


class _Flaky:
    """About 5% of the bars are served malformed the first two times they are asked for (NaN open
    or high below low), then correct: what a flaky exchange API does."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.served: dict[tuple[str, int], int] = {}

    @staticmethod
    def bad_kind(symbol: str, ts: int) -> str | None:
        h = zlib.crc32(f"{symbol}:{ts}".encode())
        if h % 20:
            return None
        return "nan" if (h // 20) % 2 else "high_below_low"

    def candle(self, symbol: str, ts: int, tf_ms: int = 1000, partial: bool = False, market: str = "spot") -> list:
        good = super().candle(symbol, ts, tf_ms, partial=partial, market=market)
        kind = None if partial else self.bad_kind(symbol, ts)
        if kind is None:
            return good
        key = (symbol, ts)
        with self._lock:
            self.served[key] = self.served.get(key, 0) + 1
            if self.served[key] > 2:
                return good
        t, o, h, lo, c, v = good
        return [t, math.nan, h, lo, c, v] if kind == "nan" else [t, o, lo * 0.999, h, c, v]


class _FlakyBinance(_Flaky, FakeBinance):
    pass


class _FlakyBybit(_Flaky, FakeBybit):
    pass


@pytest.fixture(params=["binance", "bybit"])
def fake(request):
    cls = _FlakyBinance if request.param == "binance" else _FlakyBybit
    server = cls({"BTC/USDT": 65000.0, "ETH/USDT": 3400.0}, max_lifetime_s=90.0, time_scale=SCALE).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("ws", [False, True], ids=["rest", "ws"])
def test_five_percent_malformed_bars_leave_no_hole_and_are_counted_once(fake, ws: bool) -> None:
    """History and live bars with 5% malformed rows: the delivered series is contiguous and exact,
    every injected bad bar is counted once by kind and repaired from the exchange."""
    kw = {} if ws else {"max_poll_s": 0.2}
    feed = (CcxtWsFeed if ws else CcxtRestFeed)(
        fake.name, SYMS, "1m", api_url=fake.url, ws_url=fake.ws_url, history_bars=200, stale_after_s=600.0,
        backoff=Backoff(base_s=0.1, max_s=0.8, jitter=0.2, rng=random.Random(5)), start_timeout_s=20.0,
        timeout_ms=3000, clock=fake.clock, **kw)
    bars = []
    feed.start(fake.clock())
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            bars.extend(feed.poll(time.time()))
            live = [b for b in bars if b.ts_ms >= feed.live_from_ms]
            if len(live) >= 2 * 15 and not any(feed.repair.held(s) or feed.repair.wanted(s) for s in SYMS):
                break
            time.sleep(0.05)
    finally:
        feed.stop()
    bars.extend(feed.poll(time.time()))
    expected: dict[str, int] = {}
    holes = 0
    for symbol in SYMS:
        mine = [b for b in bars if b.symbol == symbol]
        ts = [b.ts_ms for b in mine]
        assert ts == list(range(ts[0], ts[-1] + TF_MS, TF_MS)), f"{symbol}: holes or doubles"
        for b in mine:
            assert [b.ts_ms, b.open, b.high, b.low, b.close, b.volume] == fake.candle(symbol, b.ts_ms, TF_MS)
            kind = fake.bad_kind(symbol, b.ts_ms)
            if kind is not None:
                expected[kind] = expected.get(kind, 0) + 1
                holes += 1
        window = feed.repair.wanted(symbol)  # a bad bar after the last delivered one, caught mid-repair
        if window is not None:
            for t in range(max(window[0], ts[-1] + TF_MS), window[1], TF_MS):
                kind = fake.bad_kind(symbol, t)
                if kind is not None:
                    expected[kind] = expected.get(kind, 0) + 1
    assert holes >= 10, f"too few bad bars in the delivered series to prove anything: {expected}"
    assert dict(feed.repair.rejected) == expected, (feed.repair.rejected, expected)
    assert feed.repair.repaired == holes and feed.repair.given_up == 0
