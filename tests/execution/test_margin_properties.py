"""Property test of the paper account on margin: any bars, any orders, any fill-model settings.

For every generated session the broker runs bar by bar with a journaling sink (the pipeline's own
row builders) and, after EVERY bar:
- no fill but a liquidation lies outside its bar's [low, high];
- every fill pays its fee; every funding time a perp position lived through is charged exactly
  once, at qty * mark * rate;
- the wallet, each position's margin and unrealised pnl, and equity rebuilt from the journal
  (``prod_core.account.fold``) equal the live broker's to 1e-9 relative;
- a margined position never survives a bar that trades beyond its liquidation price.
"""

from __future__ import annotations

import math

from hypothesis import event, given, settings
from hypothesis import strategies as st

from prod_core.account import fold
from prod_core.account.margin import equity, margin_in_use, value
from prod_core.configs.governance import ExecutionConfig
from prod_core.domain import Bar, FillReason, Instrument, InstrumentKind, Side
from prod_core.execution import PaperBroker
from prod_core.feeds.funding import ConstantFunding
from prod_core.testing.builders import JournalSink, make_decision, make_plan

PERP, SPOT = "BTC/USDT", "BNB/USDT"
FUNDING_MS = 600_000  # every 10 bars of 1m, so short sessions cross many funding times
REL = 1e-9


def _close(a: float, b: float, scale: float) -> bool:
    return abs(a - b) <= REL * max(1.0, abs(a), abs(b), scale)


@st.composite
def sessions(draw):
    n = draw(st.integers(min_value=5, max_value=70))
    price = draw(st.floats(min_value=1.0, max_value=50_000.0))
    bars, actions = [], []
    for i in range(n):
        gap = draw(st.sampled_from([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.15, -0.15, 0.4, -0.4]))  # rare gaps
        o = price * math.exp(gap + draw(st.floats(min_value=-0.01, max_value=0.01)))
        c = o * math.exp(draw(st.floats(min_value=-0.08, max_value=0.08)))
        h = max(o, c) * math.exp(draw(st.floats(min_value=0.0, max_value=0.06)))
        lo = min(o, c) * math.exp(-draw(st.floats(min_value=0.0, max_value=0.06)))
        volume = draw(st.sampled_from([0.0, 0.5, 5.0, 50.0, 1e6]))
        bars.append((i * 60_000, o, h, lo, c, volume))
        price = c
        actions.append(draw(st.one_of(
            st.just(None),
            st.tuples(st.just("entry"), st.sampled_from(list(Side)),
                      st.floats(min_value=0.002, max_value=0.6),  # stop distance: beyond the liquidation sometimes
                      st.floats(min_value=0.002, max_value=0.3),  # target distance
                      st.floats(min_value=20.0, max_value=20_000.0)),  # notional
            st.just(("exit",)),
            st.sampled_from([None, None, None, ("kill",)]),
        )))  # fmt: skip
    return bars, actions


