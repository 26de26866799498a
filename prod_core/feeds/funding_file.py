"""Funding side files: ``X.funding.csv`` next to a candle file ``X.csv`` / ``X.parquet``.

Format (what ``fetch-history --funding`` writes)::

    timestamp,funding_rate
    1743724800000,0.0001
    2025-04-04T08:00:00Z,-0.00005

``timestamp`` is the funding time, in epoch milliseconds or ISO-8601 UTC (a naive time is
UTC); ``funding_rate`` is the rate settled then, a fraction per interval (0.0001 = 0.01%).
Rows are in strictly increasing time. The file belongs to its candle file's symbol. A file
that breaks any of this is refused with a ``FundingFileError`` naming the file, the line,
the value and the fix; a reader that guessed would charge wrong funding silently.
"""

from __future__ import annotations

import csv
import math
from datetime import datetime, timedelta, timezone
from pathlib import Path

from prod_core.feeds.candles import (
    FUNDING_SUFFIX,
    MAX_FUNDING_RATE,
    MS_THRESHOLD,
    US_THRESHOLD,
    CandleFormatError,
)

HEADER = ("timestamp", "funding_rate")
_DATA_SUFFIXES = (".csv", ".parquet", ".pq")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class FundingFileError(CandleFormatError):
    """A funding side file that cannot be trusted; the message says where and what to do."""


def side_file_path(data_path: str | Path) -> Path:
    """``X.funding.csv`` for ``X.csv`` / ``X.parquet`` / ``X.pq`` (any other name: ``<name>.funding.csv``)."""
    p = Path(data_path)
    name = p.name
    for suffix in _DATA_SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return p.with_name(name + FUNDING_SUFFIX)


def parse_funding_ts(text: str) -> int | None:
    """Epoch milliseconds of a side-file timestamp (epoch ms or ISO-8601), or None if it is neither."""
    text = text.strip()
    try:
        value = int(text)
    except ValueError:
        pass
    else:
        return value if MS_THRESHOLD <= value < US_THRESHOLD else None
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    ms = (dt - _EPOCH) // timedelta(milliseconds=1)
    return ms if MS_THRESHOLD <= ms < US_THRESHOLD else None


def read_funding_file(path: str | Path) -> list[tuple[int, float]]:
    """``(funding_ts_ms, rate)`` rows of a side file, checked (see module doc); header only is ``[]``."""
    p = Path(path)
    with open(p, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = next((row for row in reader if any(cell.strip() for cell in row)), None)
        names = [h.strip().strip('"').lower() for h in header or ()]
        if not all(h in names for h in HEADER):
            shown = ",".join(header or ()) or "nothing"
            raise FundingFileError(
                f"{p}:{max(1, reader.line_num)}: funding file header is {shown!r}, expected 'timestamp,funding_rate'; "
                "add that header line (timestamp in epoch ms or ISO-8601 UTC, rate as a fraction)"
            )
        i_ts, i_rate = names.index(HEADER[0]), names.index(HEADER[1])
        rows: list[tuple[int, float]] = []
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            rows.append(_parse_row(row, i_ts, i_rate, p, reader.line_num, rows[-1][0] if rows else None))
    return rows


def _parse_row(row: list[str], i_ts: int, i_rate: int, path: Path, line: int, prev_ts: int | None) -> tuple[int, float]:
    where = f"{path}:{line}"
    if len(row) <= max(i_ts, i_rate):
        raise FundingFileError(f"{where}: {len(row)} column(s) {','.join(row)!r}; expected timestamp,funding_rate")
    ts_text, rate_text = row[i_ts].strip(), row[i_rate].strip()
    ts = parse_funding_ts(ts_text)
    if ts is None:
        raise FundingFileError(
            f"{where}: timestamp {ts_text!r} is neither epoch milliseconds nor ISO-8601; "
            "write e.g. 1743724800000 or 2025-04-04T00:00:00Z"
        )
    try:
        rate = float(rate_text)
    except ValueError:
        rate = math.nan
    if not math.isfinite(rate):
        raise FundingFileError(
            f"{where}: funding_rate {rate_text!r} is not a number; write the rate as a fraction "
            "(0.0001 = 0.01%) or delete the line"
        )
    if abs(rate) > MAX_FUNDING_RATE:
        raise FundingFileError(
            f"{where}: funding_rate {rate_text} is beyond +/-{MAX_FUNDING_RATE}; rates are fractions per "
            "interval (0.0001 = 0.01%), not percent: divide by 100 or fix the line"
        )
    if prev_ts is not None and ts <= prev_ts:
        what = "repeats" if ts == prev_ts else "comes before"
        raise FundingFileError(
            f"{where}: timestamp {ts_text} {what} the previous row's ({prev_ts}); sort the file by time "
            "and keep one row per funding time"
        )
    return ts, rate
