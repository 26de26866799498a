"""Candle file readers for the replay feed.

Supported inputs (one symbol per file unless the file has a ``symbol`` column):

- canonical CSV ``ts_ms,open,high,low,close,volume`` (header optional, extra columns
  ignored, an optional ``symbol`` column), and what ``fetch-history`` writes
  (the canonical columns plus ``symbol``);
- Binance public kline dumps: 12 columns ``open_time,open,high,low,close,volume,
  close_time,...`` with or without a header; open times in milliseconds or microseconds
  (spot dumps since 2025 use microseconds);
- Parquet with the same column names (``ts_ms`` may also be a timestamp column).

Any of them may carry a ``funding_rate`` column: the perp funding rate settled at the
bar's timestamp (a fraction, 0.0001 = 0.01%), empty or NaN on the other bars. It is kept
in ``CandleSeries.funding`` and never touches the bars; a non-numeric value or one beyond
+/- ``MAX_FUNDING_RATE`` is a ``CandleFormatError``. Side files ``X.funding.csv`` next to
``X.csv`` are read by ``prod_core.feeds.funding_file`` and skipped when a directory is expanded.

The unit of a timestamp is told by its magnitude, row by row, and converted to
milliseconds: for any date after 1973-03 the four units cannot be confused
(seconds < 1e11 <= milliseconds < 1e14 <= microseconds < 1e17 <= nanoseconds). Values
below 1e8 (not a date after 1973 in seconds) are left as they are. A file whose
timestamps were not all in milliseconds gets one info log line naming the unit(s).

The readers never judge prices: unparseable numbers become ``nan`` and travel on as
bars, so that the pipeline's hygiene rejects and counts them like any other malformed
bar. Only rows that cannot become a bar at all (too few columns, no usable timestamp)
are dropped here, counted under ``rejected["malformed"]``.

Each format has a whole-file reader (``read_candles``) and a chunked one
(``iter_csv_fast``: pyarrow's streaming CSV reader; ``iter_parquet``: Parquet batches) that
give the same rows; the replay feed streams through the chunked ones (``stream``). A CSV
pyarrow cannot parse faithfully goes to the row-by-row reader, which reads it whole.

The symbol of a file comes, in this order, from an explicit ``SYMBOL=PATH`` argument,
a ``symbol`` column, or the file name (``BTCUSDT-1m-2025-03.csv``,
``BYBIT_BTCUSDT_5m.csv``, ``BTC_USDT_1h.parquet``). A name that names no symbol, or
more than one, is a ``CandleFormatError`` that says how to fix it.
"""

from __future__ import annotations

import csv
import logging
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

NAN = math.nan
log = logging.getLogger(__name__)

# Column name aliases (lower case).
TS_NAMES = ("ts_ms", "timestamp", "open_time", "opentime", "ts", "time", "t")
OHLCV_NAMES = (
    ("open", "o"),
    ("high", "h"),
    ("low", "l"),
    ("close", "c"),
    ("volume", "v", "vol"),
)
SYMBOL_NAMES = ("symbol", "pair", "instrument")
FUNDING_NAMES = ("funding_rate",)
MAX_FUNDING_RATE = 0.03
"""Largest believable funding rate per interval (3%); larger values are unit mistakes (percent)."""
FUNDING_SUFFIX = ".funding.csv"

# Quote currencies used to split a concatenated pair such as BTCUSDT (longest first).
QUOTES = (
    "FDUSD", "USDT", "USDC", "BUSD", "TUSD", "USDP", "USDE", "DAI", "USD", "EUR", "GBP",
    "TRY", "BRL", "JPY", "AUD", "BTC", "ETH", "BNB",
)
_NOT_SYMBOL_TOKENS = {
    "KLINES", "KLINE", "CANDLES", "CANDLE", "OHLCV", "DATA", "SPOT", "PERP", "SWAP", "FUTURES",
    "UM", "CM", "MONTHLY", "DAILY", "HISTORY",
}
_TF_TOKEN = re.compile(r"^\d+[SMHDW]$")
_UNIFIED = re.compile(r"^[A-Z0-9]+/[A-Z0-9]+(:[A-Z0-9]+)?$")
_DATA_ARG = re.compile(r"^([A-Za-z0-9]+(?:[/_-][A-Za-z0-9]+)?(?::[A-Za-z0-9]+)?)=(.+)$")

