"""Builders for tests: synthetic candles, candle files with corrupted rows, a fake exchange.

``prod_core.testing.fake_exchange.FakeBinance`` is a local fake Binance (REST and
websockets, loopback only) for the ccxt feeds; it is imported on demand.
"""

from __future__ import annotations

import csv
import math
import random
from collections.abc import Iterable, Sequence
from pathlib import Path

Row = tuple[int, float, float, float, float, float]

# One corrupted row per hygiene kind: name -> function(previous valid row) -> row.
CORRUPTIONS = {
    "nan": lambda r: (r[0] + 1, math.nan, r[2], r[3], r[4], r[5]),
    "non_positive_price": lambda r: (r[0] + 1, r[1], r[2], -1.0, r[4], r[5]),
    "negative_volume": lambda r: (r[0] + 1, r[1], r[2], r[3], r[4], -5.0),
    "high_below_low": lambda r: (r[0] + 1, r[1], r[3] * 0.9, r[3], r[4], r[5]),
    "open_close_outside_range": lambda r: (r[0] + 1, r[2] * 1.5, r[2], r[3], r[4], r[5]),
    "out_of_order": lambda r: (r[0] - 3_600_000, r[1], r[2], r[3], r[4], r[5]),
    "duplicate": lambda r: r,
}


def synthetic_rows(
    n: int,
    *,
    start_ms: int = 1_700_000_000_000,
    tf_ms: int = 60_000,
    price: float = 100.0,
    seed: int = 1,
    vol: float = 0.002,
) -> list[Row]:
    """A deterministic random walk with alternating calm / trending / volatile stretches."""
    rng = random.Random(seed)
    rows: list[Row] = []
    close = price
    for i in range(n):
        phase = (i // 150) % 4
        drift = (0.0, 0.0012, 0.0, -0.0012)[phase]
        sigma = vol * (3.0 if phase == 2 else 1.0)
        o = close
        c = max(o * (1.0 + drift + rng.gauss(0.0, sigma)), 1e-6)
        h = max(o, c) * (1.0 + abs(rng.gauss(0.0, sigma / 2)))
        lo = min(o, c) * (1.0 - abs(rng.gauss(0.0, sigma / 2)))
        v = round(abs(rng.gauss(10.0, 3.0)), 6)
        rows.append((start_ms + i * tf_ms, round(o, 6), round(h, 6), round(lo, 6), round(c, 6), v))
        close = c
    # rounding may push open/close a hair outside [low, high]: widen the range
    return [(t, o, max(h, o, c), min(lo, o, c), c, v) for (t, o, h, lo, c, v) in rows]


def corrupt(rows: Sequence[Row], kinds: Iterable[str], every: int = 97) -> tuple[list[Row], dict[str, int]]:
    """Insert one corrupted row of each kind after every ``every`` valid rows (cycling kinds)."""
    kinds = list(kinds)
    out: list[Row] = []
    counts = {k: 0 for k in kinds}
    j = 0
    for i, row in enumerate(rows):
        out.append(row)
        if kinds and i % every == every - 1:
            kind = kinds[j % len(kinds)]
            j += 1
            out.append(CORRUPTIONS[kind](row))
            counts[kind] += 1
    return out, counts


def write_csv(path: Path, rows: Iterable[Sequence], header: Sequence[str] | None = ("ts_ms", "open", "high", "low", "close", "volume")) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        if header:
            w.writerow(header)
        for r in rows:
            w.writerow(["nan" if isinstance(x, float) and math.isnan(x) else x for x in r])
    return path


BINANCE_HEADER = (
    "open_time", "open", "high", "low", "close", "volume", "close_time", "quote_volume", "count",
    "taker_buy_volume", "taker_buy_quote_volume", "ignore",
)


def binance_rows(rows: Iterable[Row], tf_ms: int = 60_000, micros: bool = False) -> list[list]:
    """Rows in the 12-column layout of data.binance.vision kline dumps."""
    k = 1000 if micros else 1
    out = []
    for t, o, h, lo, c, v in rows:
        out.append([t * k, o, h, lo, c, v, (t + tf_ms - 1) * k, round(v * c, 6), 10, round(v / 2, 6), round(v * c / 2, 6), 0])
    return out
