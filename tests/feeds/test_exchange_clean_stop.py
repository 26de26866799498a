"""Stopping a feed closes every ccxt client: no pending-task or unclosed-session warnings on stderr.

Runs in a fresh interpreter (warnings on, garbage collected at exit), because ccxt and
asyncio print these warnings from finalizers, which only a process exit reliably runs.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent('''
    import gc, sys, time
    from prod_core.feeds.ccxt_rest import CcxtRestFeed, FeedFatalError
    from prod_core.feeds.ccxt_ws import CcxtWsFeed
    from prod_core.testing.fake_bybit import FakeBybit
    from prod_core.testing.fake_exchange import FakeBinance

    exchange, kind = sys.argv[1], sys.argv[2]
    fake_cls = {"binance": FakeBinance, "bybit": FakeBybit}[exchange]
    feed_cls = CcxtWsFeed if kind == "ws" else CcxtRestFeed
    extra = {} if kind == "ws" else {"max_poll_s": 0.2}  # wall-clock cap: the market clock runs 60x

    def wait_bars(feed, n, timeout=60.0):
        got, end = 0, time.time() + timeout
        while got < n and time.time() < end:
            got += len(feed.poll(time.time()))
            time.sleep(0.05)
        assert got >= n, (got, feed.stats)

    with fake_cls({"BTC/USDT": 65000.0}, time_scale=60, max_lifetime_s=180) as fake:
        def make():
            return feed_cls(exchange, ("BTC/USDT",), "1m", api_url=fake.url, ws_url=fake.ws_url,
                            market_symbols={"BTC/USDT": "BTC/USDT:USDT"}, clock=fake.clock, history_bars=3,
                            enable_rate_limit=True, **extra)  # production setting: ccxt's own limiter on
        # 1. a start that fails fatally still closes its client
        fake.fail(10003 if exchange == "bybit" else 400, path="/v5/market/instruments-info"
                  if exchange == "bybit" else "/fapi/v1/klines")
        feed = make()
        try:
            feed.start(fake.clock())
            raise SystemExit("expected a fatal start")
        except FeedFatalError:
            pass
        feed.stop()
        # 2. run, restart, drop the sockets, stop
        feed = make()
        feed.start(fake.clock())
        wait_bars(feed, 4)
        feed.restart()
        wait_bars(feed, 1)
        fake.drop_ws(0.2)
        wait_bars(feed, 1)
        feed.stop()
        assert feed.ex is None
    gc.collect()
    print("CLEAN-EXIT")
''')

BAD = ("Task was destroyed", "Unclosed client session", "Unclosed connector", "requires to release all resources",
       "was never awaited", "Traceback")


@pytest.mark.parametrize("exchange", ["binance", "bybit"])
@pytest.mark.parametrize("kind", ["rest", "ws"])
def test_stop_leaves_no_pending_task_or_open_session(tmp_path, exchange, kind):
    script = tmp_path / "run_feed.py"
    script.write_text(SCRIPT)
    proc = subprocess.run([sys.executable, "-W", "default", str(script), exchange, kind], cwd=REPO,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                          timeout=240)  # an upper bound on the three bar waits (60 s each)
    assert proc.returncode == 0 and "CLEAN-EXIT" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-3000:]
    bad = [line for line in proc.stderr.splitlines() if any(b in line for b in BAD)]
    assert not bad, proc.stderr[-3000:]