S_THRESHOLD = 100_000_000  # 1e8: 1973-03-03 in seconds; smaller values are left as they are
MS_THRESHOLD = 100_000_000_000  # 1e11: from here an epoch timestamp is in milliseconds (1973-03 in ms)
US_THRESHOLD = 100_000_000_000_000  # 1e14: microseconds
NS_THRESHOLD = 100_000_000_000_000_000  # 1e17: nanoseconds


class CandleFormatError(ValueError):
    """A candle file that cannot be read, or whose symbol cannot be told."""


@dataclass(slots=True)
class CandleSeries:
    """The rows of one symbol from one file, in file order (not sorted, not validated)."""

    symbol: str
    source: str
    ts: np.ndarray  # int64 epoch ms of the bar open
    ohlcv: np.ndarray  # float64, shape (n, 5)
    funding: np.ndarray | None = None  # float64 (n,): rate settled at the bar's ts, NaN elsewhere

    def funding_rows(self) -> list[tuple[int, float]]:
        """``(ts_ms, rate)`` of the rows that carry a funding rate, in file order."""
        if self.funding is None:
            return []
        has = ~np.isnan(self.funding)
        return list(zip(self.ts[has].tolist(), self.funding[has].tolist()))

    def __len__(self) -> int:
        return int(self.ts.shape[0])


# ----------------------------------------------------------------- symbols
def _split_pair(raw: str) -> str | None:
    """'BTCUSDT' -> 'BTC/USDT' by a known quote suffix; None when no quote fits."""
    for quote in QUOTES:
        if raw.endswith(quote) and len(raw) > len(quote):
            base = raw[: -len(quote)]
            if base.isalnum() and not base.isdigit():
                return f"{base}/{quote}"
    return None


def normalize_symbol(raw: str, known: Sequence[str] = ()) -> str | None:
    """A unified symbol ('BTC/USDT') for 'BTC/USDT', 'BTCUSDT', 'btc-usdt', 'BTC_USDT'...

    When ``known`` (configured symbols) contains a match it wins, so ``BTCUSDT`` maps to a
    configured ``BTC/USDT:USDT`` too. None when nothing fits.
    """
    text = raw.strip().upper()
    if not text:
        return None
    flat = re.sub(r"[/_\-:]", "", text.split(":")[0])
    for sym in known:
        if sym.upper() == text:
            return sym
    for sym in known:
        if re.sub(r"[/_\-]", "", sym.upper().split(":")[0]) == flat:
            return sym
    if _UNIFIED.match(text):
        return text
    m = re.match(r"^([A-Z0-9]+)[_\-]([A-Z0-9]+)$", text)
    if m:
        return f"{m.group(1)}/{m.group(2)}"
    if text.isalnum():
        return _split_pair(text)
    return None


