"""Candle files as streams of chunks, and their k-way merge in time order, in bounded memory.

A ``Part`` is the rows of one symbol from one file, in file order. ``Part.scan()`` reads
the file through once, chunk by chunk, and keeps only small facts: the row count, the
rows dropped as malformed, the first timestamp, the latest timestamp of a clean row (for
the build-time checks of the replay feed), and the funding rates of a ``funding_rate``
column (checked like ``read_candles`` does); it writes the one info line of a file whose
timestamps were not all in milliseconds. After the scan, every call of ``Part.chunks()``
gives the rows again from the first as ``(ts int64 ms, ohlcv float64 (n, 5))`` chunks:
exactly the rows and values ``read_candles`` gives for the file, in file order.

A streamed file is parsed once: its scan writes the parsed rows to a spill file (48 bytes a
row, an unnamed temporary file that the OS deletes when the process ends, however it ends),
and ``chunks()`` reads them back from it instead of parsing the text again (about a tenth
of a replay's bar loop: docs/PERFORMANCE.md, step 36) or decoding the Parquet column chunks
again (step 39). Where the spill cannot be written (a full or read-only temp dir, or less than
``SPILL_RESERVE_BYTES`` would be left free there: one warning line), ``chunks()`` reads the file
again as before.

Memory: a CSV is read by pyarrow's streaming reader in blocks of ``block_bytes`` bytes; a
Parquet file in batches of ``batch_rows`` rows. Held in memory whole (one part per symbol):
a CSV the fast reader cannot parse faithfully (a short row, text in a number column, a
header longer than a block, integer timestamps beyond 2**53), read by the row-by-row
reader of ``candles``, and a file with a ``symbol`` column and no ``SYMBOL=PATH``
override (several symbols in one file, as ``fetch-history`` writes), read by
``read_candles`` and split by symbol.

``merge_windows`` merges one stream of chunks per symbol into windows of rows in the
replay order (see ``prod_core.feeds.replay``): by the running maximum of the timestamps of
each symbol's stream (so a symbol's rows keep their file order), then by symbol rank,
then by position in the stream. It holds one chunk per symbol plus the window it yields.
"""

from __future__ import annotations

import errno
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from prod_core.feeds.candles import (
    CandleFormatError,
    CandleSeries,
    CsvLayout,
    ParquetLayout,
    RawChunk,
    SlowPathNeeded,
    _check_funding_column,
    _open_parquet,
    _read_csv_slow,
    check_candle_path,
    csv_layout,
    expand_data_args,
    is_parquet,
    iter_csv_fast,
    iter_parquet,
    log_units,
    normalize_ts,
    parquet_layout,
    read_candles,
    resolve_symbol,
    symbol_from_filename,
    ts_units,
)

log = logging.getLogger(__name__)

DEFAULT_BLOCK_BYTES = 64 << 10  # CSV bytes per block: ~1.2k canonical rows (docs/PERFORMANCE.md, step 26)
DEFAULT_BATCH_ROWS = 2048  # Parquet rows per batch, and rows per chunk of an in-memory part (step 26)
CHUNK_ROWS = 4096  # a streamed CSV's blocks are handed on in chunks of at least this many rows (step 26)


class Chunk(NamedTuple):
    ts: np.ndarray  # int64 epoch ms
    ohlcv: np.ndarray  # float64 (n, 5)


class KeyedChunk(NamedTuple):
    key: np.ndarray  # int64: running maximum of ts over the symbol's stream so far
    ts: np.ndarray
    ohlcv: np.ndarray


class Window(NamedTuple):
    """Rows in replay order: the merge key, ts, symbol rank and values of each row."""

    key: np.ndarray
    ts: np.ndarray
    sym: np.ndarray  # int64 symbol rank
    ohlcv: np.ndarray


def clean_mask(ohlcv: np.ndarray) -> np.ndarray:
    """Rows whose values the pipeline's hygiene accepts (``hygiene.is_clean`` minus the time test)."""
    o, h, lo, c, v = ohlcv.T
    with np.errstate(invalid="ignore"):
        return (0.0 < lo) & (lo <= o) & (o <= h) & (h < np.inf) & (lo <= c) & (c <= h) & (0.0 <= v) & (v < np.inf)


