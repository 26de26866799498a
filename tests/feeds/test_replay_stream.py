"""The streaming replay gives exactly the bars of the whole-load merge it replaced.

The reference below is the former ``ReplayFeed._merge``: every file read whole, each
symbol's files chained by first timestamp (stable), the running maximum as key, one
lexsort of everything by (key, symbol rank, position). The data sets have out-of-order
rows, duplicates, equal timestamps across symbols, several (overlapping) files per
symbol, a file in seconds, a file with a symbol column, and blocks so small that chunk
boundaries fall everywhere.
"""

from __future__ import annotations

import math
import os
import random
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prod_core.feeds import stream
from prod_core.feeds.candles import CandleFormatError, read_candles
from prod_core.feeds.replay import ReplayFeed
from prod_core.feeds.stream import KeyedChunk, keyed_chunks, merge_windows
from prod_core.testing import synthetic_rows, write_csv
from prod_core.testing.builders import drain

HEADER = ("ts_ms", "open", "high", "low", "close", "volume")
TF = 60_000
T0 = 1_700_000_000_000


# ------------------------------------------------------------- reference
def reference(paths: list[str]) -> tuple[list[tuple], list[int]]:
    """(bars as tuples, their merge keys) by the former whole-load merge."""
    series = [s for p in paths for s in read_candles(p)]
    order: dict[str, int] = {}
    for s in series:
        order.setdefault(s.symbol, len(order))
    keys, ts_all, vals, syms = [], [], [], []
    for sym, rank in order.items():
        parts = sorted((s for s in series if s.symbol == sym and len(s)), key=lambda s: int(s.ts[0]))
        if not parts:
            continue
        ts = np.concatenate([p.ts for p in parts])
        keys.append(np.maximum.accumulate(ts))
        ts_all.append(ts)
        vals.append(np.concatenate([p.ohlcv for p in parts]))
        syms.append(np.full(ts.shape[0], rank))
    key, ts, ohlcv, sym = (np.concatenate(a) for a in (keys, ts_all, vals, syms))
    idx = np.lexsort((np.arange(key.shape[0]), sym, key))
    names = list(order)
    bars = [(names[s], t, *v) for s, t, v in zip(sym[idx].tolist(), ts[idx].tolist(), ohlcv[idx].tolist())]
    return bars, key[idx].tolist()


def as_tuples(bars) -> list[tuple]:
    return [(b.symbol, b.ts_ms, b.open, b.high, b.low, b.close, b.volume) for b in bars]


def same(a: list[tuple], b: list[tuple]) -> bool:
    """Equal, NaN equal to NaN."""
    return len(a) == len(b) and all(
        x == y or (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y))
        for ra, rb in zip(a, b) for x, y in zip(ra, rb)
    )