def symbol_from_filename(path: str | Path, known: Sequence[str] = ()) -> str:
    """The symbol a file name names, or a ``CandleFormatError`` (none, or ambiguous)."""
    name = Path(path).name
    stem = name
    for suffix in (".csv.gz", ".csv", ".parquet", ".pq", ".txt"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    tokens = [t for t in re.split(r"[-_.\s]+", stem.upper()) if t]
    candidates: list[str] = []

    def add(sym: str | None) -> None:
        if sym is not None and sym not in candidates:
            candidates.append(sym)

    for i, tok in enumerate(tokens):
        if tok.isdigit() or _TF_TOKEN.match(tok) or tok in _NOT_SYMBOL_TOKENS or tok in QUOTES:
            # a bare quote may still pair with the token before it: BTC_USDT_1m.csv
            if tok in QUOTES and i > 0:
                prev = tokens[i - 1]
                if prev.isalnum() and not prev.isdigit() and not _TF_TOKEN.match(prev):
                    add(normalize_symbol(f"{prev}/{tok}", known))
            continue
        add(normalize_symbol(tok, known))
    if known:
        in_config = [c for c in candidates if c in known]
        if in_config:
            candidates = in_config
    # a pair token 'BTC/USDT' and a single token that is only a base ('BTC') do not conflict
    if len(candidates) == 1:
        return candidates[0]
    hint = "add a 'symbol' column, pass SYMBOL=PATH (e.g. BTC/USDT=data.csv), or name the file like BTCUSDT-1m-2025-03.csv"
    if not candidates:
        raise CandleFormatError(f"{path}: cannot tell the symbol from the file name; {hint}")
    raise CandleFormatError(
        f"{path}: ambiguous file name, it could be any of {', '.join(candidates)}; {hint}"
    )


def parse_data_arg(arg: str) -> tuple[str | None, str]:
    """Split ``SYMBOL=PATH`` (``BTC/USDT=x.csv``, ``BTCUSDT=x.csv``) from a plain PATH."""
    m = _DATA_ARG.match(arg)
    if m and not Path(arg).exists():
        return m.group(1), m.group(2)
    return None, arg


# ----------------------------------------------------------------- columns
def _find(names: Sequence[str], aliases: Iterable[str]) -> int | None:
    for alias in aliases:
        if alias in names:
            return names.index(alias)
    return None


def _column_map(header: Sequence[str], path: str | Path) -> tuple[list[int], int | None, int | None]:
    """Indices of ts, open, high, low, close, volume (and symbol, funding rate or None) in a header."""
    names = [h.strip().strip('"').lower() for h in header]
    ts = _find(names, TS_NAMES)
    cols = [ts] + [_find(names, aliases) for aliases in OHLCV_NAMES]
    if any(c is None for c in cols):
        missing = [n for n, c in zip(("ts_ms", "open", "high", "low", "close", "volume"), cols) if c is None]
        raise CandleFormatError(
            f"{path}: header {','.join(names)} lacks column(s) {', '.join(missing)}; expected "
            "ts_ms,open,high,low,close,volume (or a Binance 12-column kline dump)"
        )
    symbol, funding = _find(names, SYMBOL_NAMES), _find(names, FUNDING_NAMES)
    return [int(c) for c in cols], symbol, funding  # type: ignore[arg-type]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def ts_units(ts: np.ndarray) -> dict[str, int]:
    """Rows per detected unit (``s``, ``ms``, ``us``, ``ns``) of raw epoch timestamps."""
    ts = np.asarray(ts, dtype=np.int64)
    edges = np.array([S_THRESHOLD, MS_THRESHOLD, US_THRESHOLD, NS_THRESHOLD], dtype=np.int64)
    counts = np.bincount(np.searchsorted(edges, ts, side="right"), minlength=5)
    # bin 0: below 1e8, left as is (counted as ms); 1: s; 2: ms; 3: us; 4: ns
    out = {"s": int(counts[1]), "ms": int(counts[0] + counts[2]), "us": int(counts[3]), "ns": int(counts[4])}
    return {unit: n for unit, n in out.items() if n}


def normalize_ts(ts: np.ndarray) -> np.ndarray:
    """Convert second / microsecond / nanosecond epoch values to milliseconds, element-wise."""
    ts = ts.astype(np.int64, copy=True)
    seconds = (ts >= S_THRESHOLD) & (ts < MS_THRESHOLD)
    big = ts >= US_THRESHOLD
    if big.any():
        huge = ts >= NS_THRESHOLD
        ts[big & ~huge] //= 1000
        ts[huge] //= 1_000_000
    if seconds.any():
        ts[seconds] *= 1000
    return ts


_UNIT_NAMES = {"s": "seconds", "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds"}


def log_units(path: Path, column: str, units: dict[str, int]) -> None:
    """The one info line of a file whose timestamps (``ts_units`` counts) were not all in ms."""
    if units and set(units) != {"ms"}:
        found = ", ".join(f"{_UNIT_NAMES[u]} ({n} rows)" for u, n in units.items())
        log.info("%s: timestamps of column %s detected in %s; converted to milliseconds", path, column, found)


def _to_ms(ts: np.ndarray, path: Path, column: str) -> np.ndarray:
    """``normalize_ts`` plus one info line when the file was not all in milliseconds."""
    if not ts.size:
        return ts.astype(np.int64)
    log_units(path, column, ts_units(ts))
    return normalize_ts(ts)


def _to_float(text: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return NAN


TS_LIMIT = 2**62  # beyond any epoch nanosecond; larger values are garbage


def _to_ts(text: str) -> int | None:
    text = text.strip()
    try:
        value = int(text)
    except ValueError:
        try:
            f = float(text)
        except ValueError:
            return None
        if not math.isfinite(f):
            return None
        value = int(f)
    return value if -TS_LIMIT < value < TS_LIMIT else None


# --------------------------------------------------------------------- CSV
FAST_TS_LIMIT = 2**53  # float64 holds integers exactly up to here; beyond, the row-by-row reader parses them


class SlowPathNeeded(Exception):
    """The pyarrow reader cannot parse this file faithfully: read it row by row (``_read_csv_slow``)."""


@dataclass(frozen=True, slots=True)
class CsvLayout:
    """What the first non-blank row of a CSV tells: header or not, and where each column is."""

    has_header: bool
    cols: list[int]  # ts, open, high, low, close, volume
    sym_col: int | None
    fund_col: int | None
    ncols: int  # cells of the first row
    label: str  # the ts column's name, "1" without a header

    @property
    def need(self) -> int:
        """Cells a row needs to become a bar."""
        return max(self.cols + [c for c in (self.sym_col, self.fund_col) if c is not None]) + 1

    @property
    def fast(self) -> bool:
        """Whether pyarrow's reader may try the file (the first row holds every needed column)."""
        return self.ncols >= self.need


@dataclass(slots=True)
class RawChunk:
    """Rows of one file read at once: raw epoch ts (unit not yet normalised), values, and the
    count of rows dropped because they cannot become a bar."""

    ts: np.ndarray  # int64
    ohlcv: np.ndarray  # float64 (n, 5)
    syms: list[str] | None
    funding: np.ndarray | None
    bad: int


def csv_layout(path: Path) -> CsvLayout | None:
    """The layout of a CSV from its first non-blank row; None for a file without one."""
    with open(path, newline="", encoding="utf-8-sig") as fh:
        first = next((row for row in csv.reader(fh) if row and any(cell.strip() for cell in row)), None)
    if first is None:
        return None
    if not _is_number(first[0].strip()):
        cols, sym_col, fund_col = _column_map(first, path)
        return CsvLayout(True, cols, sym_col, fund_col, len(first), first[cols[0]].strip().strip('"'))
    if len(first) < 6:
        raise CandleFormatError(f"{path}: first row has {len(first)} columns; expected ts_ms,open,high,low,close,volume")
    return CsvLayout(False, [0, 1, 2, 3, 4, 5], None, None, len(first), "1")


def _csv_options(layout: CsvLayout, symbols: bool, funding: bool, block_size: int | None):
    """(column names, pyarrow read options, convert options) for the columns asked for."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    names = [f"c{i}" for i in range(layout.ncols)]
    types = {names[c]: pa.float64() for c in layout.cols}
    if funding and layout.fund_col is not None:
        types[names[layout.fund_col]] = pa.float64()
    if symbols and layout.sym_col is not None:
        types[names[layout.sym_col]] = pa.string()
    read = pacsv.ReadOptions(column_names=names, skip_rows=1 if layout.has_header else 0)
    if block_size is not None:
        read.block_size = int(block_size)
    convert = pacsv.ConvertOptions(column_types=types, include_columns=list(types), strings_can_be_null=True)
    return names, read, convert


def _fast_block(block, names: list[str], layout: CsvLayout, symbols: bool, funding: bool) -> RawChunk:
    """The arrays of a pyarrow table or record batch read by ``_csv_options``; ``SlowPathNeeded``
    when a timestamp is too large for float64 to hold exactly."""

    def column(c: int) -> np.ndarray:
        return np.asarray(block.column(names[c]).to_numpy(zero_copy_only=False), dtype=np.float64)

    ts_f = column(layout.cols[0])
    valid = np.isfinite(ts_f)
    bad = int((~valid).sum())
    if bad and np.any(np.abs(ts_f[valid]) >= FAST_TS_LIMIT):
        raise SlowPathNeeded
    if bad:
        ts_f = ts_f[valid]
    if ts_f.size and np.any(ts_f >= FAST_TS_LIMIT):
        raise SlowPathNeeded
    ohlcv = np.column_stack([column(c) for c in layout.cols[1:]]) if block.num_rows else np.empty((0, 5))
    if bad:
        ohlcv = ohlcv[valid]
    syms = None
    if symbols and layout.sym_col is not None:
        raw = block.column(names[layout.sym_col]).to_pylist()
        syms = [(s or "").strip() for s, ok in zip(raw, valid) if ok]
    rates = None
    if funding and layout.fund_col is not None:
        rates = column(layout.fund_col)
        rates = rates[valid] if bad else rates
    return RawChunk(ts_f.astype(np.int64), ohlcv, syms, rates, bad)


def _read_csv_fast(path: Path, layout: CsvLayout) -> RawChunk:
    """pyarrow's CSV reader over the whole file; ``SlowPathNeeded`` when it needs the row-by-row path."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    names, read, convert = _csv_options(layout, True, True, None)
    try:
        table = pacsv.read_csv(path, read_options=read, convert_options=convert)
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeDecodeError):
        raise SlowPathNeeded from None
    return _fast_block(table, names, layout, True, True)


def _stream_pool():
    """jemalloc when pyarrow has it: it hands freed blocks back to the OS, where the default
    mimalloc pool keeps tens of MiB of a long streaming read resident. None: the default."""
    import pyarrow as pa

    try:
        return pa.jemalloc_memory_pool()
    except (NotImplementedError, AttributeError):
        return None


def iter_csv_fast(path: Path, layout: CsvLayout, block_size: int, funding: bool = True) -> Iterator[RawChunk]:
    """pyarrow's streaming CSV reader, one ``RawChunk`` per block of about ``block_size`` bytes
    (no symbol column). ``SlowPathNeeded`` as soon as a block cannot be parsed faithfully:
    the chunks already given must then be thrown away and the file read by ``_read_csv_slow``."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    names, read, convert = _csv_options(layout, False, funding, block_size)
    read.use_threads = False  # one block at a time: bounded memory
    try:
        reader = pacsv.open_csv(path, read_options=read, convert_options=convert, memory_pool=_stream_pool())
        with reader:
            for batch in reader:
                yield _fast_block(batch, names, layout, False, funding)
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeDecodeError):
        raise SlowPathNeeded from None


def _read_csv_slow(path: Path, layout: CsvLayout) -> RawChunk:
    """The row-by-row reader for files pyarrow refuses: every cell parsed on its own, a row
    that cannot become a bar counted as ``bad``. Loads the whole file."""
    cols, sym_col, fund_col, need = layout.cols, layout.sym_col, layout.fund_col, layout.need
    c_ts, c_o, c_h, c_l, c_c, c_v = cols
    ts_list: list[int] = []
    rates: list[float] | None = [] if fund_col is not None else None
    rows: list[tuple[float, float, float, float, float]] = []
    syms: list[str] | None = [] if sym_col is not None else None
    malformed = 0
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        started = False
        for row in reader:
            blank = not (row and any(cell.strip() for cell in row))
            if not started:
                if blank:
                    continue
                started = True
                if layout.has_header:
                    continue
            if len(row) < need:
                if not blank:
                    malformed += 1
                continue
            ts = _to_ts(row[c_ts])
            if ts is None:
                malformed += 1
                continue
            ts_list.append(ts)
            rows.append((_to_float(row[c_o]), _to_float(row[c_h]), _to_float(row[c_l]),
                         _to_float(row[c_c]), _to_float(row[c_v])))
            if syms is not None:
                syms.append(row[sym_col].strip())
            if rates is not None:
                rates.append(_to_rate(row[fund_col], path, reader.line_num))
    ts_arr = np.asarray(ts_list, dtype=np.int64) if ts_list else np.empty(0, np.int64)
    ohlcv = np.asarray(rows, dtype=np.float64).reshape(-1, 5)
    funding = None if rates is None else np.asarray(rates, dtype=np.float64)
    return RawChunk(ts_arr, ohlcv, syms, funding, malformed)


def _read_csv(path: Path) -> tuple[RawChunk, str]:
    """The whole CSV (pyarrow, else row by row) and its ts column label."""
    layout = csv_layout(path)
    if layout is None:
        return RawChunk(np.empty(0, np.int64), np.empty((0, 5)), None, None, 0), "1"
    if layout.fast:
        try:
            return _read_csv_fast(path, layout), layout.label
        except SlowPathNeeded:
            pass
    return _read_csv_slow(path, layout), layout.label


def _to_rate(text: str, path: Path, line: int | None = None) -> float:
    """A ``funding_rate`` cell: empty or ``nan`` is no rate (NaN); other text is refused."""
    text = text.strip()
    if not text:
        return NAN
    try:
        return float(text)
    except ValueError:
        where = path if line is None else f"{path}:{line}"
        raise CandleFormatError(
            f"{where}: funding_rate {text!r} is not a number; write the rate as a fraction "
            "(0.0001 = 0.01%) on the funding-time bar and leave the other rows empty"
        ) from None


# ----------------------------------------------------------------- Parquet
@dataclass(frozen=True, slots=True)
class ParquetLayout:
    """Column names of a Parquet file's ts, open, high, low, close, volume (and symbol, funding)."""

    cols: list[str]
    sym_col: str | None
    fund_col: str | None
    label: str | None  # None for a timestamp-typed ts column (converted to ms, no unit guess)


def _open_parquet(path: Path):
    import pyarrow.parquet as pq

    try:
        # no pre-buffering: a whole row group's column chunks would sit in memory per open file
        return pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 16)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise CandleFormatError(f"{path}: not a readable Parquet file: {exc}") from None


