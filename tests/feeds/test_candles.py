"""Candle file readers: formats, timestamp units, symbol resolution and malformed rows."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prod_core.feeds.candles import (
    CandleFormatError,
    load_data_args,
    normalize_symbol,
    normalize_ts,
    parse_data_arg,
    read_candles,
    symbol_from_filename,
    ts_units,
)
from prod_core.testing import BINANCE_HEADER, binance_rows, synthetic_rows, write_csv

ROWS = synthetic_rows(50)


def _check(series, symbol, rows=ROWS):
    assert len(series) == 1
    s = series[0]
    assert s.symbol == symbol
    assert s.ts.tolist() == [r[0] for r in rows]
    np.testing.assert_allclose(s.ohlcv, np.asarray([r[1:] for r in rows]))


def test_canonical_csv_with_and_without_header(tmp_path):
    _check(read_candles(write_csv(tmp_path / "BTCUSDT-1m.csv", ROWS)), "BTC/USDT")
    _check(read_candles(write_csv(tmp_path / "ETHUSDT-1m.csv", ROWS, header=None)), "ETH/USDT")


@pytest.mark.parametrize("micros", [False, True])
@pytest.mark.parametrize("header", [True, False])
def test_binance_dump_ms_and_us(tmp_path, micros, header):
    path = write_csv(tmp_path / "BTCUSDT-1m-2025-03.csv", binance_rows(ROWS, micros=micros),
                     header=BINANCE_HEADER if header else None)
    _check(read_candles(path), "BTC/USDT")


@pytest.mark.parametrize(
    ("unit", "factor", "divisor", "word"),
    [("s", 1, 1000, "seconds"), ("us", 1000, 1, "microseconds"), ("ns", 1_000_000, 1, "nanoseconds")],
)
@pytest.mark.parametrize("header", [True, False])
def test_timestamp_unit_is_detected_converted_and_logged_once(tmp_path, caplog, unit, factor, divisor, word, header):
    """Seconds (read as 1970 before), microseconds and nanoseconds all become milliseconds, with one info line."""
    rows = [(r[0] * factor // divisor, *r[1:]) for r in ROWS]
    path = write_csv(tmp_path / "BTCUSDT-1m.csv", rows, header=("open_time", "o", "h", "l", "c", "v") if header else None)
    with caplog.at_level("INFO", logger="prod_core.feeds.candles"):
        _check(read_candles(path), "BTC/USDT")
    lines = [r.getMessage() for r in caplog.records if r.name == "prod_core.feeds.candles"]
    column = "open_time" if header else "1"
    assert lines == [f"{path}: timestamps of column {column} detected in {word} ({len(ROWS)} rows); converted to milliseconds"]


def test_millisecond_files_log_nothing(tmp_path, caplog):
    with caplog.at_level("INFO", logger="prod_core.feeds.candles"):
        _check(read_candles(write_csv(tmp_path / "BTCUSDT-1m.csv", ROWS)), "BTC/USDT")
    assert not [r for r in caplog.records if r.name == "prod_core.feeds.candles"]


def test_parquet_seconds_column_is_converted(tmp_path):
    cols = list(zip(*ROWS))
    table = pa.table({"ts": pa.array([t // 1000 for t in cols[0]], pa.int64()), "open": cols[1], "high": cols[2],
                      "low": cols[3], "close": cols[4], "volume": cols[5]})
    pq.write_table(table, tmp_path / "BTCUSDT-1m.parquet")
    _check(read_candles(tmp_path / "BTCUSDT-1m.parquet"), "BTC/USDT")


def test_ts_units_and_normalize_by_magnitude():
    """The four units are told apart by magnitude for any date after 1973-03; tiny values are left alone."""
    ms = 1_700_000_000_000
    raw = np.array([ms // 1000, ms, ms * 1000, ms * 1_000_000, 5], dtype=np.int64)
    assert ts_units(raw) == {"s": 1, "ms": 2, "us": 1, "ns": 1}
    assert normalize_ts(raw).tolist() == [ms, ms, ms, ms, 5]
    edge = np.array([100_000_000, 99_999_999_999, 100_000_000_000], dtype=np.int64)  # 1973 in s, 5138 in s, 1973 in ms
    assert normalize_ts(edge).tolist() == [100_000_000_000, 99_999_999_999_000, 100_000_000_000]


def test_symbol_column_splits_a_multi_symbol_file(tmp_path):
    a = synthetic_rows(5, seed=1)
    b = synthetic_rows(5, seed=2, price=10.0)
    rows = [(*r, "BTC/USDT") for r in a] + [(*r, "ETHUSDT") for r in b]
    path = write_csv(tmp_path / "mixed.csv", rows, header=("ts_ms", "open", "high", "low", "close", "volume", "symbol"))
    series = read_candles(path)
    assert [s.symbol for s in series] == ["BTC/USDT", "ETH/USDT"]
    assert series[1].ts.tolist() == [r[0] for r in b]


def test_parquet_with_int_and_timestamp_columns(tmp_path):
    cols = list(zip(*ROWS))
    table = pa.table({"ts_ms": pa.array(cols[0], pa.int64()), "open": cols[1], "high": cols[2], "low": cols[3],
                      "close": cols[4], "volume": cols[5]})
    pq.write_table(table, tmp_path / "BINANCE_SOLUSDT_1m.parquet")
    _check(read_candles(tmp_path / "BINANCE_SOLUSDT_1m.parquet"), "SOL/USDT")
    table2 = table.set_column(0, "timestamp", pa.array(cols[0], pa.int64()).cast(pa.timestamp("ms")))
    pq.write_table(table2, tmp_path / "x.parquet")
    _check(read_candles(tmp_path / "x.parquet", symbol="BNB/USDT"), "BNB/USDT")


def test_unparseable_numbers_become_nan_and_short_rows_are_counted(tmp_path):
    path = tmp_path / "BTCUSDT.csv"
    path.write_text(
        "ts_ms,open,high,low,close,volume\n"
        "1000,1,2,0.5,1.5,3\n"
        "2000,abc,2,0.5,1.5,3\n"  # -> nan open, still a bar for hygiene to reject
        "3000,1,2\n"  # too few columns: cannot be a bar
        "oops,1,2,0.5,1.5,3\n"  # no timestamp: cannot be a bar
        "4000,1,2,0.5,1.5,\n"  # empty volume -> nan
    )
    rejected: dict[str, int] = {}
    [s] = read_candles(path, rejected=rejected)
    assert s.ts.tolist() == [1000, 2000, 4000]
    assert math.isnan(s.ohlcv[1, 0]) and math.isnan(s.ohlcv[2, 4])
    assert rejected == {"malformed": 2}


@pytest.mark.parametrize(
    "name,expected",
    [
        ("BTCUSDT-1m-2025-03.csv", "BTC/USDT"),
        ("BYBIT_ETHUSDT_5m.csv", "ETH/USDT"),
        ("BINANCEUS_BTCUSDT_1m.csv", "BTC/USDT"),
        ("BTC_USDT_1h.parquet", "BTC/USDT"),
        ("ETHBTC-1m-2024-01.csv", "ETH/BTC"),
        ("solusdt_15m.csv", "SOL/USDT"),
    ],
)
def test_symbol_from_filename(name, expected):
    assert symbol_from_filename(name) == expected


def test_filename_prefers_configured_symbols():
    assert symbol_from_filename("BTCUSDT-1m.csv", known=["BTC/USDT:USDT"]) == "BTC/USDT:USDT"


@pytest.mark.parametrize("name", ["data.csv", "candles_1m.csv"])
def test_filename_without_symbol_is_a_clear_error(name):
    with pytest.raises(CandleFormatError, match="cannot tell the symbol.*SYMBOL=PATH"):
        symbol_from_filename(name)


def test_ambiguous_filename_is_a_clear_error():
    with pytest.raises(CandleFormatError, match="ambiguous.*BTC/USDT.*ETH/USDT"):
        symbol_from_filename("BTCUSDT_ETHUSDT_1m.csv")


def test_symbol_equals_path_argument(tmp_path):
    path = write_csv(tmp_path / "data.csv", ROWS)
    assert parse_data_arg(f"BTC/USDT={path}") == ("BTC/USDT", str(path))
    assert parse_data_arg(str(path)) == (None, str(path))
    series, rejected = load_data_args([f"XRPUSDT={path}"])
    _check(series, "XRP/USDT")
    with pytest.raises(CandleFormatError, match="cannot tell the symbol"):
        load_data_args([str(path)])


def test_normalize_symbol():
    assert normalize_symbol("btc-usdt") == "BTC/USDT"
    assert normalize_symbol("BTCUSDT", ["ETH/USDT", "BTC/USDT"]) == "BTC/USDT"
    assert normalize_symbol("FOO") is None


def test_missing_file_and_bad_header(tmp_path):
    with pytest.raises(CandleFormatError, match="no such file"):
        read_candles(tmp_path / "BTCUSDT.csv")
    bad = tmp_path / "BTCUSDT.csv"
    bad.write_text("when,price\n1,2\n")
    with pytest.raises(CandleFormatError, match="lacks column"):
        read_candles(bad)


def test_shared_real_candles_when_present():
    """The shared Binance.US dump reads as 30,240 one-minute BTC/USDT bars (runs under CI)."""
    from tests.conftest import shared_data_dir

    path = shared_data_dir() / "BINANCEUS_BTCUSDT_1m.csv"
    [s] = read_candles(path)
    assert s.symbol == "BTC/USDT" and len(s) == 30_240
    assert np.all(np.diff(s.ts) == 60_000)
