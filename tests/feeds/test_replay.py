"""Replay feed: merge order, pacing, corrupted rows, and determinism through the real pipeline."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from prod_core.configs import ConfigError, ConfigLoader, load_settings
from prod_core.domain import Instrument, InstrumentKind
from prod_core.feeds.base import Feed, FeedHealth
from prod_core.feeds.factory import build_feed
from prod_core.feeds.hygiene import ANOMALY_KINDS
from prod_core.feeds.replay import ReplayFeed, parse_speed
from prod_core.testing import corrupt, synthetic_rows, write_csv

REPO = Path(__file__).resolve().parents[2]
SYMS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")


def _drain(feed: ReplayFeed, now: float = 0.0) -> list:
    feed.start(now)
    out = []
    while not feed.exhausted:
        out.extend(feed.poll(now))
    return out


class _NullStorage:
    """Storage stand-in: the pipeline's writes are not what this test is about."""

    def __getattr__(self, name):
        return lambda *a, **k: None


def _run_pipeline(feed: ReplayFeed):
    """Drive the real pipeline in replay (bar clock) the way the runner does; return fills and live state."""
    from prod_core.risk import GovernanceState
    from prod_core.runner.pipeline import Pipeline
    from prod_core.telemetry import LiveMetrics

    loader = ConfigLoader(REPO / "configs")
    gov = loader.load_governance()
    symbols = loader.load_symbols()
    inst = {s.symbol: Instrument(symbol=s.symbol, kind=InstrumentKind(s.kind)) for s in symbols.symbols}
    live = LiveMetrics(feeds=[feed.name], symbols=list(inst), strategies=["trend_following", "mean_reversion"])
    pipe = Pipeline(run_id="replay-test", gov=gov, instruments=inst, storage=_NullStorage(), live=live,
                    notify=lambda *a, **k: None, state=GovernanceState(), feed_name=feed.name, clock_mode="bar")
    fills = []
    record = pipe._fill_seen  # called once per fill, after it is journaled

    def on_fill(fill):
        fills.append((fill.ts_ms, fill.symbol, fill.side.value, round(fill.qty, 12), fill.price, fill.reason.value))
        record(fill)

    pipe._fill_seen = on_fill
    feed.start(0.0)
    pipe.live_from_ms = feed.live_from_ms
    while not feed.exhausted:
        for bar in feed.poll(0.0):
            pipe.on_bar(bar)
    return fills, live


def _dataset(tmp_path: Path, n: int = 3000, corrupted: bool = False):
    paths, valid, injected = [], 0, {k: 0 for k in ANOMALY_KINDS}
    for i, sym in enumerate(SYMS):
        rows = synthetic_rows(n, seed=10 + i, price=(100.0, 20.0, 5.0)[i], vol=0.003)
        valid += len(rows)
        if corrupted:
            rows, counts = corrupt(rows, ANOMALY_KINDS, every=53 + i)
            for k, c in counts.items():
                injected[k] += c
        paths.append(str(write_csv(tmp_path / f"BINANCE_{sym.replace('/', '')}_1m.csv", rows)))
    return paths, valid, injected


def test_protocol_and_time_order_across_symbols(tmp_path):
    paths, valid, _ = _dataset(tmp_path, n=300)
    feed = ReplayFeed.from_paths(paths, known_symbols=SYMS)
    assert isinstance(feed, Feed)
    assert feed.symbols == SYMS
    assert feed.next_due_s() is None
    bars = _drain(feed)
    assert len(bars) == valid == feed.rows
    assert feed.live_from_ms == bars[0].ts_ms
    keys = [(b.ts_ms, SYMS.index(b.symbol)) for b in bars]
    assert keys == sorted(keys)  # time order; equal timestamps in symbol order
    assert feed.poll(0.0) == [] and feed.exhausted
    assert feed.health(0.0) == FeedHealth.HEALTHY
    feed.stop()
    assert feed.health(0.0) == FeedHealth.PAUSED


def test_max_speed_delivers_chunks(tmp_path):
    paths, valid, _ = _dataset(tmp_path, n=3000)
    feed = ReplayFeed.from_paths(paths, known_symbols=SYMS, chunk=2048)
    feed.start(0.0)
    first = feed.poll(0.0)
    assert len(first) == 2048 and not feed.exhausted


