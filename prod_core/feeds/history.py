"""fetch-history: download closed candles from an exchange into a file replay can read.

Paginated (``limit`` bars per request), resumable (an existing output file is continued
after its last bar; every page is flushed, so an interrupted run leaves a valid file),
with a progress bar when stderr is a terminal. Rate limits and network errors are
retried with exponential backoff; a bad symbol is a clear ``HistoryError``.

Output: CSV ``ts_ms,open,high,low,close,volume,symbol`` (canonical columns plus the
unified symbol) or Parquet with the same columns when the name ends in ``.parquet``.
Only closed bars with ``since <= ts_ms < until`` are written.

Funding (``fetch_funding_history``, ``fetch-history --funding``): the settled funding rates of
a linear perp (``BASE/QUOTE:SETTLE``) over the same span go to the side file next to the
candles (``funding_path``: ``X.csv`` / ``X.parquet`` -> ``X.funding.csv``), header
``timestamp,funding_rate``: the funding instant in epoch ms (the exchange's late stamp rounded
down to the interval, ``funding.funding_instant``) and the rate as a fraction (0.0001 = 0.01%),
sorted, no duplicates, resumable after its last row like the candles.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from prod_core.domain import timeframe_to_ms
from prod_core.feeds.ccxt_rest import Backoff, FeedFatalError, classify_error, make_exchange
from prod_core.feeds.funding import DEFAULT_INTERVAL_MS, funding_instant
from prod_core.telemetry.progress import progress as progress_bar
from prod_core.telemetry.progress import wants_progress

COLUMNS = ("ts_ms", "open", "high", "low", "close", "volume", "symbol")
FUNDING_COLUMNS = ("timestamp", "funding_rate")
FUNDING_LIMIT = 200  # settlements per request (Bybit's maximum; Binance allows 1000)


class HistoryError(RuntimeError):
    """fetch-history cannot continue (bad symbol, unreadable output file, too many failures)."""


@dataclass
class HistoryResult:
    path: Path
    written: int
    total: int
    first_ts: int | None
    last_ts: int | None
    resumed_from: int | None
    requests: int


def parse_time(text: str | int | None, *, now_ms: int | None = None) -> int:
    """Epoch ms from an ISO date/datetime (UTC unless it says otherwise), epoch ms digits, or 'now'."""
    if text is None or (isinstance(text, str) and text.strip().lower() == "now"):
        return now_ms if now_ms is not None else int(time.time() * 1000)
    if isinstance(text, int):
        return text
    t = text.strip()
    if t.isdigit():
        return int(t)
    try:
        dt = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"expected a date like 2025-03-01, 2025-03-01T12:00:00Z or epoch ms, got {text!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1000)


def _fmt_ts(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M")


class TerminalProgress:
    """``fetch_history``'s ``progress`` callback drawing a bar (``prod_core.telemetry.progress``).

    The bar's total is the span still to download in minutes of market time (known from the
    first call); the postfix shows the bars in the file and the time reached. It closes itself
    when the end is reached; call ``close()`` after an error or an interruption."""

    def __init__(self, stream: IO[str] | None = None, *, mininterval: float = 0.5) -> None:
        self.stream = stream
        self.mininterval = mininterval
        self.bar: Any = None
        self.total = self.done = 0

    def __call__(self, done_ms: int, start_ms: int, end_ms: int, bars: int) -> None:
        if self.bar is None:
            self.total = max(1, round((end_ms - start_ms) / 60_000))
            self.bar = progress_bar(total=self.total, desc="fetch-history", unit="min", stream=self.stream,
                                    unit_scale=self.total >= 10_000, mininterval=self.mininterval)
        done = self.total if done_ms >= end_ms else min(self.total, max(0, round((done_ms - start_ms) / 60_000)))
        self.bar.set_postfix_str(f"{bars:,} bars, {_fmt_ts(min(done_ms, end_ms))}", refresh=False)
        self.bar.update(done - self.done)
        self.done = done
        if done >= self.total:
            self.close()

    def close(self) -> None:
        """End the bar's line; safe to call more than once."""
        if self.bar is not None:
            self.bar.close()