def parquet_layout(path: Path, schema) -> ParquetLayout:
    """The layout of a Parquet file from its (arrow) schema."""
    import pyarrow as pa

    names = list(schema.names)
    cols, sym_col, fund_col = _column_map(names, path)
    ts_name = names[cols[0]]
    label = None if pa.types.is_timestamp(schema.field(ts_name).type) else ts_name
    return ParquetLayout(
        [names[c] for c in cols],
        None if sym_col is None else names[sym_col],
        None if fund_col is None else names[fund_col],
        label,
    )


def _parquet_block(block, layout: ParquetLayout, path: Path, symbols: bool, funding: bool) -> RawChunk:
    """The arrays of a pyarrow table or record batch holding the layout's columns."""
    import pyarrow as pa
    import pyarrow.compute as pc

    ts_arr = block.column(layout.cols[0])
    if pa.types.is_timestamp(ts_arr.type):
        ts_arr = pc.cast(ts_arr, pa.timestamp("ms")).cast(pa.int64())
    elif not pa.types.is_integer(ts_arr.type):
        try:
            ts_arr = pc.cast(ts_arr, pa.float64())
        except pa.ArrowInvalid:
            ts_arr = pa.array([_to_ts(str(x)) if x is not None else None for x in ts_arr.to_pylist()],
                              type=pa.float64())
    ts_np = np.asarray(ts_arr.to_numpy(zero_copy_only=False), dtype=np.float64)
    valid = np.isfinite(ts_np) & (np.abs(np.nan_to_num(ts_np)) < TS_LIMIT)
    bad = int((~valid).sum())
    values = []
    for name in layout.cols[1:]:
        arr = block.column(name)
        if not (pa.types.is_floating(arr.type) or pa.types.is_integer(arr.type)):
            arr = pa.array([_to_float(str(x)) if x is not None else NAN for x in arr.to_pylist()], type=pa.float64())
        values.append(np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.float64))
    ohlcv = np.column_stack(values) if values and len(values[0]) else np.empty((0, 5))
    ts = ts_np[valid].astype(np.int64)
    ohlcv = ohlcv[valid] if len(ohlcv) else ohlcv
    syms = None
    if symbols and layout.sym_col is not None:
        raw = block.column(layout.sym_col).to_pylist()
        syms = [str(s) if s is not None else "" for s, ok in zip(raw, valid) if ok]
    rates = None
    if funding and layout.fund_col is not None:
        arr = block.column(layout.fund_col)
        if not (pa.types.is_floating(arr.type) or pa.types.is_integer(arr.type) or pa.types.is_null(arr.type)):
            arr = pa.array([_to_rate(str(x), path) if x is not None else NAN for x in arr.to_pylist()],
                           type=pa.float64())
        rates = np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.float64)[valid]
    return RawChunk(ts, ohlcv, syms, rates, bad)