# ----------------------------------------------------------------- parts
def _release_arrow_memory() -> None:
    """Hand the memory pyarrow's pool keeps after a file's read back to the OS (the default
    mimalloc pool otherwise keeps tens of MiB of a long streaming replay resident)."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()


def _joined(ts: list[np.ndarray], ohlcv: list[np.ndarray]) -> Chunk:
    if len(ts) == 1:
        return Chunk(ts[0], ohlcv[0])
    return Chunk(np.concatenate(ts), np.concatenate(ohlcv))


SPILL = True  # a streamed file's scan keeps its parsed rows in a spill file (module doc)
# Free space a spill leaves on its file system: the temp dir often shares it with the database
# and the logs, and a replay must not fill it for them (past this, the file is read again)
SPILL_RESERVE_BYTES = 1 << 30


def _spill_file():  # type: ignore[no-untyped-def]
    """An unnamed temporary file in the temp dir (``TMPDIR``), gone when closed or the process ends."""
    return tempfile.TemporaryFile(prefix="crupto-spill-", buffering=0)


class Spill:
    """The parsed rows of one file, 6 x 8 bytes a row (ts int64 ms, then open..volume float64),
    written once by the scan and read back by offset, so any number of readers can run."""

    _warned = False

    def __init__(self, fh, source: str) -> None:  # type: ignore[no-untyped-def]
        self.fh = fh
        self.source = source
        self.rows = 0

    @classmethod
    def open(cls, source: str) -> Spill | None:
        try:
            return cls(_spill_file(), source)
        except OSError as exc:
            cls._failed(source, exc)
            return None

    @classmethod
    def _failed(cls, source: str, exc: OSError) -> None:
        if not cls._warned:
            cls._warned = True
            log.warning("%s: no spill file in the temp dir (%s): the replay reads the file again, "
                        "which is slower; free space in %s or point TMPDIR elsewhere",
                        source, exc.strerror or exc, tempfile.gettempdir())

    def add(self, ts: np.ndarray, ohlcv: np.ndarray) -> bool:
        """Append rows; False (and the file closed) when the write failed or would leave less than
        ``SPILL_RESERVE_BYTES`` free on the temp dir's file system."""
        n = int(ts.shape[0])
        if not n:
            return True
        rec = np.empty((n, 6), dtype=np.float64)
        rec[:, 1:] = ohlcv
        rec.view(np.int64)[:, 0] = ts
        data = memoryview(rec).cast("B")
        try:
            fd = self.fh.fileno()
            fs = os.fstatvfs(fd)
            if fs.f_bavail * fs.f_frsize - len(data) < SPILL_RESERVE_BYTES:
                raise OSError(errno.ENOSPC, f"it would leave less than {SPILL_RESERVE_BYTES >> 20} MiB free "
                                            "(stream.SPILL_RESERVE_BYTES)")
            while data:
                data = data[os.write(fd, data):]
            self.rows += n
            return True
        except OSError as exc:
            self._failed(self.source, exc)
            self.close()
            return False

    def close(self) -> None:
        try:
            self.fh.close()
        except OSError:
            pass

    def chunks(self, rows: int) -> Iterator[Chunk]:
        """The rows in file order, ``rows`` at a time."""
        fd = self.fh.fileno()
        for start in range(0, self.rows, rows):
            n = min(rows, self.rows - start)
            rec = np.empty((n, 6), dtype=np.float64)
            view = memoryview(rec).cast("B")
            off, done = start * 48, 0
            while done < n * 48:
                got = os.preadv(fd, [view[done:]], off + done)
                if got <= 0:
                    raise CandleFormatError(f"{self.source}: its spill file ended early (the temp dir changed under the replay)")
                done += got
            yield Chunk(rec.view(np.int64)[:, 0].copy(), rec[:, 1:].copy())


