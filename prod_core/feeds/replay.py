"""Replay feed: historical candles from files through the same pipeline as paper mode.

``speed="max"``: every ``poll`` returns the next chunk of bars at once and
``next_due_s()`` is None, so the runner loops as fast as the pipeline goes (the
runner drives a simulated bar clock). ``realtime`` / ``10x`` / ``0.5x``: bars are due
at ``start(now_s) + (bar_ts - first_ts) / speed`` wall seconds.

Several symbols are merged in time order. Within one symbol the file order is kept, so
a row that goes back in time stays where it was and the pipeline's hygiene sees (and
counts) it as out of order; duplicates stay adjacent. Equal timestamps of different
symbols come in symbol order (order of first appearance in the ``--data`` arguments).
Several files of one symbol are chained by their first timestamp (equal starts keep
argument order). Bars are delivered as parsed: hygiene is the pipeline's job. But a file whose every row
would be rejected (by the reader or by hygiene) is refused when the feed is built, with
the rejection counts by kind: a replay of nothing must not end as a successful run.

Files are streamed, not loaded (``prod_core.feeds.stream``): building the feed reads
each file through once, chunk by chunk, keeping only its row count, first timestamp,
latest clean timestamp, malformed rows and funding rates; replaying reads them again and
merges one current chunk per symbol at a time, so memory stays bounded by a few chunks
per symbol whatever the number of rows. Exceptions, held whole: a file with a ``symbol``
column (several symbols in one file, as ``fetch-history`` writes) and a CSV that needs the
row-by-row reader. ``rows`` is known at build; ``exhausted`` is true once the last bar is out.

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
from prod_core.feeds.candles import CandleFormatError, CandleSeries
from prod_core.feeds.funding import FundingTable
from prod_core.feeds.funding_file import FundingFileError, read_funding_file, side_file_path
from prod_core.feeds.stream import (
    DEFAULT_BATCH_ROWS,
    DEFAULT_BLOCK_BYTES,
    MemoryPart,
    Part,
    Window,
    clean_mask,
    keyed_chunks,
    merge_windows,
    open_data_args,
    symbol_streams,
)

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
    """Feed over candle parts (see module doc). ``rejected`` counts rows dropped by the reader.

    ``series``: scanned ``stream.Part`` objects (what ``from_paths`` builds) or in-memory
    ``CandleSeries``.
    """

    def __init__(
        self,
        series: Sequence[Part | CandleSeries],
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
        parts = _as_parts(series)
        order: dict[str, int] = {}
        for p in parts:
            order.setdefault(p.symbol, len(order))
        self.symbols: tuple[str, ...] = tuple(order)
        self._funding = _funding_table(parts, funding or {})
        self.rows = sum(p.rows for p in parts)
        self._windows = merge_windows([keyed_chunks(s) for s in symbol_streams(parts, order)])
        self._win: Window | None = next(self._windows, None)
        self._pos = 0  # next row of the current window
        self._i = 0  # bars delivered
        self.live_from_ms = int(self._win.ts[0]) if self._win is not None else 0
        self._key0 = int(self._win.key[0]) if self._win is not None else 0
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
        block_bytes: int = DEFAULT_BLOCK_BYTES,
        batch_rows: int = DEFAULT_BATCH_ROWS,
    ) -> "ReplayFeed":
        """The feed over ``--data`` arguments, streamed from the files (``stream``): CSV in
        blocks of ``block_bytes`` bytes, Parquet in batches of ``batch_rows`` rows."""
        files = open_data_args(data, known_symbols, block_bytes=block_bytes, batch_rows=batch_rows)
        per_file = {str(f.path): ({"malformed": f.malformed} if f.malformed else {}) for f in files}
        rejected: dict[str, int] = {}
        for counts in per_file.values():
            for kind, n in counts.items():
                rejected[kind] = rejected.get(kind, 0) + n
        parts = [p for f in files for p in f.parts]
        _refuse_dead_files(parts, per_file)
        if not any(p.rows for p in parts):
            raise CandleFormatError(f"no candle rows in {' '.join(data)}")
        funding = read_side_files(parts, per_file)
        return cls(parts, speed=speed, chunk=chunk, name=name, rejected=rejected, funding=funding)

    def funding_rates(self) -> FundingTable | None:
        """Settled funding rates of the replayed files, or None when they carry none."""
        return self._funding

    # ------------------------------------------------------------------ feed
    def start(self, now_s: float) -> None:
        self._start_s = now_s

    def _bars(self, w: Window, i: int, j: int) -> list[Bar]:
        return Bar.many(self.symbols, w.sym[i:j].tolist(), w.ts[i:j].tolist(), w.ohlcv[i:j].tolist())

    def poll(self, now_s: float) -> list[Bar]:
        if self._win is None or self._stopped:
            return []
        if self.speed is None:
            return self._take(self.chunk, None)
        if self._start_s is None:
            self._start_s = now_s
        horizon = self._key0 + (now_s - self._start_s) * 1000.0 * self.speed
        return self._take(50 * self.chunk, horizon)

    def _take(self, limit: int, horizon: float | None) -> list[Bar]:
        """Up to ``limit`` next bars (with ``horizon``: only those whose key is <= it)."""
        out: list[Bar] = []
        while self._win is not None and limit > 0:
            w, i = self._win, self._pos
            n = int(w.key.shape[0])
            j = min(n, i + limit)
            if horizon is not None:
                j = i + int(np.searchsorted(w.key[i:j], horizon, side="right"))
            if j > i:
                out += self._bars(w, i, j)
                self._pos = j
                self._i += j - i
                limit -= j - i
            if j < n:
                break
            self._win, self._pos = next(self._windows, None), 0  # used up: the next window, now
        return out

    def poll_arrays(self, limit: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """At full speed (``speed`` max): the next rows of the current window as arrays (symbol ranks
        into ``symbols``, ts ms, ohlcv), at most ``limit`` (default ``chunk``), without building bars;
        None when the data is used up. The fast lane's way in (``runner.fastlane``)."""
        while self._win is not None and not self._stopped:
            w, i = self._win, self._pos
            n = int(w.key.shape[0])
            j = min(n, i + (limit or self.chunk))
            if j >= n:
                self._win, self._pos = next(self._windows, None), 0
            else:
                self._pos = j
            if j > i:
                self._i += j - i
                return w.sym[i:j], w.ts[i:j], w.ohlcv[i:j]
        return None

    def next_due_s(self) -> float | None:
        if self.speed is None or self._win is None or self._start_s is None:
            return None
        return self._start_s + (int(self._win.key[self._pos]) - self._key0) / 1000.0 / self.speed

    def health(self, now_s: float) -> int:
        return int(FeedHealth.PAUSED if self._stopped else FeedHealth.HEALTHY)

    @property
    def exhausted(self) -> bool:
        return self._win is None

    @property
    def delivered(self) -> int:
        """Bars handed out so far."""
        return self._i

    def restart(self) -> None:
        """Nothing to reconnect: a replay keeps its position."""
        self._stopped = False

    def stop(self) -> None:
        self._stopped = True