def _read_parquet(path: Path) -> tuple[RawChunk, str | None]:
    """The whole Parquet file and its ts label (None for a timestamp-typed column, already in ms)."""
    pf = _open_parquet(path)
    layout = parquet_layout(path, pf.schema_arrow)
    try:
        table = pf.read()
    except Exception as exc:
        raise CandleFormatError(f"{path}: not a readable Parquet file: {exc}") from None
    return _parquet_block(table, layout, path, True, True), layout.label


def iter_parquet(path: Path, layout: ParquetLayout, batch_rows: int, funding: bool = True) -> Iterator[RawChunk]:
    """The file's row groups in batches of at most ``batch_rows`` rows (no symbol column)."""
    pf = _open_parquet(path)
    columns = list(dict.fromkeys(layout.cols + ([layout.fund_col] if funding and layout.fund_col else [])))
    try:
        batches = pf.iter_batches(batch_size=max(1, int(batch_rows)), columns=columns, use_threads=False)
        for batch in batches:
            yield _parquet_block(batch, layout, path, False, funding)
    except CandleFormatError:
        raise
    except Exception as exc:
        raise CandleFormatError(f"{path}: not a readable Parquet file: {exc}") from None
    finally:
        pf.close()


# ------------------------------------------------------------------ public
def is_parquet(path: Path) -> bool:
    return path.suffix.lower() in (".parquet", ".pq")


