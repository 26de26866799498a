"""``SmaCross.scan`` (the replay's vectorised path) answers exactly what ``on_bar`` answers, bar by bar,
whatever the runs of bars it is given, and leaves the same state behind."""

from __future__ import annotations

import random

import numpy as np
import pytest

from prod_core.domain import Bar, Position, Side
from prod_core.feeds.candles import read_candles
from prod_core.strategies import SmaCross, SmaCrossParams
from tests.conftest import shared_data_dir


def _position(side: Side) -> Position:
    return Position(position_id="p", plan_id="x", strategy="s", symbol="BTC/USDT", side=side, qty=1.0,
                    entry_price=1.0, stop=0.0, target=0.0, ts_open_ms=0, nominal_r_usd=1.0, entry_fee_usd=0.0,
                    last_price=1.0)


def _reference(closes: list[float], params: SmaCrossParams, can_short: bool) -> tuple[list, list, list]:
    """on_bar's answers with no position, a long and a short (three instances fed the same bars)."""
    out = []
    for pos in (None, _position(Side.BUY), _position(Side.SELL)):
        s = SmaCross(params, name="s", symbol="BTC/USDT", can_short=can_short)
        out.append([s.on_bar(Bar("BTC/USDT", i, c, c, c, c, 1.0), None, pos) for i, c in enumerate(closes)])
    return out[0], out[1], out[2]


def _scanned(closes: np.ndarray, params: SmaCrossParams, can_short: bool, cuts: list[int]) -> tuple[list, list, list, SmaCross]:
    s = SmaCross(params, name="s", symbol="BTC/USDT", can_short=can_short)
    flat, held_long, held_short = [], [], []
    for a, b in zip([0, *cuts], [*cuts, len(closes)]):
        ohlcv = np.repeat(closes[a:b, None], 5, axis=1)
        sc = s.scan(np.arange(a, b, dtype=np.int64), ohlcv)
        for i in range(b - a):
            flat.append(sc.signal(i, None))
            held_long.append(sc.signal(i, _position(Side.BUY)))
            held_short.append(sc.signal(i, _position(Side.SELL)))
    return flat, held_long, held_short, s


def _state(s: SmaCross) -> tuple:
    return (s._i, s._sum_fast, s._sum_slow, s._scale, s._decimals, s._prev, s._prev_defined, list(s._ring))


@pytest.mark.parametrize("can_short", [False, True])
def test_scan_equals_on_bar_on_real_closes_in_random_runs(can_short: bool) -> None:
    series = read_candles(shared_data_dir() / "BYBIT_XRPUSDT_5m.csv", "XRP/USDT")[0]
    closes = np.asarray(series.ohlcv[:6000, 3], dtype=np.float64)
    params = SmaCrossParams(fast=10, slow=30, short=True)
    ref = _reference(closes.tolist(), params, can_short)
    rng = random.Random(7)
    for _ in range(3):
        cuts = sorted(rng.sample(range(1, len(closes)), 40)) + [29, 30, 31]
        cuts = sorted(set(cuts))
        flat, lng, sht, scanned = _scanned(closes, params, can_short, cuts)
        assert (flat, lng, sht) == ref
        assert sum(x is not None for x in flat) > 100  # the data crosses: the comparison is not vacuous
        one = SmaCross(params, name="s", symbol="BTC/USDT", can_short=can_short)
        for i, c in enumerate(closes.tolist()):
            one.on_bar(Bar("BTC/USDT", i, c, c, c, c, 1.0), None, None)
        assert _state(scanned) == _state(one)


def test_scan_rescales_ticks_like_on_bar_when_a_close_has_more_decimals() -> None:
    """Closes gain decimals mid-run (1 -> 0.5 -> 0.25 -> 0.125 ...) and exact zeros of d occur: the integer
    sums are rescaled as on_bar rescales them, and the crosses stay the same."""
    rng = random.Random(3)
    closes = []
    for i in range(900):
        decimals = min(6, i // 150)
        closes.append(round(100 + rng.choice([-1, 0, 1]) * rng.random() * 5, decimals))
    closes[300:340] = [101.0] * 40  # flat: d exactly 0 for a while
    arr = np.array(closes)
    params = SmaCrossParams(fast=3, slow=7)
    ref = _reference(closes, params, False)
    flat, lng, sht, scanned = _scanned(arr, params, False, [5, 6, 7, 8, 200, 451, 452, 700])
    assert (flat, lng, sht) == ref
    one = SmaCross(params, name="s", symbol="BTC/USDT")
    for i, c in enumerate(closes):
        one.on_bar(Bar("BTC/USDT", i, c, c, c, c, 1.0), None, None)
    assert _state(scanned) == _state(one)


def test_scan_falls_back_bar_by_bar_beyond_int64() -> None:
    """Closes so large that the int64 sums could overflow are scanned bar by bar, with the same answers."""
    closes = [1e15 + 2.0 * (i % 17) + (0.5 if i % 5 == 0 else 0.0) for i in range(200)]
    params = SmaCrossParams(fast=3, slow=9)
    ref = _reference(closes, params, False)
    flat, lng, sht, _ = _scanned(np.array(closes), params, False, [50, 120])
    assert (flat, lng, sht) == ref
