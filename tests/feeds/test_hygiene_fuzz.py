"""Hypothesis fuzzing of bar hygiene: no malformed bar ever reaches the regime stage."""

from __future__ import annotations

import math
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prod_core.configs import ConfigLoader
from prod_core.domain import Bar, Instrument, InstrumentKind
from prod_core.feeds.candles import CandleFormatError, read_candles
from prod_core.feeds.hygiene import ANOMALY_KINDS, classify, is_clean

REPO = Path(__file__).resolve().parents[2]

special = st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0, -1.0, 1e-300, 5e-324, 1e308])
price = st.one_of(st.floats(min_value=0.5, max_value=2.0), special, st.floats(allow_nan=True, allow_infinity=True))
ts = st.integers(min_value=-5, max_value=20)


def well_formed(b: Bar, last_ts: int) -> bool:
    """Independent oracle of a good bar."""
    values = (b.open, b.high, b.low, b.close, b.volume)
    return (
        all(math.isfinite(v) for v in values)
        and min(b.open, b.high, b.low, b.close) > 0
        and b.volume >= 0
        and b.high >= b.low
        and b.low <= b.open <= b.high
        and b.low <= b.close <= b.high
        and b.ts_ms > last_ts
    )


@st.composite
def bars(draw, symbols=("BTC/USDT", "ETH/USDT")):
    sym = draw(st.sampled_from(symbols))
    t = draw(ts)
    if draw(st.booleans()):
        low = draw(st.floats(min_value=0.5, max_value=1.0))
        high = draw(st.floats(min_value=low, max_value=2.0))
        o = draw(st.floats(min_value=low, max_value=high))
        c = draw(st.floats(min_value=low, max_value=high))
        v = draw(st.floats(min_value=0.0, max_value=100.0))
        fields = [o, high, low, c, v]
        if draw(st.booleans()):
            fields[draw(st.integers(0, 4))] = draw(price)
        return Bar(sym, t, *fields)
    return Bar(sym, t, draw(price), draw(price), draw(price), draw(price), draw(price))


@settings(max_examples=1500, deadline=None)
@given(bar=bars(), last=ts)
def test_is_clean_matches_the_oracle_and_every_rejection_has_a_kind(bar, last):
    clean = is_clean(bar, last)
    assert clean == well_formed(bar, last)
    if not clean:
        assert classify(bar, last) in ANOMALY_KINDS
    else:
        assert classify(bar, last) is None


class _NullStorage:
    def __getattr__(self, name):
        return lambda *a, **k: None


class _RegimeSpy:
    """Wraps the regime detector: every bar it receives must be well formed and newer."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.last: dict[str, int] = {}
        self.seen = 0

    def update(self, bar):
        last = self.last.get(bar.symbol, -(10**18))
        assert well_formed(bar, last), f"malformed bar reached the regime stage: {bar!r}"
        self.last[bar.symbol] = bar.ts_ms
        self.seen += 1
        return self.inner.update(bar)

    def __getattr__(self, name):
        return getattr(self.inner, name)


_LOADER = ConfigLoader(REPO / "configs")
_GOV = _LOADER.load_governance()


def _pipeline():
    from prod_core.risk import GovernanceState
    from prod_core.runner.pipeline import Pipeline
    from prod_core.telemetry import LiveMetrics

    inst = {s: Instrument(symbol=s, kind=InstrumentKind.SPOT) for s in ("BTC/USDT", "ETH/USDT")}
    live = LiveMetrics(feeds=["fuzz"], symbols=list(inst), strategies=["trend_following", "mean_reversion"])
    pipe = Pipeline(run_id="fuzz", gov=_GOV, instruments=inst, storage=_NullStorage(), live=live,
                    notify=lambda *a, **k: None, state=GovernanceState(), feed_name="fuzz", clock_mode="bar")
    pipe.detector = _RegimeSpy(pipe.detector)
    return pipe, live


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seq=st.lists(bars(), min_size=1, max_size=60))
def test_no_malformed_bar_reaches_the_regime_stage(seq):
    pipe, live = _pipeline()
    for bar in seq:
        pipe.on_bar(bar)
    accepted = sum(live.bars_total.values())
    rejected = sum(n for (feed, kind), n in live.anomalies_total.items())
    assert pipe.detector.seen == accepted
    assert accepted + rejected == len(seq)  # every bar is either accepted or counted
    assert {kind for (_, kind) in live.anomalies_total} <= set(ANOMALY_KINDS)


cell = st.one_of(
    st.integers(-10, 10**16).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", "nan", "abc", "1e400", "-0", " 7 ", '"3"']),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.lists(cell, min_size=0, max_size=8), max_size=20))
def test_reader_turns_any_rows_into_bars_or_counted_rejections(tmp_path_factory, rows):
    path = tmp_path_factory.mktemp("fuzz") / "BTCUSDT-1m.csv"
    path.write_text("ts_ms,open,high,low,close,volume\n" + "\n".join(",".join(r) for r in rows) + "\n")
    rejected: dict[str, int] = {}
    try:
        series = read_candles(path, rejected=rejected)
    except CandleFormatError:
        return
    n = sum(len(s) for s in series)
    non_blank = sum(1 for r in rows if any(c.strip() for c in r))
    assert n + rejected.get("malformed", 0) <= non_blank
    for s in series:
        assert s.ohlcv.shape == (len(s), 5)