def test_out_of_order_rows_stay_in_place_within_a_symbol(tmp_path):
    rows = synthetic_rows(10)
    rows.insert(5, rows[1])  # a row that goes back in time
    rows.insert(8, rows[7])  # a duplicate
    feed = ReplayFeed.from_paths([str(write_csv(tmp_path / "BTCUSDT-1m.csv", rows))])
    assert [b.ts_ms for b in _drain(feed)] == [r[0] for r in rows]


def test_monthly_files_of_one_symbol_are_chained_by_time(tmp_path):
    rows = synthetic_rows(20)
    late = write_csv(tmp_path / "BTCUSDT-1m-2025-04.csv", rows[10:])
    early = write_csv(tmp_path / "BTCUSDT-1m-2025-03.csv", rows[:10])
    feed = ReplayFeed.from_paths([str(late), str(early)])
    assert [b.ts_ms for b in _drain(feed)] == [r[0] for r in rows]


def test_paced_speeds(tmp_path):
    rows = synthetic_rows(10, tf_ms=60_000)
    path = str(write_csv(tmp_path / "BTCUSDT-1m.csv", rows))
    feed = ReplayFeed.from_paths([path], speed="60x")  # one 1m bar per wall second
    feed.start(1000.0)
    assert len(feed.poll(1000.0)) == 1
    assert feed.next_due_s() == pytest.approx(1001.0)
    assert feed.poll(1000.5) == []
    assert len(feed.poll(1002.0)) == 2
    assert len(feed.poll(1100.0)) == 7 and feed.exhausted
    rt = ReplayFeed.from_paths([path], speed="realtime")
    rt.start(0.0)
    assert len(rt.poll(0.0)) == 1 and rt.next_due_s() == pytest.approx(60.0)


@pytest.mark.parametrize("text,value", [("max", None), ("realtime", 1.0), ("10x", 10.0), ("0.5x", 0.5), ("3", 3.0)])
def test_parse_speed(text, value):
    assert parse_speed(text) == value


@pytest.mark.parametrize("text", ["fast-ish", "0x", "-2x"])
def test_parse_speed_rejects(text):
    with pytest.raises(ValueError, match="--speed"):
        parse_speed(text)


def test_factory_builds_replay(tmp_path):
    paths, valid, _ = _dataset(tmp_path, n=50)
    settings = load_settings(flags={"feed": "replay"}, environ={}, env_file=tmp_path / "none")
    symbols = ConfigLoader(REPO / "configs").load_symbols()

    class Args:
        data = paths
        speed = "max"

    feed = build_feed(settings, symbols, Args, 0.0)
    assert isinstance(feed, ReplayFeed) and feed.rows == valid
    Args.data = []
    with pytest.raises(ConfigError, match="--data"):
        build_feed(settings, symbols, Args, 0.0)
    Args.data = [str(write_csv(tmp_path / "data.csv", synthetic_rows(3)))]
    with pytest.raises(ConfigError, match="cannot tell the symbol"):
        build_feed(settings, symbols, Args, 0.0)
    Args.data, Args.speed = paths, "warp"
    with pytest.raises(ConfigError, match="--speed"):
        build_feed(settings, symbols, Args, 0.0)


def test_replay_twice_gives_identical_trades(tmp_path):
    paths, valid, _ = _dataset(tmp_path)
    fills1, live1 = _run_pipeline(ReplayFeed.from_paths(paths, known_symbols=SYMS))
    fills2, live2 = _run_pipeline(ReplayFeed.from_paths(paths, known_symbols=SYMS))
    assert fills1, "the synthetic set should trade"
    assert fills1 == fills2
    assert sum(live1.bars_total.values()) == valid


def test_corrupted_rows_are_rejected_counted_and_the_run_continues(tmp_path):
    paths, valid, injected = _dataset(tmp_path, corrupted=True)
    (tmp_path / "BINANCE_BTCUSDT_1m.csv").open("a").write("1,2\n")  # cannot become a bar
    feed = ReplayFeed.from_paths(paths, known_symbols=SYMS)
    fills, live = _run_pipeline(feed)
    assert feed.rejected == {"malformed": 1}
    # bars accepted == valid input rows; every injected row counted under its own kind
    assert sum(live.bars_total.values()) == valid
    counted = {kind: n for (name, kind), n in live.anomalies_total.items() if name == "replay"}
    assert counted == {k: v for k, v in injected.items() if v}
    assert set(counted) == set(ANOMALY_KINDS)
    assert fills  # the run went on trading after the bad rows


