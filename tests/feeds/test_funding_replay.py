"""Funding rates of a replay: a ``funding_rate`` column or an ``X.funding.csv`` side file."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prod_core.feeds.candles import CandleFormatError, load_data_args, read_candles
from prod_core.feeds.funding import FundingRates, funding_times
from prod_core.feeds.funding_file import FundingFileError, parse_funding_ts, read_funding_file, side_file_path
from prod_core.feeds.replay import ReplayFeed, audit_rows
from prod_core.testing import synthetic_rows, write_csv
from prod_core.testing.builders import drain

TF_MS = 300_000
H8 = 8 * 3_600_000
START_MS = 1_743_724_800_000  # 2025-04-04T00:00:00Z, a funding time
SHARED = Path("/work/shared/data/BYBIT_BTCUSDT_5m.csv")
HEADER = ("ts_ms", "open", "high", "low", "close", "volume")


def bars(n: int = 3 * 288) -> list[tuple]:
    """Three days of 5m bars from a funding time."""
    return synthetic_rows(n, start_ms=START_MS, tf_ms=TF_MS)


def times(rows: list[tuple]) -> list[int]:
    return list(funding_times(rows[0][0] - 1, rows[-1][0], H8))


def rate_of(t: int) -> float:
    """A distinct, believable rate per funding time."""
    return round(((t // H8) % 7 - 3) * 0.00002, 8)


def with_column(rows: list[tuple]) -> list[tuple]:
    return [(*r, rate_of(r[0]) if r[0] % H8 == 0 else "") for r in rows]


def write_side(path: Path, lines: list[str], header: str | None = "timestamp,funding_rate") -> Path:
    path.write_text("".join(f"{line}\n" for line in ([header] if header else []) + lines))
    return path


def test_csv_funding_rate_column_answers_at_each_funding_time(tmp_path: Path) -> None:
    """A funding_rate column on the funding-time bars answers each funding time, None between them."""
    rows = bars()
    path = write_csv(tmp_path / "BTCUSDT-5m.csv", with_column(rows), header=(*HEADER, "funding_rate"))
    rates = ReplayFeed.from_paths([str(path)]).funding_rates()
    assert isinstance(rates, FundingRates)
    assert [rates.rate("BTC/USDT", t) for t in times(rows)] == [rate_of(t) for t in times(rows)]
    assert rates.rate("BTC/USDT", START_MS + 4 * 3_600_000) is None
    assert rates.rate("ETH/USDT", START_MS) is None


def test_parquet_funding_rate_column_answers_at_each_funding_time(tmp_path: Path) -> None:
    """The same column in Parquet (NaN off the funding bars)."""
    rows = bars()
    cols = list(zip(*rows))
    table = pa.table({name: list(col) for name, col in zip(HEADER, cols)} | {
        "funding_rate": [rate_of(t) if t % H8 == 0 else None for t in cols[0]],
    })
    pq.write_table(table, tmp_path / "BTCUSDT-5m.parquet")
    rates = ReplayFeed.from_paths([str(tmp_path / "BTCUSDT-5m.parquet")]).funding_rates()
    assert [rates.rate("BTC/USDT", t) for t in times(rows)] == [rate_of(t) for t in times(rows)]


def test_funding_rate_column_changes_no_bar_and_no_audit(tmp_path: Path) -> None:
    """Bars, hygiene audit and rejection counts are the same with and without the column."""
    rows = bars()
    plain = write_csv(tmp_path / "a" / "BTCUSDT-5m.csv", rows)
    fund = write_csv(tmp_path / "b" / "BTCUSDT-5m.csv", with_column(rows), header=(*HEADER, "funding_rate"))
    a, b = ReplayFeed.from_paths([str(plain)]), ReplayFeed.from_paths([str(fund)])
    assert drain(a) == drain(b)
    assert a.rejected == b.rejected
    assert list(audit_rows(load_data_args([str(plain)])[0]).values()) == list(
        audit_rows(load_data_args([str(fund)])[0]).values()
    )
    assert a.funding_rates() is None and b.funding_rates() is not None


def test_funding_rate_column_survives_the_row_by_row_reader(tmp_path: Path) -> None:
    """A file the fast reader gives up on (a short row) still yields its rates, and counts the bad row."""
    rows = bars(200)
    path = write_csv(tmp_path / "BTCUSDT-5m.csv", with_column(rows), header=(*HEADER, "funding_rate"))
    with open(path, "a") as fh:
        fh.write("1,2\n")
    rejected: dict[str, int] = {}
    [series] = read_candles(path, rejected=rejected)
    assert rejected == {"malformed": 1}
    assert series.funding_rows() == [(t, rate_of(t)) for t in times(rows)]


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        ("0.5", r"funding_rate 0\.5 at ts \d+ is beyond \+/-0\.03; .*not percent"),
        ("abc", r"BTCUSDT-5m\.csv:\d+: funding_rate 'abc' is not a number"),
    ],
)
def test_funding_rate_column_with_a_bad_value_is_refused(tmp_path: Path, cell: str, message: str) -> None:
    """A column rate in percent or as text is refused, naming the file and the value."""
    rows = [(*r, cell if i == 5 else "") for i, r in enumerate(bars(20))]
    path = write_csv(tmp_path / "BTCUSDT-5m.csv", rows, header=(*HEADER, "funding_rate"))
    with pytest.raises(CandleFormatError, match=message):
        ReplayFeed.from_paths([str(path)])


def test_side_file_answers_at_each_funding_time_with_late_stamps_and_iso_times(tmp_path: Path) -> None:
    """Side-file rows in epoch ms (some a few ms late, as exchanges stamp them) or ISO-8601 all answer."""
    rows = bars()
    data = write_csv(tmp_path / "BTCUSDT-5m.csv", rows)
    ts = times(rows)
    lines = [f"{ts[0]},{rate_of(ts[0])}", f"{ts[1] + 1},{rate_of(ts[1])}", f"{ts[2] + 3},{rate_of(ts[2])}"]
    lines.append(f"2025-04-05T00:00:00Z,{rate_of(ts[3])}")
    lines.append(f"2025-04-05T08:00:00.000+00:00,{rate_of(ts[4])}")
    lines += [f"{t},{rate_of(t)}" for t in ts[5:]]
    write_side(tmp_path / "BTCUSDT-5m.funding.csv", lines)
    rates = ReplayFeed.from_paths([str(data)]).funding_rates()
    assert [rates.rate("BTC/USDT", t) for t in ts] == [rate_of(t) for t in ts]
    assert rates.rate("BTC/USDT", ts[-1] + H8) is None  # after the file: not known


def test_side_file_of_a_parquet_data_file_in_a_directory(tmp_path: Path) -> None:
    """X.parquet's side file is X.funding.csv; a directory --data does not read it as candles."""
    rows = bars()
    pq.write_table(pa.table({name: list(col) for name, col in zip(HEADER, zip(*rows))}), tmp_path / "ETHUSDT-5m.parquet")
    write_side(tmp_path / "ETHUSDT-5m.funding.csv", [f"{t},-0.0002" for t in times(rows)])
    assert side_file_path(tmp_path / "ETHUSDT-5m.parquet") == tmp_path / "ETHUSDT-5m.funding.csv"
    feed = ReplayFeed.from_paths([str(tmp_path)])
    assert feed.symbols == ("ETH/USDT",)
    assert {feed.funding_rates().rate("ETH/USDT", t) for t in times(rows)} == {-0.0002}