@dataclass(eq=False)
class Part:
    """One symbol's rows of one file (see module doc). Subclasses say how the file is read."""

    symbol: str
    source: str
    rows: int = 0
    first_ts: int | None = None  # ts of the first row; None for an empty part
    last_clean_ts: int | None = None  # latest ts of a row with clean values; None when there is none
    malformed: int = 0  # rows dropped by the reader
    funding: list[tuple[int, float]] = field(default_factory=list)  # (ts, rate) of the funding_rate column
    scanned: bool = False
    spill: Spill | None = None  # the scan's parsed rows, when it wrote them (module doc)

    label: str | None = None  # the ts column, for unit conversion; None: already in ms

    def _raw(self, funding: bool) -> Iterator[RawChunk]:
        raise NotImplementedError

    def _whole(self) -> RawChunk:
        """The whole file by the row-by-row reader, when ``_raw`` raised ``SlowPathNeeded``."""
        raise NotImplementedError

    def _ms(self, ts: np.ndarray) -> np.ndarray:
        return ts if self.label is None else normalize_ts(ts)

    def scan(self) -> None:
        """Read the file through once and keep its facts (see module doc)."""
        self.spill = None
        spill = Spill.open(self.source) if SPILL and self._spills() else None
        try:
            facts = _Facts(self)
            for raw in self._raw(funding=True):
                ts = facts.add(raw)
                if spill is not None and not spill.add(ts, raw.ohlcv):
                    spill = None
        except SlowPathNeeded:
            if spill is not None:
                spill.close()
                spill = None
            raw = self._whole()
            facts = _Facts(self)
            ts = facts.add(raw)
            self._keep(Chunk(ts, raw.ohlcv))
        finally:
            _release_arrow_memory()
        facts.apply()
        if spill is not None and spill.rows != self.rows:  # it must hold every row the scan counted
            spill.close()
            spill = None
        self.spill = spill

    def _spills(self) -> bool:
        """Whether the scan keeps the parsed rows in a spill file (a file read in a stream)."""
        return False

    def _keep(self, chunk: Chunk) -> None:
        raise NotImplementedError

    def chunks(self) -> Iterator[Chunk]:
        """The part's rows again from the first, chunk by chunk (``scan()`` first): from the spill
        file when the scan wrote one, else read from the file again."""
        if not self.scanned:
            raise RuntimeError(f"{self.source}: Part.chunks() before scan()")
        if self.spill is not None:
            yield from self.spill.chunks(CHUNK_ROWS)
            return
        for raw in self._raw(funding=False):
            yield Chunk(self._ms(raw.ts), raw.ohlcv)
        _release_arrow_memory()


class _Facts:
    """What ``Part.scan`` gathers over the chunks of one read of the file."""

    def __init__(self, part: Part) -> None:
        self.part = part
        self.rows = 0
        self.bad = 0
        self.first: int | None = None
        self.last_clean: int | None = None
        self.units: dict[str, int] = {}
        self.funding: list[tuple[int, float]] = []

    def add(self, raw: RawChunk) -> np.ndarray:
        """Fold one chunk in; its timestamps in ms."""
        self.bad += raw.bad
        if not raw.ts.size:
            return raw.ts
        if self.part.label is not None:
            for unit, n in ts_units(raw.ts).items():
                self.units[unit] = self.units.get(unit, 0) + n
        ts = self.part._ms(raw.ts)
        self.rows += int(ts.shape[0])
        if self.first is None:
            self.first = int(ts[0])
        clean = clean_mask(raw.ohlcv)
        if clean.any():
            top = int(ts[clean].max())
            self.last_clean = top if self.last_clean is None else max(self.last_clean, top)
        if raw.funding is not None:
            has = ~np.isnan(raw.funding)
            self.funding.extend(zip(ts[has].tolist(), raw.funding[has].tolist()))
        return ts

    def apply(self) -> None:
        """Check the funding rates (as ``read_candles`` does: the first bad one in file order),
        write the units line, and hand the facts to the part."""
        p = self.part
        if self.funding:
            ts, rates = zip(*self.funding)
            _check_funding_column(np.asarray(rates, dtype=np.float64), np.asarray(ts), Path(p.source))
        if p.label is not None:
            log_units(Path(p.source), p.label, self.units)
        p.rows, p.malformed, p.first_ts, p.last_clean_ts = self.rows, self.bad, self.first, self.last_clean
        p.funding = self.funding
        p.scanned = True


@dataclass(eq=False)
class MemoryPart(Part):
    """A part whose rows are already in memory (ts in ms), handed out in chunks of ``chunk_rows``."""

    ts: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    ohlcv: np.ndarray = field(default_factory=lambda: np.empty((0, 5)))
    rates: np.ndarray | None = None
    chunk_rows: int = DEFAULT_BATCH_ROWS

    @classmethod
    def of(cls, series: CandleSeries, chunk_rows: int = DEFAULT_BATCH_ROWS, malformed: int = 0) -> MemoryPart:
        part = cls(series.symbol, series.source, ts=series.ts, ohlcv=series.ohlcv, rates=series.funding,
                   chunk_rows=chunk_rows)
        part.scan()
        part.malformed = malformed
        return part

    def _raw(self, funding: bool) -> Iterator[RawChunk]:
        step = max(1, int(self.chunk_rows))
        for i in range(0, int(self.ts.shape[0]), step):
            rates = self.rates[i : i + step] if funding and self.rates is not None else None
            yield RawChunk(self.ts[i : i + step], self.ohlcv[i : i + step], None, rates, 0)