# ------------------------------------------------------------- data sets
def messy(rows: list[tuple], rng: random.Random) -> list[tuple]:
    """Rows with some gone back in time, some duplicated, one with a NaN price."""
    out = list(rows)
    for _ in range(max(1, len(out) // 15)):
        i = rng.randrange(1, len(out))
        out.insert(i, out[rng.randrange(0, i)])  # back in time (or a duplicate)
    for _ in range(max(1, len(out) // 25)):
        i = rng.randrange(0, len(out))
        out.insert(i + 1, out[i])  # adjacent duplicate
    i = rng.randrange(0, len(out))
    out[i] = (out[i][0], math.nan, *out[i][2:])
    return out


def write(path: Path, rows: list[tuple], fmt: str, header=HEADER) -> str:
    if fmt == "csv":
        return str(write_csv(path.with_suffix(".csv"), rows, header=header))
    cols = list(zip(*rows))
    table = pa.table({name: pa.array(col, pa.int64() if i == 0 else pa.float64()) for i, (name, col) in
                      enumerate(zip(HEADER, cols))})
    out = path.with_suffix(".parquet")
    pq.write_table(table, out, row_group_size=17)
    return str(out)


def dataset(tmp_path: Path, fmt: str, seed: int = 1) -> list[str]:
    """Three symbols on one time grid (equal timestamps across symbols), several files each:
    split in overlapping pieces, given out of time order, with messy rows."""
    rng = random.Random(seed)
    paths = []
    for k, sym in enumerate(("BTCUSDT", "ETHUSDT", "SOLUSDT")):
        rows = synthetic_rows(90, seed=seed + k, start_ms=T0 + (k % 2) * 7 * TF, tf_ms=TF)
        cuts = sorted(rng.sample(range(10, 80), 2))
        pieces = [rows[: cuts[0]], rows[cuts[0] - 3: cuts[1]], rows[cuts[1]:]]  # the second overlaps the first
        for j in rng.sample(range(3), 3):  # files in any order on the command line
            paths.append(write(tmp_path / f"{sym}-1m-part{j}", messy(pieces[j], rng), fmt))
    # a fourth symbol with a file whose timestamps are in seconds, and one that starts at
    # the very same ts as another file of it (chained in argument order)
    rows = synthetic_rows(40, seed=99, start_ms=T0, tf_ms=TF)
    secs = [(r[0] // 1000, *r[1:]) for r in rows[:20]]
    paths.append(write(tmp_path / "XRPUSDT-1m-a", secs, fmt))
    paths.append(write(tmp_path / "XRPUSDT-1m-b", rows[:5] + rows[25:], fmt))
    return paths


def no_slow_path(monkeypatch) -> None:
    """Fail if a CSV goes to the row-by-row reader: the tiny blocks must be streamed."""
    def refuse(*a, **k):
        raise AssertionError("row-by-row reader used")

    monkeypatch.setattr(stream, "_read_csv_slow", refuse)


# ------------------------------------------------------------- tests
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize("block,chunk", [(96, 1), (160, 7), (1 << 20, 2048)])
def test_streamed_replay_equals_the_whole_load_merge(tmp_path, monkeypatch, fmt, block, chunk):
    paths = dataset(tmp_path, fmt)
    no_slow_path(monkeypatch)
    expected, keys = reference(paths)
    rows = 3 if block < 1000 else 1 << 20
    feed = ReplayFeed.from_paths(paths, block_bytes=block, batch_rows=rows, chunk=chunk)
    assert feed.rows == len(expected)
    assert feed.live_from_ms == expected[0][1]
    assert feed.symbols == ("BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT")
    got = as_tuples(drain(feed))
    assert same(got, expected)
    assert feed.delivered == len(expected) and feed.exhausted and feed.poll(0.0) == []
    assert any(b[1] < a[1] and a[0] == b[0] for a, b in zip(expected, expected[1:]))  # out-of-order rows present
    assert len(set(keys)) < len(keys)  # equal keys across symbols present


def emptied(path: str) -> None:
    """Rewrite a data file as the same format with no rows."""
    if path.endswith(".csv"):
        Path(path).write_text(",".join(HEADER) + "\n")
    else:
        pq.write_table(pa.table({name: pa.array([], pa.int64() if i == 0 else pa.float64())
                                 for i, name in enumerate(HEADER)}), path)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize("spill", [True, False])
def test_a_file_is_parsed_once_and_replayed_from_its_spill(tmp_path, monkeypatch, spill, fmt):
    """With the spill the rows come back from the scan's spill file: the same bars as reading
    the file again, and the replay is what was scanned even if the file is rewritten after."""
    paths = dataset(tmp_path, fmt)
    no_slow_path(monkeypatch)
    monkeypatch.setattr(stream, "SPILL", spill)
    monkeypatch.setattr(stream, "SPILL_RESERVE_BYTES", 0)  # spilled however full this machine's temp dir is
    expected, _ = reference(paths)
    feed = ReplayFeed.from_paths(paths, block_bytes=160, batch_rows=3, chunk=5)
    for path in paths:  # rewritten after the scan: only the spill still has the rows
        emptied(path)
    got = as_tuples(drain(feed))
    assert same(got, expected) == spill
    if not spill:  # read again: past the first window (read at the start), the emptied files give nothing
        assert len(got) < len(expected)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_full_temp_dir_falls_back_to_reading_again(tmp_path, monkeypatch, caplog, fmt):
    """Writes to the spill fail with ENOSPC (a real one: /dev/full): one warning that names the
    file and what to do, and the replay reads the file again, bar for bar the same."""
    paths = dataset(tmp_path, fmt)
    no_slow_path(monkeypatch)
    monkeypatch.setattr(stream, "_spill_file", lambda: open("/dev/full", "r+b", buffering=0))
    monkeypatch.setattr(stream, "SPILL_RESERVE_BYTES", 0)  # the write itself fails, not the reserve
    monkeypatch.setattr(stream.Spill, "_warned", False)
    expected, _ = reference(paths)
    with caplog.at_level("WARNING", logger="prod_core.feeds.stream"):
        feed = ReplayFeed.from_paths(paths, block_bytes=160, batch_rows=3, chunk=5)
    warnings = [r.getMessage() for r in caplog.records if r.name == "prod_core.feeds.stream"]
    assert len(warnings) == 1 and "No space left on device" in warnings[0] and "TMPDIR" in warnings[0]
    assert same(as_tuples(drain(feed)), expected)


def test_a_spill_leaves_the_reserve_free(tmp_path, monkeypatch, caplog):
    """A spill that would leave less than the reserve free on the temp dir's file system (which
    the database may share) stops there: one warning saying so, and the files are read again."""
    paths = dataset(tmp_path, "csv")
    no_slow_path(monkeypatch)
    fs = os.statvfs(tempfile.gettempdir())
    monkeypatch.setattr(stream, "SPILL_RESERVE_BYTES", fs.f_bavail * fs.f_frsize + (1 << 30))  # already crossed
    monkeypatch.setattr(stream.Spill, "_warned", False)
    expected, _ = reference(paths)
    with caplog.at_level("WARNING", logger="prod_core.feeds.stream"):
        feed = ReplayFeed.from_paths(paths, block_bytes=160, chunk=5)
    warnings = [r.getMessage() for r in caplog.records if r.name == "prod_core.feeds.stream"]
    assert len(warnings) == 1 and "MiB free" in warnings[0] and "TMPDIR" in warnings[0]
    assert same(as_tuples(drain(feed)), expected)


@pytest.mark.parametrize("seed", range(4))
def test_random_data_sets_and_block_sizes(tmp_path, monkeypatch, seed):
    rng = random.Random(seed)
    paths = dataset(tmp_path, "csv", seed=seed)
    no_slow_path(monkeypatch)
    expected, _ = reference(paths)
    feed = ReplayFeed.from_paths(paths, block_bytes=rng.randrange(80, 400), chunk=rng.randrange(1, 60))
    assert same(as_tuples(drain(feed)), expected)


def test_paced_polls_follow_the_keys_across_chunks(tmp_path, monkeypatch):
    """realtime / Nx: each poll gives the bars whose key is within the horizon, wherever chunks end."""
    paths = dataset(tmp_path, "csv")
    no_slow_path(monkeypatch)
    expected, keys = reference(paths)
    feed = ReplayFeed.from_paths(paths, block_bytes=96, speed="60x", chunk=3)  # one minute of bars per second
    feed.start(100.0)
    got, now = [], 100.0
    while not feed.exhausted:
        due = feed.next_due_s()
        assert due is not None and due == pytest.approx(100.0 + (keys[len(got)] - keys[0]) / 60_000)
        now += 0.7
        batch = as_tuples(feed.poll(now))
        horizon = keys[0] + (now - 100.0) * 60_000
        want = min(sum(k <= horizon for k in keys), len(got) + 150)  # at most 50 chunks a poll
        assert same(batch, expected[len(got):want])
        got += batch
    assert feed.next_due_s() is None and len(got) == len(expected)


def test_symbol_column_file_and_a_malformed_file_mix_with_streamed_files(tmp_path):
    """A fetch-history style file (symbol column, read whole) and a file that needs the
    row-by-row reader (a short row) merge with streamed files exactly like before."""
    paths = dataset(tmp_path, "csv")
    both = synthetic_rows(30, seed=5, start_ms=T0 + 3 * TF, tf_ms=TF)
    rows = [(*r, "DOTUSDT" if i % 3 else "ADAUSDT") for i, r in enumerate(both)]
    mixed = write_csv(tmp_path / "history.csv", rows, header=(*HEADER, "symbol"))
    bad = Path(paths[0])
    bad.open("a").write("1,2\n")
    paths.append(str(mixed))
    expected, _ = reference(paths)
    feed = ReplayFeed.from_paths(paths, block_bytes=128, chunk=5)
    assert feed.rejected == {"malformed": 1}
    assert feed.symbols[-2:] == ("ADA/USDT", "DOT/USDT")  # first appearance in the file
    assert same(as_tuples(drain(feed)), expected)


def test_dead_file_counts_carry_across_chunks(tmp_path, monkeypatch):
    """A copy of a file (every row behind the first copy) is refused with the same counts at any block size."""
    no_slow_path(monkeypatch)
    rows = synthetic_rows(30)
    first = str(write_csv(tmp_path / "BTCUSDT-1m-2024-01.csv", rows))
    copy = str(write_csv(tmp_path / "BTCUSDT-1m-2024-01-copy.csv", rows))
    for block in (96, 1 << 20):
        with pytest.raises(CandleFormatError, match=r"copy\.csv: all 30 rows rejected \(out_of_order=29, duplicate=1\)"):
            ReplayFeed.from_paths([first, copy], block_bytes=block)


def test_units_are_logged_once_per_file_whatever_the_blocks(tmp_path, caplog, monkeypatch):
    no_slow_path(monkeypatch)
    rows = [(r[0] // 1000, *r[1:]) for r in synthetic_rows(40)]
    path = write_csv(tmp_path / "BTCUSDT-1m.csv", rows)
    with caplog.at_level("INFO", logger="prod_core.feeds.candles"):
        feed = ReplayFeed.from_paths([str(path)], block_bytes=96)
        bars = drain(feed)
    lines = [r.getMessage() for r in caplog.records if r.name == "prod_core.feeds.candles"]
    assert lines == [f"{path}: timestamps of column ts_ms detected in seconds (40 rows); converted to milliseconds"]
    assert [b.ts_ms for b in bars] == [r[0] * 1000 for r in rows]


@pytest.mark.parametrize("seed", range(20))
def test_merge_windows_equals_one_lexsort(seed):
    """The window merge over random keyed streams (random chunking) equals a lexsort of everything."""
    rng = np.random.default_rng(seed)
    n_sym = int(rng.integers(1, 5))
    streams, whole = [], []
    for s in range(n_sym):
        n = int(rng.integers(0, 60))
        ts = np.cumsum(rng.integers(-2, 4, n)).astype(np.int64)  # goes back in time now and then
        ohlcv = rng.random((n, 5))
        cuts = np.sort(rng.choice(np.arange(1, max(n, 2)), size=min(int(rng.integers(0, 6)), max(n - 1, 0)),
                                  replace=False)) if n > 1 else []
        chunks = [(t, v) for t, v in zip(np.split(ts, cuts), np.split(ohlcv, cuts)) if t.size]

        class Part:  # the one thing keyed_chunks asks of a part
            def __init__(self, chunks):
                self._chunks = chunks

            def chunks(self):
                return iter(self._chunks)

        streams.append(keyed_chunks([Part(chunks)]))
        key = np.maximum.accumulate(ts) if n else ts
        whole.append((key, ts, np.full(n, s), ohlcv))
    key, ts, sym, ohlcv = (np.concatenate([w[i] for w in whole]) for i in range(4))
    idx = np.lexsort((np.arange(key.shape[0]), sym, key))
    windows = list(merge_windows(streams))
    assert all(w.key.size for w in windows)
    got = [np.concatenate([getattr(w, f) for w in windows]) if windows else np.empty(0) for f in KeyedChunk._fields]
    assert got[0].tolist() == key[idx].tolist()
    assert got[1].tolist() == ts[idx].tolist()
    assert (np.concatenate([w.sym for w in windows]).tolist() if windows else []) == sym[idx].tolist()
    assert (got[2].tolist() if windows else []) == ohlcv[idx].tolist()