def test_side_file_wins_over_the_column_and_follows_symbol_eq_path(tmp_path: Path) -> None:
    """SYMBOL=PATH names the side file's symbol too; where column and side file disagree the side file wins."""
    rows = bars()
    data = write_csv(tmp_path / "data.csv", with_column(rows), header=(*HEADER, "funding_rate"))
    ts = times(rows)
    write_side(tmp_path / "data.funding.csv", [f"{ts[0]},0.0003"])
    rates = ReplayFeed.from_paths([f"SOL/USDT={data}"]).funding_rates()
    assert rates.rate("SOL/USDT", ts[0]) == 0.0003
    assert rates.rate("SOL/USDT", ts[1]) == rate_of(ts[1])


def test_replay_without_funding_data_has_no_rates(tmp_path: Path) -> None:
    """No column, no side file: funding_rates() is None (the runner warns that funding is not charged)."""
    data = write_csv(tmp_path / "BTCUSDT-5m.csv", bars(50))
    assert ReplayFeed.from_paths([str(data)]).funding_rates() is None


def test_side_file_passed_as_data_is_refused_with_a_hint(tmp_path: Path) -> None:
    """Passing the side file itself as --data says to pass its candle file instead."""
    side = write_side(tmp_path / "BTCUSDT-5m.funding.csv", [f"{START_MS},0.0001"])
    with pytest.raises(CandleFormatError, match=r"a funding side file, not candles; pass its candle file \(BTCUSDT-5m\.csv"):
        ReplayFeed.from_paths([str(side)])


def test_side_file_of_a_multi_symbol_data_file_is_refused(tmp_path: Path) -> None:
    """A side file cannot belong to a file holding several symbols."""
    rows = [(*r, "BTCUSDT" if i % 2 else "ETHUSDT") for i, r in enumerate(bars(40))]
    data = write_csv(tmp_path / "mixed.csv", rows, header=(*HEADER, "symbol"))
    write_side(tmp_path / "mixed.funding.csv", [f"{START_MS},0.0001"])
    with pytest.raises(FundingFileError, match=r"mixed\.funding\.csv: its data file .* holds (ETH/USDT, BTC/USDT|BTC/USDT, ETH/USDT)"):
        ReplayFeed.from_paths([str(data)])