@dataclass(eq=False)
class CsvPart(Part):
    """A CSV streamed by pyarrow, or (``SlowPathNeeded`` at the scan) read whole row by row and kept."""

    layout: CsvLayout | None = None
    block_bytes: int = DEFAULT_BLOCK_BYTES
    kept: Chunk | None = None

    def _spills(self) -> bool:
        return self.layout is not None and self.layout.fast

    def _raw(self, funding: bool) -> Iterator[RawChunk]:
        if self.kept is not None:
            yield RawChunk(self.kept.ts, self.kept.ohlcv, None, None, 0)
            return
        assert self.layout is not None
        if not self.layout.fast:
            raise SlowPathNeeded
        try:
            yield from iter_csv_fast(Path(self.source), self.layout, self.block_bytes, funding)
        except SlowPathNeeded:
            if self.scanned:  # it parsed at the scan: the file changed under the replay
                raise CandleFormatError(f"{self.source}: the file changed while it was replayed") from None
            raise

    def _whole(self) -> RawChunk:
        assert self.layout is not None
        return _read_csv_slow(Path(self.source), self.layout)

    def _keep(self, chunk: Chunk) -> None:
        self.kept = chunk

    def chunks(self) -> Iterator[Chunk]:
        """The blocks joined into chunks of at least ``CHUNK_ROWS`` rows: small blocks keep pyarrow's
        memory low, larger chunks keep the replay's windows (and their per-window costs) as they were.
        After a scan that spilled, the rows come back from the spill file instead."""
        if self.spill is not None:  # (never with ``kept``: the slow path drops the spill)
            yield from super().chunks()
            return
        if self.kept is None:
            ts_parts: list[np.ndarray] = []
            ohlcv_parts: list[np.ndarray] = []
            held = 0
            for chunk in super().chunks():
                if not chunk.ts.shape[0]:
                    continue
                ts_parts.append(chunk.ts)
                ohlcv_parts.append(chunk.ohlcv)
                held += int(chunk.ts.shape[0])
                if held >= CHUNK_ROWS:
                    yield _joined(ts_parts, ohlcv_parts)
                    ts_parts, ohlcv_parts, held = [], [], 0
            if held:
                yield _joined(ts_parts, ohlcv_parts)
            return
        ts, ohlcv = self.kept
        for i in range(0, int(ts.shape[0]), DEFAULT_BATCH_ROWS):
            yield Chunk(ts[i : i + DEFAULT_BATCH_ROWS], ohlcv[i : i + DEFAULT_BATCH_ROWS])


@dataclass(eq=False)
class ParquetPart(Part):
    """A Parquet file read in batches of ``batch_rows`` rows."""

    layout: ParquetLayout | None = None
    batch_rows: int = DEFAULT_BATCH_ROWS

    def _spills(self) -> bool:
        return True

    def _raw(self, funding: bool) -> Iterator[RawChunk]:
        assert self.layout is not None
        yield from iter_parquet(Path(self.source), self.layout, self.batch_rows, funding)


@dataclass(eq=False)
class DataFile:
    """One ``--data`` file and its parts (one per symbol), scanned."""

    path: Path
    parts: list[Part]
    dropped: int = 0  # malformed rows of a whole read that gave no part to carry them

    @property
    def malformed(self) -> int:
        return self.dropped + sum(p.malformed for p in self.parts)