# ------------------------------------------------------- files with no usable bar
def _hygiene_counts(feed: ReplayFeed) -> dict[str, int]:
    """What the pipeline's hygiene does with the feed's bars, by kind (scalar reference)."""
    from prod_core.feeds.hygiene import classify, is_clean

    last: dict[str, int] = {}
    counts: dict[str, int] = {}
    for bar in _drain(feed):
        prev = last.get(bar.symbol, -1)
        if is_clean(bar, prev):
            last[bar.symbol] = bar.ts_ms
            kind = "accepted"
        else:
            kind = classify(bar, prev)
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def _series(paths):
    from prod_core.feeds.candles import load_data_args

    return load_data_args(paths)[0]


def test_build_time_audit_agrees_with_pipeline_hygiene(tmp_path):
    """audit_rows (vectorised, used to refuse dead files) counts exactly what hygiene accepts and rejects."""
    import random

    from prod_core.feeds.replay import audit_rows

    rng = random.Random(7)
    paths = []
    for i, name in enumerate(("BTCUSDT-1m-a.csv", "BTCUSDT-1m-b.csv", "ETHUSDT-1m.csv")):
        rows = synthetic_rows(400, seed=i, start_ms=1_700_000_000_000 + (i % 2) * 200 * 60_000)
        rows, _ = corrupt(rows, ANOMALY_KINDS, every=7 + i)
        rows = [r if rng.random() > 0.05 else (r[0], *(rng.choice([math.inf, -1.0, 0.0, r[1]]) for _ in r[1:]))
                for r in rows]
        paths.append(str(write_csv(tmp_path / name, rows)))
    feed = ReplayFeed.from_paths(paths)
    reference = _hygiene_counts(feed)
    audit = audit_rows(_series(paths))
    total: dict[str, int] = {}
    for entry in audit.values():
        for kind, n in entry.items():
            if kind != "rows":
                total[kind] = total.get(kind, 0) + n
    assert total == reference
    assert set(reference) >= set(ANOMALY_KINDS)  # every kind exercised


def test_file_whose_every_row_is_rejected_is_refused_with_counts_by_kind(tmp_path):
    """A file that would give no bar at all is refused at build, naming it and the counts by kind."""
    from prod_core.feeds.candles import CandleFormatError

    good = str(write_csv(tmp_path / "BTCUSDT-1m.csv", synthetic_rows(50)))
    rows = [(r[0], math.nan, *r[2:]) for r in synthetic_rows(40)] + [(r[0], r[1], r[3] * 0.5, *r[3:]) for r in synthetic_rows(5)]
    bad = write_csv(tmp_path / "ETHUSDT-1m.csv", rows)
    bad.open("a").write("1,2\n")
    with pytest.raises(CandleFormatError) as info:
        ReplayFeed.from_paths([good, str(bad)])
    message = str(info.value)
    assert message.startswith(f"{bad}: all 46 rows rejected (nan=40, high_below_low=5, malformed=1); no bar to replay: ")
    assert good not in message and "\n" not in message


def test_empty_file_and_a_copy_of_another_file_are_refused(tmp_path):
    """A header-only file, and a second copy of a symbol's data (chained after the first, so it goes back in time), add nothing: refused."""
    from prod_core.feeds.candles import CandleFormatError

    rows = synthetic_rows(30)
    first = str(write_csv(tmp_path / "BTCUSDT-1m-2024-01.csv", rows))
    copy = str(write_csv(tmp_path / "BTCUSDT-1m-2024-01-copy.csv", rows))
    with pytest.raises(CandleFormatError, match=r"copy\.csv: all 30 rows rejected \(out_of_order=29, duplicate=1\); no bar to replay: "
                                                r"its bars repeat or precede another file"):
        ReplayFeed.from_paths([first, copy])
    empty = tmp_path / "ETHUSDT-1m.csv"
    empty.write_text("ts_ms,open,high,low,close,volume\n")
    with pytest.raises(CandleFormatError, match=rf"{empty}: no candle rows \(empty or header only\)"):
        ReplayFeed.from_paths([first, str(empty)])


def test_factory_turns_a_dead_file_into_a_config_error(tmp_path):
    settings = load_settings(flags={"feed": "replay"}, environ={}, env_file=tmp_path / "none")
    symbols = ConfigLoader(REPO / "configs").load_symbols()
    bad = write_csv(tmp_path / "BTCUSDT-1m.csv", [(r[0], -1.0, *r[2:]) for r in synthetic_rows(10)])

    class Args:
        data = [str(bad)]
        speed = "max"

    with pytest.raises(ConfigError, match=rf"^replay: {bad}: all 10 rows rejected \(non_positive_price=10\)"):
        build_feed(settings, symbols, Args, 0.0)