@settings(max_examples=300, deadline=None)
@given(
    session=sessions(),
    kind=st.sampled_from([InstrumentKind.PERP, InstrumentKind.PERP, InstrumentKind.SPOT]),
    leverage=st.sampled_from([1.0, 2.0, 3.0, 5.0, 10.0, 25.0]),
    rate=st.sampled_from([0.0001, -0.0003, 0.001, 0.0]),
    model=st.tuples(
        st.sampled_from(["market", "ideal_next_open"]),
        st.sampled_from([0.0, 0.5, 3.0]),  # impact
        st.sampled_from([None, 100.0, 10.0, 1.0]),  # participation cap
        st.integers(min_value=0, max_value=2),  # latency
        st.sampled_from(["through", "touch"]),
    ),
    cash0=st.floats(min_value=200.0, max_value=1e6),
)
def test_the_account_rebuilt_from_its_journal_equals_the_live_one(session, kind, leverage, rate, model, cash0):
    fill_model, impact, cap, latency, limit_fill = model
    cfg = ExecutionConfig(taker_fee_bps=5.0, maker_fee_bps=1.0, slippage_bps=2.0, min_notional_usd=10.0,
                          fill_model=fill_model, impact_coef=impact, max_participation_pct=cap,
                          latency_bars=latency, cancel_after_bars=3, limit_fill=limit_fill, liquidation_fee_bps=50.0)
    instruments = {
        PERP: Instrument(PERP, InstrumentKind.PERP, leverage=leverage, maint_margin_rate=0.005,
                         funding_interval_ms=FUNDING_MS),
        SPOT: Instrument(SPOT, InstrumentKind.SPOT),
    }
    sym = PERP if kind is InstrumentKind.PERP else SPOT
    sink = JournalSink(cash_usd=cash0)
    b = PaperBroker(cfg, instruments, sink, cash_usd=cash0, funding=ConstantFunding(rate))
    bars_by_ts: dict[int, Bar] = {}
    held_at: dict[str, list[int]] = {}  # position id -> funding times it lived through
    bars, actions = session
    for (ts, o, h, lo, c, v), action in zip(bars, actions, strict=True):
        bar = Bar(sym, ts, o, h, lo, c, v)
        bars_by_ts[ts] = bar
        before = b.positions.get(sym)
        if before is not None and before.symbol in b.instruments and kind is InstrumentKind.PERP:
            prev_ts = ts - 60_000
            t = (prev_ts // FUNDING_MS + 1) * FUNDING_MS
            if t <= ts and t > before.ts_open_ms:
                held_at.setdefault(before.position_id, []).append(t)
        n_fills = len(sink.fills)
        b.on_bar(bar)
        for fill in sink.fills[n_fills:]:
            assert fill.ts_ms == ts
            assert fill.fee_usd > 0.0, f"{fill} paid no fee"
            if fill.reason is not FillReason.LIQUIDATION:
                assert bar.low <= fill.price <= bar.high, f"{fill} outside {bar}"
        p = b.positions.get(sym)
        if p is not None:
            liq = b.liquidation_price(sym)
            if liq is not None:
                crossed = bar.low <= liq if p.side is Side.BUY else bar.high >= liq
                assert not crossed, f"{p} survived {bar} beyond its liquidation price {liq}"
            assert kind is InstrumentKind.PERP or p.side is Side.BUY
        _check_journal(b, sink, cash0)
        if action is None:
            continue
        if action[0] == "entry" and sym not in b.active:
            _, side, stop_d, tgt_d, notional = action
            stop = c * (1 - side.sign * stop_d)
            if stop <= 0:
                continue
            plan = make_plan(side, c, stop, c * (1 + side.sign * tgt_d), symbol=sym, ts_ms=ts)
            b.submit_entry(make_decision(plan, qty=notional / c, nominal_r_usd=10.0), ts)
        elif action[0] == "exit" and p is not None:
            b.request_exit(sym, FillReason.EXIT_SIGNAL, ts)
        elif action[0] == "kill":
            b.cancel_pending()
            b.flatten_now(FillReason.KILL_SWITCH, ts)
            _check_journal(b, sink, cash0)

    fundings = [e for e in sink.entries if e["kind"] == "funding"]
    charged: dict[str, list[int]] = {}
    for e in fundings:
        charged.setdefault(e["position_id"], []).append(e["ts_ms"])
        sign = 1 if e["side"] == "buy" else -1
        assert e["fee_usd"] == sign * e["qty"] * e["price"] * rate
    assert charged == {k: v for k, v in held_at.items() if v}, "each funding time lived through is charged once"
    liquidations = [f for f in sink.fills if f.reason is FillReason.LIQUIDATION]
    event(f"liquidations: {min(len(liquidations), 1)}")
    event(f"fundings: {min(len(fundings), 1)}")
    event(f"partial fills: {min(sum(1 for e in sink.entries if e['event'] in ('increase', 'reduce')), 1)}")
    for f in liquidations:
        trade = next(t for t in sink.closes if t.exit_fill is f)
        p = trade.position
        margin = p.qty * p.entry_price / p.leverage
        # settled at the bankruptcy price: the exit loses exactly the margin, plus the liquidation fee
        assert math.isclose(p.side.sign * p.qty * (f.price - p.entry_price), -margin, rel_tol=1e-9)
        assert math.isclose(f.fee_usd, p.qty * f.price * 0.005, rel_tol=1e-9)


def _check_journal(b: PaperBroker, sink: JournalSink, cash0: float) -> None:
    book = fold("prop", sink.entries)
    assert book.problems == []
    scale = cash0 + sum(abs(f.qty * f.price) for f in sink.fills)
    assert _close(book.cash_usd, b.cash_usd, scale), f"wallet: journal {book.cash_usd} != live {b.cash_usd}"
    live = {p.position_id: p for p in b.positions.values()}
    assert set(book.positions) == set(live)
    for pid, p in live.items():
        j = book.positions[pid]
        j.last_price = p.last_price  # marks are not journaled: the fold's positions take the live mark
        for name in ("qty", "entry_price", "entry_fee_usd", "funding_usd", "realized_usd", "leverage"):
            assert _close(getattr(j, name), getattr(p, name), scale), f"{pid}.{name}: {getattr(j, name)} != {getattr(p, name)}"
        assert _close(j.margin_usd, p.margin_usd, scale) and _close(value(j), value(p), scale)
    positions = list(book.positions.values())
    assert _close(margin_in_use(positions), b.margin_usd, scale)
    assert _close(equity(book.cash_usd, positions), b.equity_usd, scale)