def open_file(
    symbol: str | None,
    path: Path,
    known_symbols: Sequence[str] = (),
    *,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> DataFile:
    """The parts of one candle file, scanned (``symbol``: a ``SYMBOL=PATH`` override)."""
    p = check_candle_path(path)
    if is_parquet(p):
        pf = _open_parquet(p)
        try:
            layout = parquet_layout(p, pf.schema_arrow)
        finally:
            pf.close()
        if symbol is None and layout.sym_col is not None:
            return _whole_file(p, known_symbols, batch_rows)
        name = _symbol_of(symbol, p, known_symbols)
        part: Part = ParquetPart(name, str(p), label=layout.label, layout=layout, batch_rows=batch_rows)
    else:
        csv = csv_layout(p)
        if symbol is None and csv is not None and csv.sym_col is not None:
            return _whole_file(p, known_symbols, batch_rows)
        name = _symbol_of(symbol, p, known_symbols)
        if csv is None:
            part = MemoryPart(name, str(p), chunk_rows=batch_rows)
        else:
            part = CsvPart(name, str(p), label=csv.label, layout=csv, block_bytes=block_bytes)
    part.scan()
    return DataFile(p, [part])


def _symbol_of(symbol: str | None, path: Path, known_symbols: Sequence[str]) -> str:
    """The ``SYMBOL=PATH`` override resolved, else the symbol the file name tells."""
    return resolve_symbol(symbol, path, known_symbols) if symbol is not None else symbol_from_filename(path, known_symbols)


def _whole_file(path: Path, known_symbols: Sequence[str], chunk_rows: int) -> DataFile:
    """A file with a symbol column: read whole, one in-memory part per symbol."""
    dropped: dict[str, int] = {}
    series = read_candles(path, None, known_symbols, dropped)
    parts: list[Part] = [MemoryPart.of(s, chunk_rows) for s in series]
    return DataFile(path, parts, dropped.get("malformed", 0))


def open_data_args(
    data: Sequence[str],
    known_symbols: Sequence[str] = (),
    *,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> list[DataFile]:
    """Every ``--data`` argument (``PATH`` or ``SYMBOL=PATH``, directories expanded), scanned."""
    return [
        open_file(sym, f, known_symbols, block_bytes=block_bytes, batch_rows=batch_rows)
        for sym, f in expand_data_args(data)
    ]


# ----------------------------------------------------------------- merge
def symbol_streams(parts: Sequence[Part], order: dict[str, int]) -> list[list[Part]]:
    """Per symbol rank, its non-empty parts ordered by first timestamp (stable: equal starts
    keep argument order)."""
    streams: list[list[Part]] = [[] for _ in order]
    for part in parts:
        if part.rows:
            streams[order[part.symbol]].append(part)
    for stream in streams:
        stream.sort(key=lambda p: int(p.first_ts or 0))
    return streams


def keyed_chunks(parts: Sequence[Part]) -> Iterator[KeyedChunk]:
    """The chunks of one symbol's parts in order, each with its running-maximum key."""
    carry: int | None = None
    for part in parts:
        for ts, ohlcv in part.chunks():
            if not ts.shape[0]:
                continue
            key = np.maximum.accumulate(ts)
            if carry is not None and key[0] < carry:
                np.maximum(key, carry, out=key)
            carry = int(key[-1])
            yield KeyedChunk(key, ts, ohlcv)


def merge_windows(streams: Sequence[Iterator[KeyedChunk]]) -> Iterator[Window]:
    """Windows of rows in (key, symbol rank, stream position) order; ``streams[r]`` is rank r.

    Each symbol has a current chunk. A window takes, from every current chunk, the rows
    that sort at or before the bound ``(last key of a current chunk, its rank)`` (the
    least over the symbols): no row still unread can sort before them, since keys never
    decrease within a stream. The chunk that set the bound is used up; it is refilled
    before the next window.
    """
    n = len(streams)
    bufs: list[KeyedChunk | None] = [None] * n
    pos = [0] * n
    done = [False] * n
    while True:
        for s in range(n):  # refill used-up chunks (streams never yield an empty one)
            while not done[s] and (bufs[s] is None or pos[s] >= bufs[s].key.shape[0]):  # type: ignore[union-attr]
                bufs[s], pos[s] = next(streams[s], None), 0
                done[s] = bufs[s] is None
        live = [s for s in range(n) if bufs[s] is not None]
        if not live:
            return
        bound_key, bound_sym = min((int(bufs[s].key[-1]), s) for s in live)  # type: ignore[union-attr]
        taken: list[tuple[int, KeyedChunk]] = []
        for s in live:
            buf = bufs[s]
            assert buf is not None
            i = pos[s]
            side = "right" if s <= bound_sym else "left"
            j = i + int(np.searchsorted(buf.key[i:], bound_key, side=side))
            if j > i:
                taken.append((s, KeyedChunk(buf.key[i:j], buf.ts[i:j], buf.ohlcv[i:j])))
                pos[s] = j
        yield _window(taken)


def _window(taken: list[tuple[int, KeyedChunk]]) -> Window:
    """Concatenate the rows taken (in rank order) and sort them stably by key."""
    if len(taken) == 1:
        s, c = taken[0]
        return Window(c.key, c.ts, np.full(c.key.shape[0], s, dtype=np.int64), c.ohlcv)
    key = np.concatenate([c.key for _, c in taken])
    order = np.argsort(key, kind="stable")
    ts = np.concatenate([c.ts for _, c in taken])[order]
    sym = np.concatenate([np.full(c.key.shape[0], s, dtype=np.int64) for s, c in taken])[order]
    ohlcv = np.concatenate([c.ohlcv for _, c in taken])[order]
    return Window(key[order], ts, sym, ohlcv)