def _as_parts(series: Iterable[Part | CandleSeries]) -> list[Part]:
    """Scanned parts; an in-memory ``CandleSeries`` becomes a ``MemoryPart``."""
    return [s if isinstance(s, Part) else MemoryPart.of(s) for s in series]


# ------------------------------------------------------------ funding
def _funding_table(parts: Sequence[Part], extra: Mapping[str, Iterable[tuple[int, float]]]) -> FundingTable | None:
    """Column rates of every part, then ``extra`` (side files) on top; None when there is none."""
    table = FundingTable({})
    found = False
    for p in parts:
        if p.funding:
            table.extend(p.symbol, p.funding)
            found = True
    for symbol, rows in extra.items():
        rows = list(rows)
        if rows:
            table.extend(symbol, rows)
            found = True
    return table if found else None


def read_side_files(series: Sequence[Part | CandleSeries], files: Iterable[str]) -> dict[str, list[tuple[int, float]]]:
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
def _streams(parts: Sequence[Part]) -> list[list[Part]]:
    """Non-empty parts per symbol, in the order ``ReplayFeed`` chains them."""
    order: dict[str, int] = {}
    for p in parts:
        order.setdefault(p.symbol, len(order))
    return symbol_streams(parts, order)


def _carry_after(part: Part, carry: int) -> int:
    """The pipeline's last accepted ts of a symbol after ``part``, from ``carry`` before it."""
    return carry if part.last_clean_ts is None else max(carry, part.last_clean_ts)


