"""End to end: the paper runner on FEED=ccxt_ws with ``exchange.order_book: true`` prices its
market entries on the order book the exchange showed ``execution.latency_ms`` after the decision.

The real runner and the real ccxt client against the local fake Binance (127.0.0.1 only). The
fake's price moves within each second and its book moves with it, so every book it publishes
has its own mid; the fake logs each one (``books_sent``). What a trader checks on every entry
filled: its reference price is the mid of a book the exchange really published, not the bar's
open; the price paid is that book walked for the filled quantity; and that book is one published
well after the plan was approved (the latency), not the book at the decision.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import yaml

from prod_core.execution.fills import walk_book
from prod_core.testing.fake_exchange import FakeBinance, TrendingFakeBinance
from tests.runner.helpers import PaperProcess, active_governance

LATENCY_MS = 400
TICK = 0.01  # the fake's BTC/USDT and ETH/USDT spot price tick


class _MovingBookFake(TrendingFakeBinance):
    """The trending fake with wide bars (a range of +/-1%: a book published a little before or after
    the bar still lies inside it) and a book whose mid moves continuously inside each second from the
    bar's open towards its close."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, bar_range=0.01, volume=1000.0, **kwargs)

    def book_price(self, symbol: str, market: str, now_ms: int) -> float:
        k = now_ms // 1000
        o, c = self._price(symbol, k - 1), self._price(symbol, k)
        return o + (c - o) * (now_ms % 1000) / 1000.0


def _configure(config_dir: Path, fake: FakeBinance) -> None:
    path = config_dir / "symbols.yaml"
    cfg = yaml.safe_load(path.read_text())
    cfg["exchange"].update({"id": "binance", "timeframe": "1s", "sandbox": False, "api_url": fake.url,
                            "ws_url": fake.ws_url, "order_book": True})
    cfg["symbols"] = [dict(s, kind="spot") for s in cfg["symbols"] if s["symbol"] in ("BTC/USDT", "ETH/USDT")]
    path.write_text(yaml.safe_dump(cfg))
    active_governance(config_dir, latency_ms=LATENCY_MS)


def _query(db: Path, sql: str, *args) -> list[tuple]:
    with sqlite3.connect(db, timeout=30) as conn:
        return [tuple(r) for r in conn.execute(sql, args)]


def _entry_fills(db: Path) -> list[tuple]:
    return _query(db, "SELECT f.run_id, f.symbol, f.side, f.qty, f.price, f.ref_price, f.ts_ms, o.plan_id "
                      "FROM fills f JOIN orders o ON o.run_id = f.run_id AND o.order_id = f.order_id "
                      "WHERE f.reason = 'entry' ORDER BY f.rowid")


def _book_priced(fake: FakeBinance, fills: list[tuple]) -> list[tuple]:
    """The entry fills whose reference is not the candle model's (the bar's open): priced on a book."""
    return [f for f in fills if abs(f[5] - fake.candle(f[1], f[6])[1]) > TICK]


def _approved_at(db: Path, run_id: str) -> dict[str, float]:
    rows = _query(db, "SELECT ts, fields_json FROM events WHERE run_id = ? AND kind = 'plan_approved'", run_id)
    return {json.loads(fields)["plan_id"]: ts for ts, fields in rows}


def test_entries_walk_the_book_seen_latency_ms_after_the_decision(tmp_path: Path, config_dir: Path) -> None:
    fake = _MovingBookFake({"BTC/USDT": 65000.0, "ETH/USDT": 3400.0}, max_lifetime_s=300.0, tick_s=0.02,
                           kline_update_s=0.1).start()
    try:
        _configure(config_dir, fake)
        proc = PaperProcess(tmp_path, "--max-seconds", "240", "--linger", "0",
                            env={"CONFIG_DIR": str(config_dir), "FEED": "ccxt_ws"})
        try:
            proc.wait_for_line("зарегистрирован")
            deadline = time.time() + 180  # trade until two entries have filled on a captured book
            while len(_book_priced(fake, _entry_fills(proc.db))) < 2:
                assert time.time() < deadline and proc.proc.poll() is None, proc.output[-4000:]
                time.sleep(0.2)
            proc.interrupt()
            assert proc.wait() == 0, proc.output[-4000:]
        finally:
            proc.kill()
    finally:
        fake.stop()

    every = _entry_fills(proc.db)
    fills = _book_priced(fake, every)
    # an order whose fill bar came before any usable book (a loaded loop reads bars in batches)
    # falls back to the candle model: its reference is then exactly the bar's open
    assert all(ref == fake.candle(symbol, ts_ms)[1] for _, symbol, _, _, _, ref, ts_ms, _ in every if
               (symbol, ts_ms) not in {(f[1], f[6]) for f in fills})
    approved = _approved_at(proc.db, fills[0][0])
    for run_id, symbol, side, qty, price, ref, ts_ms, plan_id in fills:
        buying = side == "buy"
        books = [(t, bids, asks) for t, market, sym, _seq, bids, asks in fake.books_sent
                 if market == "spot" and sym == symbol
                 and abs((float(bids[0][0]) + float(asks[0][0])) / 2 - ref) < 1e-6]
        assert books, f"{symbol} entry ref_price {ref} is the mid of no book the exchange published"
        t_decided = approved[plan_id]
        checked = []
        for t_sent, bids, asks in books:
            levels = tuple((float(p), float(q)) for p, q in (asks if buying else bids))
            walked, got = walk_book(levels, qty)
            checked.append((round(t_sent - t_decided, 3), walked, got))
            # The runner takes, latency_ms after the send, the newest book its websocket has delivered:
            # published after the decision, not the book at the decision. How long after depends on the
            # delivery lag, which a loaded machine stretches (a book published 163 ms after the decision
            # was the newest one delivered 400 ms after it), so the test does not ask for a fixed lag.
            if got == qty and abs(price - walked) <= TICK and t_sent > t_decided:
                break  # this book, published after the decision, priced the fill
        else:
            raise AssertionError(f"{symbol} {side} {qty} at {price} (ref {ref}): no book with that mid was "
                                 f"published after the decision and walks to that price "
                                 f"(seconds after the decision, vwap, qty): {checked}")