T0, T1 = START_MS, START_MS + H8
MALFORMED = {
    "missing_header": (None, [f"{T0},0.0001"], r":1: funding file header is '1743724800000,0.0001', expected 'timestamp,funding_rate'; add"),
    "wrong_header": ("time,rate", [f"{T0},0.0001"], r":1: funding file header is 'time,rate', expected"),
    "empty_file": ("", [], r":1: funding file header is 'nothing', expected"),
    "non_numeric_rate": (..., [f"{T0},0.0001", f"{T1},1bp"], r":3: funding_rate '1bp' is not a number; write the rate as a fraction"),
    "empty_rate": (..., [f"{T0},"], r":2: funding_rate '' is not a number"),
    "rate_in_percent": (..., [f"{T0},0.01", f"{T1},0.05"], r":3: funding_rate 0\.05 is beyond \+/-0\.03; .*divide by 100"),
    "unsorted": (..., [f"{T1},0.0001", f"{T0},0.0001"], rf":3: timestamp {T0} comes before the previous row's \({T1}\); sort the file"),
    "duplicate": (..., [f"{T0},0.0001", f"{T0},0.0002"], rf":3: timestamp {T0} repeats the previous row's \({T0}\); .*one row per funding time"),
    "seconds": (..., [f"{T0 // 1000},0.0001"], r":2: timestamp '1743724800' is neither epoch milliseconds nor ISO-8601; write e\.g\."),
    "bad_iso": (..., ["2025-13-01T00:00:00Z,0.0001"], r":2: timestamp '2025-13-01T00:00:00Z' is neither"),
    "short_row": (..., [f"{T0}"], r":2: 1 column\(s\) '1743724800000'; expected timestamp,funding_rate"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_side_file_is_refused_naming_file_line_and_value(tmp_path: Path, case: str) -> None:
    """Each malformed side file is one clear line: file, line, value, what to do."""
    header, lines, message = MALFORMED[case]
    data = write_csv(tmp_path / "BTCUSDT-5m.csv", bars(200))
    side = tmp_path / "BTCUSDT-5m.funding.csv"
    write_side(side, lines, header="timestamp,funding_rate" if header is ... else header)
    with pytest.raises(FundingFileError) as info:
        ReplayFeed.from_paths([str(data)])
    text = str(info.value)
    assert text.startswith(str(side)) and "\n" not in text
    assert re.search(message, text), text


def test_header_only_side_file_means_no_rates(tmp_path: Path) -> None:
    """A side file with only its header (no settlement in the span) gives no rates, not an error."""
    data = write_csv(tmp_path / "BTCUSDT-5m.csv", bars(50))
    write_side(tmp_path / "BTCUSDT-5m.funding.csv", [])
    assert read_funding_file(tmp_path / "BTCUSDT-5m.funding.csv") == []
    assert ReplayFeed.from_paths([str(data)]).funding_rates() is None


def test_parse_funding_ts_reads_epoch_ms_and_iso_utc() -> None:
    """Epoch ms as is; ISO with Z, an offset, or naive (UTC) to epoch ms; anything else None."""
    assert parse_funding_ts("1743724800001") == 1_743_724_800_001
    assert parse_funding_ts("2025-04-04T00:00:00Z") == START_MS
    assert parse_funding_ts("2025-04-04 02:00:00+02:00") == START_MS
    assert parse_funding_ts("2025-04-04T00:00:00.005") == START_MS + 5
    assert parse_funding_ts("1743724800") is None  # seconds
    assert parse_funding_ts("soon") is None


@pytest.mark.skipif(not SHARED.is_file(), reason="shared Bybit data not present")
def test_real_bybit_file_with_a_constant_side_file_answers_every_8h_instant(tmp_path: Path) -> None:
    """Real Bybit 5m candles plus a generated constant-rate side file: that rate at every 8 h instant of the span."""
    data = tmp_path / SHARED.name
    shutil.copyfile(SHARED, data)
    ts = np.loadtxt(data, delimiter=",", skiprows=1, usecols=0, dtype=np.int64)
    instants = list(funding_times(int(ts[0]) - 1, int(ts[-1]), H8))
    assert len(instants) > 100
    write_side(side_file_path(data), [f"{t},0.000125" for t in instants])
    feed = ReplayFeed.from_paths([str(data)], known_symbols=("BTC/USDT:USDT",))
    rates = feed.funding_rates()
    assert feed.symbols == ("BTC/USDT:USDT",)
    assert {rates.rate("BTC/USDT:USDT", t) for t in instants} == {0.000125}
    assert rates.rate("BTC/USDT:USDT", instants[-1] + H8) is None