def check_candle_path(path: str | Path) -> Path:
    """``path`` as a ``Path``; a ``CandleFormatError`` when it is no file or is a funding side file."""
    p = Path(path)
    if not p.is_file():
        raise CandleFormatError(f"{path}: no such file")
    if p.name.lower().endswith(FUNDING_SUFFIX):
        raise CandleFormatError(
            f"{path}: a funding side file, not candles; pass its candle file "
            f"({p.name[: -len(FUNDING_SUFFIX)]}.csv or .parquet): the side file is found next to it"
        )
    return p


def resolve_symbol(symbol: str, path: str | Path, known_symbols: Sequence[str] = ()) -> str:
    """The unified symbol of a ``SYMBOL=PATH`` argument, or a ``CandleFormatError``."""
    resolved = normalize_symbol(symbol, known_symbols)
    if resolved is None:
        raise CandleFormatError(f"{path}: {symbol!r} is not a symbol (expected e.g. BTC/USDT or BTCUSDT)")
    return resolved


def read_candles(
    path: str | Path,
    symbol: str | None = None,
    known_symbols: Sequence[str] = (),
    rejected: dict[str, int] | None = None,
) -> list[CandleSeries]:
    """Read one candle file whole into one series per symbol (file order kept within a symbol).

    ``symbol`` (from ``SYMBOL=PATH``) overrides any symbol column or file name.
    Rows that cannot become a bar are counted in ``rejected["malformed"]``.
    (The replay feed streams files instead: ``prod_core.feeds.stream``.)
    """
    p = check_candle_path(path)
    rejected = {} if rejected is None else rejected
    raw, label = _read_parquet(p) if is_parquet(p) else _read_csv(p)
    if raw.bad:
        rejected["malformed"] = rejected.get("malformed", 0) + raw.bad
    ts, ohlcv, syms, funding = raw.ts, raw.ohlcv, raw.syms, raw.funding
    if label is not None:
        ts = _to_ms(ts, p, label)
    if funding is not None:
        funding = _check_funding_column(funding, ts, p)
    if symbol is not None:
        return [CandleSeries(resolve_symbol(symbol, path, known_symbols), str(p), ts, ohlcv, funding)]
    if syms is not None:
        unique: dict[str, str] = {}
        for raw_sym in dict.fromkeys(syms):
            resolved = normalize_symbol(raw_sym, known_symbols)
            if resolved is None:
                raise CandleFormatError(
                    f"{path}: symbol column value {raw_sym!r} is not a symbol (expected e.g. BTC/USDT)"
                )
            unique[raw_sym] = resolved
        if len(set(unique.values())) == 1:
            return [CandleSeries(next(iter(unique.values())), str(p), ts, ohlcv, funding)]
        labels = np.asarray([unique[s] for s in syms], dtype=object)
        out = []
        for sym in dict.fromkeys(unique.values()):
            mask = labels == sym
            out.append(CandleSeries(sym, str(p), ts[mask], ohlcv[mask], None if funding is None else funding[mask]))
        return out
    return [CandleSeries(symbol_from_filename(p, known_symbols), str(p), ts, ohlcv, funding)]