def _audit_part(part: Part, carry: int, kinds: bool, entry: dict[str, int]) -> None:
    """Add the part's rows, accepted rows (and, with ``kinds``, rejections by kind) to ``entry``,
    reading it chunk by chunk from ``carry``."""
    entry["rows"] += part.rows
    for ts, ohlcv in part.chunks():
        if not ts.shape[0]:
            continue
        masks, carry = _classify(ts, ohlcv, carry, kinds)
        for kind, mask in masks.items():
            n = int(np.count_nonzero(mask))
            if n:
                entry[kind] = entry.get(kind, 0) + n


def audit_rows(series: Sequence[Part | CandleSeries], *, kinds: bool = True) -> dict[str, dict[str, int]]:
    """Per source file: ``rows``, ``accepted`` by the pipeline's hygiene and, with ``kinds``,
    the rejected rows by anomaly kind.

    A vectorised mirror of ``hygiene.is_clean`` / ``hygiene.classify`` over each symbol's
    stream in delivery order, starting from the pipeline's ``last_ts = -1``: a row is
    accepted when its values are clean and its time is after every earlier clean row.
    """
    parts = _as_parts(series)
    out: dict[str, dict[str, int]] = {p.source: {"rows": 0, "accepted": 0} for p in parts}
    for stream in _streams(parts):
        carry = -1  # the pipeline's last accepted ts of this symbol before the part
        for part in stream:
            _audit_part(part, carry, kinds, out[part.source])
            carry = _carry_after(part, carry)
    return out


def _classify(ts: np.ndarray, ohlcv: np.ndarray, carry: int, kinds: bool) -> tuple[dict[str, np.ndarray], int]:
    """Masks of accepted rows (and of each anomaly kind) of one chunk; the new last accepted ts."""
    ts = ts.astype(np.int64, copy=False)
    o, h, lo, c, v = ohlcv.T
    clean = clean_mask(ohlcv)
    with np.errstate(invalid="ignore"):
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


def _refuse_dead_files(parts: Sequence[Part], per_file: dict[str, dict[str, int]]) -> None:
    """A ``CandleFormatError`` naming each file that would give no bar at all, with counts by kind.

    Whether a part gives a bar needs no second read: its first clean row after the carry
    is accepted, so it gives one exactly when its latest clean ts is after the carry. The
    counts by kind of the dead files (only) are then read chunk by chunk.
    """
    alive: set[str] = set()
    carries: list[tuple[Part, int]] = []
    for stream in _streams(parts):
        carry = -1
        for part in stream:
            carries.append((part, carry))
            if part.last_clean_ts is not None and part.last_clean_ts > carry:
                alive.add(part.source)
            carry = _carry_after(part, carry)
    dead = [f for f in per_file if f not in alive]
    if not dead:
        return
    audit: dict[str, dict[str, int]] = {f: {"rows": 0, "accepted": 0} for f in dead}
    for part, carry in carries:
        if part.source in audit:
            _audit_part(part, carry, True, audit[part.source])
    problems = []
    only_order = True
    for f in dead:
        entry = audit[f]
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
