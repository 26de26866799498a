"""Replay feed: historical candles from files through the same pipeline as paper mode.

``speed="max"``: every ``poll`` returns the next chunk of bars at once and
``next_due_s()`` is None, so the runner loops as fast as the pipeline goes (the
runner drives a simulated bar clock). ``realtime`` / ``10x`` / ``0.5x``: bars are due
at ``start(now_s) + (bar_ts - first_ts) / speed`` wall seconds.

Several symbols are merged in time order. Within one symbol the file order is kept, so
a row that goes back in time stays where it was and the pipeline's hygiene sees (and
counts) it as out of order; duplicates stay adjacent. Equal timestamps of different
symbols come in symbol order (order of first appearance in the ``--data`` arguments).
Bars are delivered as parsed: hygiene is the pipeline's job.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from prod_core.domain import Bar
from prod_core.feeds.base import FeedHealth
from prod_core.feeds.candles import CandleFormatError, CandleSeries, load_data_args

DEFAULT_CHUNK = 2048


def parse_speed(text: str | float | None) -> float | None:
    """``max`` -> None (as fast as possible); ``realtime`` -> 1.0; ``10x`` / ``10`` -> 10.0."""
    if text is None:
        return None
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        t = text.strip().lower()
        if t in ("max", "fast", ""):
            return None
        if t in ("realtime", "real", "1x"):
            return 1.0
        m = re.fullmatch(r"(\d+(?:\.\d+)?)x?", t)
        if not m:
            raise ValueError(f"--speed must be max, realtime or a factor like 10x, was {text!r}")
        value = float(m.group(1))
    if not value > 0:
        raise ValueError(f"--speed factor must be > 0, was {text!r}")
    return value


class ReplayFeed:
    """Feed over candle series (see module doc). ``rejected`` counts rows dropped by the reader."""

    def __init__(
        self,
        series: Sequence[CandleSeries],
        *,
        speed: str | float | None = "max",
        chunk: int = DEFAULT_CHUNK,
        name: str = "replay",
        rejected: dict[str, int] | None = None,
    ) -> None:
        self.name = name
        self.speed = parse_speed(speed)
        self.chunk = max(1, int(chunk))
        self.rejected: dict[str, int] = dict(rejected or {})
        order: dict[str, int] = {}
        for s in series:
            order.setdefault(s.symbol, len(order))
        self.symbols: tuple[str, ...] = tuple(order)
        self._merge(series, order)
        self.rows = int(self._ts.shape[0])
        self.live_from_ms = int(self._ts[0]) if self.rows else 0
        self._i = 0
        self._start_s: float | None = None
        self._stopped = False

    @classmethod
    def from_paths(
        cls,
        data: Sequence[str],
        *,
        speed: str | float | None = "max",
        known_symbols: Sequence[str] = (),
        chunk: int = DEFAULT_CHUNK,
        name: str = "replay",
    ) -> "ReplayFeed":
        series, rejected = load_data_args(data, known_symbols)
        if not any(len(s) for s in series):
            raise CandleFormatError(f"replay: no candle rows in {' '.join(data)}")
        return cls(series, speed=speed, chunk=chunk, name=name, rejected=rejected)

    # --------------------------------------------------------------- merging
    def _merge(self, series: Sequence[CandleSeries], order: dict[str, int]) -> None:
        # One stream per symbol: its chunks (files) ordered by first timestamp, file order within.
        keys, ts_all, vals, sym_idx = [], [], [], []
        for sym, rank in order.items():
            parts = [s for s in series if s.symbol == sym and len(s)]
            parts.sort(key=lambda s: int(s.ts[0]))  # stable: equal starts keep argument order
            if not parts:
                continue
            ts = np.concatenate([p.ts for p in parts])
            ohlcv = np.concatenate([p.ohlcv for p in parts])
            # the running maximum keeps a stream in file order inside a global time sort
            keys.append(np.maximum.accumulate(ts))
            ts_all.append(ts)
            vals.append(ohlcv)
            sym_idx.append(np.full(ts.shape[0], rank, dtype=np.int64))
        if not ts_all:
            self._ts = np.empty(0, np.int64)
            self._key = np.empty(0, np.int64)
            self._sym = np.empty(0, np.int64)
            self._ohlcv = np.empty((0, 5))
            return
        key = np.concatenate(keys)
        ts = np.concatenate(ts_all)
        ohlcv = np.concatenate(vals)
        sym = np.concatenate(sym_idx)
        pos = np.arange(key.shape[0])
        idx = np.lexsort((pos, sym, key))
        self._key = key[idx]
        self._ts = ts[idx]
        self._sym = sym[idx]
        self._ohlcv = ohlcv[idx]

    # ------------------------------------------------------------------ feed
    def start(self, now_s: float) -> None:
        self._start_s = now_s

    def _bars(self, i: int, j: int) -> list[Bar]:
        names = self.symbols
        o = self._ohlcv[i:j]
        return [
            Bar(names[s], t, a, b, c, d, e)
            for s, t, (a, b, c, d, e) in zip(self._sym[i:j].tolist(), self._ts[i:j].tolist(), o.tolist())
        ]

    def poll(self, now_s: float) -> list[Bar]:
        i = self._i
        n = self.rows
        if i >= n or self._stopped:
            return []
        if self.speed is None:
            j = min(n, i + self.chunk)
        else:
            if self._start_s is None:
                self._start_s = now_s
            horizon = self._key[0] + (now_s - self._start_s) * 1000.0 * self.speed
            j = int(np.searchsorted(self._key, horizon, side="right"))
            j = min(j, i + 50 * self.chunk)
            if j <= i:
                return []
        self._i = j
        return self._bars(i, j)

    def next_due_s(self) -> float | None:
        if self.speed is None or self._i >= self.rows or self._start_s is None:
            return None
        return self._start_s + (int(self._key[self._i]) - int(self._key[0])) / 1000.0 / self.speed

    def health(self, now_s: float) -> int:
        return int(FeedHealth.PAUSED if self._stopped else FeedHealth.HEALTHY)

    @property
    def exhausted(self) -> bool:
        return self._i >= self.rows

    @property
    def delivered(self) -> int:
        """Bars handed out so far."""
        return self._i

    def restart(self) -> None:
        """Nothing to reconnect: a replay keeps its position."""
        self._stopped = False

    def stop(self) -> None:
        self._stopped = True