def terminal_progress(stream: IO[str] | None = None, *, mininterval: float = 0.5) -> TerminalProgress | None:
    """A ``TerminalProgress`` when ``stream`` (default stderr) is a terminal, else None (nothing is drawn)."""
    if not wants_progress(stream):
        return None
    return TerminalProgress(stream, mininterval=mininterval)


def _existing_csv(path: Path, symbol: str) -> tuple[int | None, int]:
    """(last ts, rows) of an existing output file; checks it is fetch-history's format and symbol."""
    last, rows = None, 0
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            return None, 0
        if tuple(h.strip() for h in header) != COLUMNS:
            raise HistoryError(f"{path}: exists but is not a fetch-history file (header {','.join(header)}); "
                               "choose another --out or delete it")
        for row in reader:
            if len(row) < 7:
                continue
            if row[6] != symbol:
                raise HistoryError(f"{path}: holds {row[6]}, not {symbol}; choose another --out")
            last = int(row[0])
            rows += 1
    return last, rows


def fetch_history(
    exchange_id: str,
    symbol: str,
    timeframe: str,
    since_ms: int,
    until_ms: int | None,
    out: str | Path,
    *,
    api_url: str | None = None,
    sandbox: bool = False,
    limit: int = 1000,
    progress: Callable[[int, int, int, int], None] | None = None,
    enable_rate_limit: bool = True,
    backoff: Backoff | None = None,
    max_retries: int = 8,
    timeout_ms: int = 15_000,
    exchange=None,
) -> HistoryResult:
    """Download closed ``timeframe`` bars of ``symbol`` for [since_ms, until_ms) into ``out``."""
    tf_ms = timeframe_to_ms(timeframe)
    path = Path(out)
    now_ms = int(time.time() * 1000)
    end_ms = min(until_ms if until_ms is not None else now_ms, now_ms)
    if since_ms >= end_ms:
        raise HistoryError(f"--since ({_fmt_ts(since_ms)}) must be before --until ({_fmt_ts(end_ms)})")
    parquet = path.suffix.lower() in (".parquet", ".pq")
    resumed_from = None
    existing_rows: list[list] = []
    total_before = 0
    if path.exists() and path.stat().st_size > 0:
        if parquet:
            from prod_core.feeds.candles import read_candles

            try:
                [series] = read_candles(path, symbol=symbol)
            except Exception as exc:
                raise HistoryError(f"{path}: cannot resume from it: {exc}") from None
            existing_rows = [[int(t), *map(float, v)] for t, v in zip(series.ts.tolist(), series.ohlcv.tolist())]
            last = existing_rows[-1][0] if existing_rows else None
            total_before = len(existing_rows)
        else:
            last, total_before = _existing_csv(path, symbol)
        if last is not None:
            resumed_from = last
            since_ms = max(since_ms, last + tf_ms)
    own = exchange is None
    if own:
        try:
            exchange = make_exchange(exchange_id, sync=True, symbols=(symbol,), api_url=api_url, sandbox=sandbox,
                                     enable_rate_limit=enable_rate_limit, timeout_ms=timeout_ms)
        except FeedFatalError as exc:
            raise HistoryError(str(exc)) from None
    backoff = backoff or Backoff(base_s=1.0, max_s=60.0)
    call = _Caller(exchange_id, symbol, backoff, max_retries)

    written = 0
    first_ts = last_ts = None
    try:
        markets = call(exchange.load_markets)
        if symbol not in markets:
            raise HistoryError(f"symbol {symbol} is not listed on {exchange_id} ({len(markets)} markets loaded)")
        path.parent.mkdir(parents=True, exist_ok=True)
        new_rows: list[list] = []
        fh = None
        writer = None
        if not parquet:
            fresh = not path.exists() or path.stat().st_size == 0
            fh = open(path, "a", newline="")
            writer = csv.writer(fh)
            if fresh:
                writer.writerow(COLUMNS)
                fh.flush()
        try:
            cursor = since_ms
            prev = resumed_from
            while cursor < end_ms:
                rows = call(exchange.fetch_ohlcv, symbol, timeframe, cursor, limit)
                now_ms = int(time.time() * 1000)
                page = [r for r in rows if r[0] is not None and cursor <= int(r[0]) < end_ms
                        and int(r[0]) + tf_ms <= now_ms and (prev is None or int(r[0]) > prev)]
                for r in page:
                    ts = int(r[0])
                    row = [ts, r[1], r[2], r[3], r[4], r[5]]
                    if writer is not None:
                        writer.writerow(row + [symbol])
                    else:
                        new_rows.append(row)
                    prev = ts
                    first_ts = ts if first_ts is None else first_ts
                    last_ts = ts
                written += len(page)
                if fh is not None:
                    fh.flush()
                if not rows or int(rows[-1][0]) + tf_ms <= cursor:
                    break  # nothing more from the exchange
                cursor = int(rows[-1][0]) + tf_ms
                if progress is not None:
                    progress(min(cursor, end_ms), since_ms, end_ms, total_before + written)
                if len(rows) < limit and cursor + tf_ms > now_ms:
                    break
        finally:
            if fh is not None:
                fh.close()
        if parquet:
            _write_parquet(path, existing_rows + new_rows, symbol)
        if progress is not None:
            progress(end_ms, since_ms, end_ms, total_before + written)
    finally:
        if own:
            _close_quietly(exchange)
    return HistoryResult(path, written, total_before + written, first_ts, last_ts, resumed_from, call.requests)


