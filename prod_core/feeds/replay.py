"""Replay feed: historical candles from files through the same pipeline as paper mode.

``speed="max"``: every ``poll`` returns the next chunk of bars at once and
``next_due_s()`` is None, so the runner loops as fast as the pipeline goes (the
runner drives a simulated bar clock). ``realtime`` / ``10x`` / ``0.5x``: bars are due
at ``start(now_s) + (bar_ts - first_ts) / speed`` wall seconds.

Several symbols are merged in time order. Within one symbol the file order is kept, so
a row that goes back in time stays where it was and the pipeline's hygiene sees (and
counts) it as out of order; duplicates stay adjacent. Equal timestamps of different
symbols come in symbol order (order of first appearance in the ``--data`` arguments).
Bars are delivered as parsed: hygiene is the pipeline's job. But a file whose every row
would be rejected (by the reader or by hygiene) is refused when the feed is built, with
the rejection counts by kind: a replay of nothing must not end as a successful run.

Funding rates (``funding_rates()``) come from a ``funding_rate`` column of the bars files
and from side files ``X.funding.csv`` next to a data file ``X.csv`` / ``X.parquet`` (see
``funding_file``); a side file belongs to its data file's symbol. Where both give a rate
for the same time, the side file wins. No rate anywhere: ``funding_rates()`` is None.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from prod_core.domain import Bar
from prod_core.feeds.base import FeedHealth
from prod_core.feeds.candles import CandleFormatError, CandleSeries, load_data_args
from prod_core.feeds.funding import FundingTable
from prod_core.feeds.funding_file import FundingFileError, read_funding_file, side_file_path

DEFAULT_CHUNK = 2048
_ORDER_KINDS = ("duplicate", "out_of_order")


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
        funding: Mapping[str, Iterable[tuple[int, float]]] | None = None,
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
        self._funding = _funding_table(series, funding or {})
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
        per_file: dict[str, dict[str, int]] = {}
        series, rejected = load_data_args(data, known_symbols, per_file)
        _refuse_dead_files(series, per_file)
        if not any(len(s) for s in series):
            raise CandleFormatError(f"no candle rows in {' '.join(data)}")
        funding = read_side_files(series, per_file)
        return cls(series, speed=speed, chunk=chunk, name=name, rejected=rejected, funding=funding)

    def funding_rates(self) -> FundingTable | None:
        """Settled funding rates of the replayed files, or None when they carry none."""
        return self._funding

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


# ------------------------------------------------------------ funding
def _funding_table(
    series: Sequence[CandleSeries], extra: Mapping[str, Iterable[tuple[int, float]]]
) -> FundingTable | None:
    """Column rates of every series, then ``extra`` (side files) on top; None when there is none."""
    table = FundingTable({})
    found = False
    for s in series:
        rows = s.funding_rows()
        if rows:
            table.extend(s.symbol, rows)
            found = True
    for symbol, rows in extra.items():
        rows = list(rows)
        if rows:
            table.extend(symbol, rows)
            found = True
    return table if found else None


def read_side_files(series: Sequence[CandleSeries], files: Iterable[str]) -> dict[str, list[tuple[int, float]]]:
    """Rows of the side file of each data file in ``files`` that has one, by the file's symbol.

    A side file next to a file that holds several symbols (a ``symbol`` column) is refused:
    it could belong to any of them.
    """
    symbols: dict[str, list[str]] = {}
    for s in series:
        names = symbols.setdefault(s.source, [])
        if s.symbol not in names:
            names.append(s.symbol)
    out: dict[str, list[tuple[int, float]]] = {}
    for f in files:
        side = side_file_path(f)
        if not side.is_file():
            continue
        owners = symbols.get(f, [])
        if len(owners) != 1:
            held = ", ".join(owners) or "no rows"
            raise FundingFileError(
                f"{side}: its data file {f} holds {held}, so the funding rates have no single symbol; "
                "split the data file by symbol, or put a funding_rate column in it instead"
            )
        out.setdefault(owners[0], []).extend(read_funding_file(side))
    return out


# ------------------------------------------------------------ build checks
def _streams(series: Iterable[CandleSeries]) -> dict[str, list[CandleSeries]]:
    """Non-empty series per symbol, in the order ``ReplayFeed._merge`` chains them."""
    out: dict[str, list[CandleSeries]] = {}
    for s in series:
        if len(s):
            out.setdefault(s.symbol, []).append(s)
    for parts in out.values():
        parts.sort(key=lambda s: int(s.ts[0]))
    return out


def audit_rows(series: Sequence[CandleSeries], *, kinds: bool = True) -> dict[str, dict[str, int]]:
    """Per source file: ``rows``, ``accepted`` by the pipeline's hygiene and, with ``kinds``,
    the rejected rows by anomaly kind.

    A vectorised mirror of ``hygiene.is_clean`` / ``hygiene.classify`` over each symbol's
    stream in delivery order, starting from the pipeline's ``last_ts = -1``: a row is
    accepted when its values are clean and its time is after every earlier clean row.
    """
    out: dict[str, dict[str, int]] = {s.source: {"rows": 0, "accepted": 0} for s in series}
    for parts in _streams(series).values():
        carry = -1  # the pipeline's last accepted ts of this symbol before the part
        for part in parts:
            masks, carry = _classify(part.ts, part.ohlcv, carry, kinds)
            entry = out[part.source]
            entry["rows"] += len(part)
            for kind, mask in masks.items():
                n = int(np.count_nonzero(mask))
                if n:
                    entry[kind] = entry.get(kind, 0) + n
    return out


def _classify(ts: np.ndarray, ohlcv: np.ndarray, carry: int, kinds: bool) -> tuple[dict[str, np.ndarray], int]:
    """Masks of accepted rows (and of each anomaly kind) of one chunk; the new last accepted ts."""
    ts = ts.astype(np.int64, copy=False)
    o, h, lo, c, v = ohlcv.T
    with np.errstate(invalid="ignore"):
        clean = (0.0 < lo) & (lo <= o) & (o <= h) & (h < np.inf) & (lo <= c) & (c <= h) & (0.0 <= v) & (v < np.inf)
        last = np.maximum.accumulate(np.where(clean, ts, -1))
        np.maximum(last, carry, out=last)
        prev = np.empty_like(last)
        prev[0] = carry
        prev[1:] = last[:-1]
        masks = {"accepted": clean & (ts > prev)}
        if kinds:
            nan = ~(np.isfinite(o) & np.isfinite(h) & np.isfinite(lo) & np.isfinite(c) & np.isfinite(v))
            non_positive = ~nan & (np.minimum(np.minimum(o, h), np.minimum(lo, c)) <= 0.0)
            negative_volume = ~nan & ~non_positive & (v < 0.0)
            high_below_low = ~nan & ~non_positive & ~negative_volume & (h < lo)
            masks.update(
                nan=nan,
                non_positive_price=non_positive,
                negative_volume=negative_volume,
                high_below_low=high_below_low,
                open_close_outside_range=~clean & ~nan & ~non_positive & ~negative_volume & ~high_below_low,
                duplicate=clean & (ts == prev),
                out_of_order=clean & (ts < prev),
            )
    return masks, int(last[-1])


def _refuse_dead_files(series: Sequence[CandleSeries], per_file: dict[str, dict[str, int]]) -> None:
    """A ``CandleFormatError`` naming each file that would give no bar at all, with counts by kind."""
    audit = audit_rows(series, kinds=False)
    dead = [f for f in per_file if not audit.get(f, {}).get("accepted", 0)]
    if not dead:
        return
    audit = audit_rows(series)  # all of them: duplicates and order depend on the other files
    problems = []
    only_order = True
    for f in dead:
        entry = audit.get(f, {"rows": 0})
        counts = {**per_file[f], **{k: n for k, n in entry.items() if k not in ("rows", "accepted")}}
        total = entry["rows"] + sum(per_file[f].values())
        if not total:
            problems.append(f"{f}: no candle rows (empty or header only)")
            only_order = False
            continue
        only_order = only_order and set(counts) <= set(_ORDER_KINDS)
        shown = ", ".join(f"{kind}={n}" for kind, n in sorted(counts.items(), key=lambda kv: -kv[1]))
        problems.append(f"{f}: all {total} rows rejected ({shown})")
    hint = (
        "its bars repeat or precede another file of the same symbol: leave it out"
        if only_order
        else "check the columns (ts_ms,open,high,low,close,volume), that prices are > 0 with "
        "low <= open, close <= high, or leave the file out"
    )
    raise CandleFormatError("; ".join(problems) + f"; no bar to replay: {hint}")