def _check_funding_column(funding: np.ndarray, ts: np.ndarray, path: Path) -> np.ndarray | None:
    """The ``funding_rate`` column, refused when a rate is beyond +/- ``MAX_FUNDING_RATE``;
    None when no row carries a rate."""
    has = ~np.isnan(funding)
    if not has.any():
        return None
    over = np.flatnonzero(has & ~(np.abs(funding) <= MAX_FUNDING_RATE))
    if over.size:
        i = int(over[0])
        raise CandleFormatError(
            f"{path}: funding_rate {float(funding[i])} at ts {int(ts[i])} is beyond +/-{MAX_FUNDING_RATE}; rates are "
            "fractions per interval (0.0001 = 0.01%), not percent: divide by 100 or fix the row"
        )
    return funding


def expand_data_args(data: Sequence[str]) -> list[tuple[str | None, Path]]:
    """``(symbol override or None, file)`` of every ``--data`` argument, in argument order;
    a directory gives its ``.csv`` / ``.parquet`` files (not funding side files), sorted by name."""
    if not data:
        raise CandleFormatError("replay needs at least one --data PATH (CSV or Parquet candles)")
    out: list[tuple[str | None, Path]] = []
    for arg in data:
        sym, path = parse_data_arg(arg)
        p = Path(path)
        if p.is_dir():
            files = sorted(
                f for f in p.iterdir()
                if f.suffix.lower() in (".csv", ".parquet", ".pq") and not f.name.lower().endswith(FUNDING_SUFFIX)
            )
            if not files:
                raise CandleFormatError(f"{path}: directory has no .csv or .parquet files")
        else:
            files = [p]
        out.extend((sym, f) for f in files)
    return out


def load_data_args(
    data: Sequence[str],
    known_symbols: Sequence[str] = (),
    per_file: dict[str, dict[str, int]] | None = None,
) -> tuple[list[CandleSeries], dict[str, int]]:
    """Read every ``--data`` argument (``PATH`` or ``SYMBOL=PATH``) whole; directories are expanded.

    Returns the series and the rows dropped by the readers, by kind. ``per_file``, when
    given, receives the dropped rows of each file read, keyed like ``CandleSeries.source``.
    """
    rejected: dict[str, int] = {}
    series: list[CandleSeries] = []
    for sym, f in expand_data_args(data):
        dropped: dict[str, int] = {}
        series.extend(read_candles(f, sym, known_symbols, dropped))
        for kind, n in dropped.items():
            rejected[kind] = rejected.get(kind, 0) + n
        if per_file is not None:
            per_file[str(f)] = dropped
    return series, rejected