def _write_parquet(path: Path, rows: list[list], symbol: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = list(zip(*rows)) if rows else [[] for _ in range(6)]
    table = pa.table({
        "ts_ms": pa.array(cols[0], pa.int64()),
        "open": pa.array(cols[1], pa.float64()),
        "high": pa.array(cols[2], pa.float64()),
        "low": pa.array(cols[3], pa.float64()),
        "close": pa.array(cols[4], pa.float64()),
        "volume": pa.array(cols[5], pa.float64()),
        "symbol": pa.array([symbol] * len(rows), pa.string()),
    })
    tmp = path.with_suffix(path.suffix + ".tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)


# ----------------------------------------------------------------------- funding
FundingResult = HistoryResult  # the same figures: rows written, total, span, resume point, requests


def is_perp_symbol(symbol: str) -> bool:
    """A ccxt contract symbol ``BASE/QUOTE:SETTLE`` (the only kind with funding)."""
    return ":" in symbol


def funding_path(out: str | Path) -> Path:
    """The funding side file of a candle file: ``X.csv`` / ``X.parquet`` -> ``X.funding.csv``."""
    path = Path(out)
    return path.with_name(path.stem + ".funding.csv")


def _existing_funding(path: Path) -> tuple[int | None, int]:
    """(last timestamp, rows) of an existing side file; a torn last line (interrupted write) is cut off."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        with open(path, "r+b") as fh:
            fh.truncate(cut)
        data = data[:cut]
    lines = data.decode().splitlines()
    if not lines:
        return None, 0
    if tuple(h.strip() for h in lines[0].split(",")) != FUNDING_COLUMNS:
        raise HistoryError(f"{path}: exists but is not a funding side file (header {lines[0]}); "
                           "choose another --out or delete it")
    rows = [line for line in lines[1:] if line.strip()]
    return (int(rows[-1].split(",")[0]) if rows else None), len(rows)


def fetch_funding_history(
    exchange_id: str,
    symbol: str,
    since_ms: int,
    until_ms: int | None,
    out: str | Path,
    *,
    api_url: str | None = None,
    sandbox: bool = False,
    limit: int = FUNDING_LIMIT,
    enable_rate_limit: bool = True,
    backoff: Backoff | None = None,
    max_retries: int = 8,
    timeout_ms: int = 15_000,
    exchange=None,
) -> FundingResult:
    """Download the settled funding rates of the perp ``symbol`` at instants in [since_ms, until_ms)
    into the CSV ``out`` (``timestamp,funding_rate``), continuing after its last row if it exists."""
    if not is_perp_symbol(symbol):
        raise HistoryError(f"{symbol} is spot and has no funding; use the perp symbol, e.g. {symbol}:USDT")
    path = Path(out)
    now_ms = int(time.time() * 1000)
    end_ms = min(until_ms if until_ms is not None else now_ms, now_ms)
    if since_ms >= end_ms:
        raise HistoryError(f"--since ({_fmt_ts(since_ms)}) must be before --until ({_fmt_ts(end_ms)})")
    resumed_from, total_before = None, 0
    if path.exists() and path.stat().st_size > 0:
        resumed_from, total_before = _existing_funding(path)
    own = exchange is None
    if own:
        try:
            exchange = make_exchange(exchange_id, sync=True, symbols=(symbol,), api_url=api_url, sandbox=sandbox,
                                     enable_rate_limit=enable_rate_limit, timeout_ms=timeout_ms)
        except FeedFatalError as exc:
            raise HistoryError(str(exc)) from None
    call = _Caller(exchange_id, symbol, backoff or Backoff(base_s=1.0, max_s=60.0), max_retries)
    written = 0
    first_ts = last_ts = None
    try:
        markets = call(exchange.load_markets)
        market = markets.get(symbol)
        if market is None:
            raise HistoryError(f"symbol {symbol} is not listed on {exchange_id} ({len(markets)} markets loaded)")
        if not market.get("swap"):
            raise HistoryError(f"{symbol} on {exchange_id} is not a perpetual swap; it has no funding")
        minutes = (market.get("info") or {}).get("fundingInterval")
        interval_ms = int(minutes) * 60_000 if str(minutes or "").isdigit() and int(minutes) > 0 else DEFAULT_INTERVAL_MS
        path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not path.exists() or path.stat().st_size == 0
        with open(path, "a", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            if fresh:
                writer.writerow(FUNDING_COLUMNS)
                fh.flush()
            prev = resumed_from
            cursor = since_ms if prev is None else max(since_ms, prev + 1)
            while cursor < end_ms:
                # an explicit window of at most ``limit`` funding times: Bybit answers the NEWEST
                # ``limit`` rows of [startTime, endTime] (both inclusive), so ccxt's default end
                # (start + limit x interval) would hold limit + 1 instants and drop the oldest
                window_end = min(end_ms, cursor + limit * interval_ms) - 1
                rows = call(exchange.fetch_funding_rate_history, symbol, cursor, limit, {"endTime": window_end})
                stamps = [int(r["timestamp"]) for r in rows if r.get("timestamp") is not None]
                page = sorted({funding_instant(int(r["timestamp"]), interval_ms): float(r["fundingRate"])
                               for r in rows if r.get("timestamp") is not None and r.get("fundingRate") is not None
                               }.items())
                for ts, rate in page:
                    if since_ms <= ts < end_ms and (prev is None or ts > prev):
                        writer.writerow([ts, repr(rate)])
                        prev = ts
                        first_ts = ts if first_ts is None else first_ts
                        last_ts = ts
                        written += 1
                fh.flush()
                # from just after the newest stamp seen; an empty page skips the span it covered (Bybit
                # answers [startTime, startTime + limit x interval]; Binance from startTime on)
                cursor = max(stamps) + 1 if stamps and max(stamps) >= cursor else cursor + limit * interval_ms
    finally:
        if own:
            _close_quietly(exchange)
    return FundingResult(path, written, total_before + written, first_ts, last_ts, resumed_from, call.requests)


def _close_quietly(exchange) -> None:
    close = getattr(exchange, "close", None)
    if close is not None:
        try:
            close()
        except Exception:
            pass


class _Caller:
    """Call ccxt with retries: backoff on rate limits and network errors, HistoryError on fatal ones."""

    def __init__(self, exchange_id: str, symbol: str, backoff: Backoff, max_retries: int) -> None:
        self.exchange_id, self.symbol, self.backoff, self.max_retries = exchange_id, symbol, backoff, max_retries
        self.requests = 0

    def __call__(self, fn, *args):
        failures = 0
        while True:
            self.requests += 1
            try:
                result = fn(*args)
                self.backoff.reset()
                return result
            except Exception as exc:
                if classify_error(exc) == "fatal":
                    raise HistoryError(f"{self.exchange_id} {self.symbol}: {type(exc).__name__}: {exc}") from None
                failures += 1
                if failures > self.max_retries:
                    raise HistoryError(f"{self.exchange_id} {self.symbol}: giving up after {failures} failures: "
                                       f"{type(exc).__name__}: {exc}") from None
                time.sleep(self.backoff.next())
