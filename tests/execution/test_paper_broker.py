"""Tests for the paper fill simulator (prod_core.execution.paper)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prod_core.configs.governance import ExecutionConfig
from prod_core.domain import Decision, FillReason, Instrument, InstrumentKind, OrderStatus, Side
from prod_core.execution import PaperBroker
from prod_core.risk import RiskSnapshot, evaluate
from prod_core.testing.builders import RecordingSink, gov, make_bar, make_decision, make_instruments, make_plan

PERP, SPOT = "BTC/USDT", "BNB/USDT"
EX = ExecutionConfig(taker_fee_bps=10.0, maker_fee_bps=2.0, slippage_bps=5.0, min_notional_usd=10.0)
TAKER, MAKER, SLIP = 0.001, 0.0002, 0.0005


def broker(cfg: ExecutionConfig = EX, cash: float = 100_000.0) -> tuple[PaperBroker, RecordingSink]:
    sink = RecordingSink()
    return PaperBroker(cfg, make_instruments((PERP,), (SPOT,)), sink, cash_usd=cash), sink


def enter(b: PaperBroker, side: Side = Side.BUY, qty: float = 10.0, symbol: str = PERP, ts_ms: int = 0,
          entry: float = 100.0, stop: float | None = None, target: float | None = None) -> Decision:
    """Decide at the close of bar ``ts_ms`` (which the broker has seen) and submit the entry."""
    b.on_bar(make_bar(symbol, ts_ms, entry))
    d = make_decision(make_plan(side, entry, stop, target, symbol=symbol, ts_ms=ts_ms), qty=qty, nominal_r_usd=50.0)
    b.submit_entry(d, ts_ms)
    return d


# ------------------------------------------------------------------ entries
def test_entry_fills_at_the_next_bar_open_with_slippage_and_taker_fee() -> None:
    """A buy decided on bar 0 fills on bar 1 at open x (1 + slippage), paying the taker fee on that notional."""
    b, sink = broker()
    enter(b, Side.BUY, qty=10.0)
    assert sink.fills == []
    b.on_bar(make_bar(PERP, 60_000, 101.0, 102.0, 100.5, 101.5))
    (fill,) = sink.fills
    assert (fill.ts_ms, fill.reason, fill.side) == (60_000, FillReason.ENTRY, Side.BUY)
    assert fill.price == pytest.approx(101.0 * (1 + SLIP))
    assert fill.fee_usd == pytest.approx(10.0 * fill.price * TAKER)
    assert b.cash_usd == pytest.approx(100_000.0 - fill.fee_usd)  # a perp on margin: only the fee leaves the wallet
    assert b.margin_usd == pytest.approx(10.0 * fill.price)  # at 1x leverage the margin is the notional
    assert [o.status for o in sink.orders] == [OrderStatus.SUBMITTED, OrderStatus.FILLED]
    assert b.positions[PERP].last_price == 101.5


def test_entry_is_not_filled_by_a_repeat_of_the_decision_bar() -> None:
    """A bar with the decision's own timestamp (a replayed/duplicated bar) never fills the entry."""
    b, sink = broker()
    enter(b, ts_ms=60_000)
    b.on_bar(make_bar(PERP, 60_000, 100.0))
    assert sink.fills == [] and PERP in b.pending_entries
    b.on_bar(make_bar(PERP, 120_000, 100.0))
    assert len(sink.fills) == 1


def test_sell_entry_fills_below_the_open_by_the_slippage() -> None:
    """Slippage is adverse: a short entry sells at open x (1 - slippage)."""
    b, sink = broker()
    enter(b, Side.SELL)
    b.on_bar(make_bar(PERP, 60_000, 100.0, 100.5, 99.0, 99.5))
    assert sink.fills[0].price == pytest.approx(100.0 * (1 - SLIP))


def test_slipped_price_is_clamped_inside_the_bar() -> None:
    """When open x (1 + slippage) is above the bar's high the fill is at the high."""
    b, sink = broker()
    enter(b)
    b.on_bar(make_bar(PERP, 60_000, 100.0, 100.0, 99.0, 99.5))
    assert sink.fills[0].price == 100.0


def test_entry_below_min_notional_is_rejected_with_reason() -> None:
    """0.05 x 100 = 5 USD < 10 USD minimum: the order is rejected, no fill, symbol free again."""
    b, sink = broker()
    enter(b, qty=0.05)
    b.on_bar(make_bar(PERP, 60_000, 100.0))
    (rejected,) = sink.rejected()
    assert rejected.reject_reason.startswith("min_notional")
    assert sink.fills == [] and PERP not in b.active and b.cash_usd == 100_000.0


def test_instrument_min_notional_overrides_a_smaller_config_minimum() -> None:
    """The larger of the config and instrument minimum applies."""
    sink = RecordingSink()
    b = PaperBroker(EX, {PERP: Instrument(PERP, InstrumentKind.PERP, min_notional_usd=100.0)}, sink, cash_usd=1e5)
    enter(b, qty=0.5)
    b.on_bar(make_bar(PERP, 60_000, 100.0))
    assert sink.rejected()[0].reject_reason == "min_notional: 50.00 < 100.00 USD"


def test_buy_without_enough_cash_is_rejected_with_reason() -> None:
    """A spot buy whose notional plus fee exceeds the available cash is rejected as insufficient_cash;
    a perp whose margin plus fee exceeds it as insufficient_margin."""
    b, sink = broker(cash=1_000.0)
    enter(b, qty=10.0, symbol=SPOT)
    b.on_bar(make_bar(SPOT, 60_000, 100.0))
    assert sink.rejected()[0].reject_reason.startswith("insufficient_cash: need 1001.00, available 1000.00 USD")
    enter(b, qty=10.0, ts_ms=60_000)
    b.on_bar(make_bar(PERP, 120_000, 100.0))
    assert sink.rejected()[1].reject_reason.startswith("insufficient_margin: need 1001.00, available 1000.00 USD")
    assert b.positions == {} and b.cash_usd == 1_000.0


def test_short_entry_on_spot_is_rejected() -> None:
    """Spot is long-only: a sell entry on a spot instrument is rejected, never opened."""
    b, sink = broker()
    enter(b, Side.SELL, symbol=SPOT)
    b.on_bar(make_bar(SPOT, 60_000, 100.0))
    assert sink.rejected()[0].reject_reason.startswith("short_not_allowed")
    assert b.positions == {}


@pytest.mark.parametrize("qty", [0.0, -1.0, math.nan])
def test_entry_with_a_non_positive_qty_is_rejected_not_raised(qty: float) -> None:
    """A zero, negative or NaN size becomes a rejected order with a reason, never an exception in on_bar."""
    b, sink = broker(ExecutionConfig(min_notional_usd=0.0))
    enter(b, qty=qty)
    b.on_bar(make_bar(PERP, 60_000, 100.0))
    assert sink.rejected()[0].reject_reason.startswith("invalid_qty")
    assert sink.fills == []


def test_cancel_pending_cancels_entries_and_frees_the_symbol() -> None:
    """Cancelled entries never fill."""
    b, sink = broker()
    enter(b)
    (cancelled,) = b.cancel_pending()
    assert cancelled.status is OrderStatus.CANCELLED and PERP not in b.active
    b.on_bar(make_bar(PERP, 60_000, 100.0))
    assert sink.fills == []


# ------------------------------------------------------------------ exits
def open_long(b: PaperBroker, stop: float = 95.0, target: float = 110.0) -> None:
    enter(b, Side.BUY, qty=10.0, stop=stop, target=target)
    b.on_bar(make_bar(PERP, 60_000, 100.0, 100.2, 99.8, 100.0))


def test_bar_touching_both_stop_and_target_exits_at_the_stop() -> None:
    """When one bar's range covers both levels the stop is assumed hit first."""
    b, sink = broker()
    open_long(b)
    b.on_bar(make_bar(PERP, 120_000, 100.0, 111.0, 94.0, 105.0))
    (trade,) = sink.closes
    assert trade.exit_fill.reason is FillReason.STOP
    assert trade.exit_fill.price == pytest.approx(95.0 * (1 - SLIP))


def test_short_bar_touching_both_levels_exits_at_the_stop() -> None:
    """Stop first holds for shorts too."""
    b, sink = broker()
    enter(b, Side.SELL, stop=105.0, target=90.0)
    b.on_bar(make_bar(PERP, 60_000, 100.0))
    b.on_bar(make_bar(PERP, 120_000, 100.0, 106.0, 89.0, 95.0))
    assert sink.closes[0].exit_fill.reason is FillReason.STOP
    assert sink.closes[0].exit_fill.price == pytest.approx(105.0 * (1 + SLIP))


def test_gap_through_the_stop_fills_at_the_open_not_the_stop() -> None:
    """A bar opening below a long's stop fills at that open (less slippage), a worse price than the stop."""
    b, sink = broker()
    open_long(b)
    b.on_bar(make_bar(PERP, 120_000, 90.0, 91.0, 89.0, 90.5))
    fill = sink.closes[0].exit_fill
    assert fill.price == pytest.approx(90.0 * (1 - SLIP)) and 89.0 <= fill.price <= 91.0


def test_target_fills_at_the_target_with_the_maker_fee() -> None:
    """A target is a resting limit: filled at the target price, maker fee, no slippage."""
    b, sink = broker()
    open_long(b)
    b.on_bar(make_bar(PERP, 120_000, 105.0, 112.0, 104.0, 111.0))
    fill = sink.closes[0].exit_fill
    assert (fill.reason, fill.price, fill.liquidity) == (FillReason.TARGET, 110.0, "maker")
    assert fill.fee_usd == pytest.approx(10.0 * 110.0 * MAKER)


def test_gap_through_the_target_fills_at_the_better_open() -> None:
    """A bar opening above a long's target fills at the open."""
    b, sink = broker()
    open_long(b)
    b.on_bar(make_bar(PERP, 120_000, 115.0, 116.0, 114.0, 115.5))
    assert sink.closes[0].exit_fill.price == 115.0


def test_exit_signal_fills_at_the_next_bar_open() -> None:
    """request_exit queues a market exit that fills at the next bar's open with slippage."""
    b, sink = broker()
    open_long(b)
    b.request_exit(PERP, FillReason.EXIT_SIGNAL, 60_000)
    assert sink.closes == []
    b.on_bar(make_bar(PERP, 120_000, 102.0, 103.0, 101.0, 102.5))
    fill = sink.closes[0].exit_fill
    assert (fill.reason, fill.ts_ms) == (FillReason.EXIT_SIGNAL, 120_000)
    assert fill.price == pytest.approx(102.0 * (1 - SLIP))
    assert b.positions == {} and PERP not in b.active


def test_flatten_now_closes_every_position_at_the_last_close() -> None:
    """The kill-switch closes at the last bar's close (less slippage), inside that bar."""
    b, sink = broker()
    open_long(b)
    trades = b.flatten_now(FillReason.KILL_SWITCH, 90_000)
    assert len(trades) == 1 and b.positions == {}
    assert trades[0].exit_fill.price == pytest.approx(100.0 * (1 - SLIP))
    assert trades[0].exit_fill.reason is FillReason.KILL_SWITCH


def test_closed_trade_r_is_net_pnl_over_nominal_one_r() -> None:
    """trade_r = (price pnl - entry fee - exit fee) / nominal 1R."""
    b, sink = broker()
    open_long(b)
    b.on_bar(make_bar(PERP, 120_000, 105.0, 112.0, 104.0, 111.0))
    trade = sink.closes[0]
    entry = sink.fills[0]
    pnl = 10.0 * (110.0 - entry.price) - entry.fee_usd - trade.exit_fill.fee_usd
    assert trade.pnl_usd == pytest.approx(pnl)
    assert trade.trade_r == pytest.approx(pnl / 50.0)


def test_open_r_marks_positions_net_of_entry_fee_and_exit_cost() -> None:
    """open_r is what closing now at the last price would book, in R."""
    b, sink = broker()
    open_long(b)
    p = b.positions[PERP]
    expected = (10.0 * (100.0 - p.entry_price) - p.entry_fee_usd - 10.0 * 100.0 * (TAKER + SLIP)) / 50.0
    assert b.open_r() == pytest.approx(expected)


def test_throttled_stop_out_costs_about_half_r() -> None:
    """Sized by risk at dd_state -1.2R and stopped at its stop, a trade books about -0.5R (throttle_multiplier)."""
    cfg = gov(execution={"taker_fee_bps": 10.0, "maker_fee_bps": 2.0, "slippage_bps": 5.0})
    plan = make_plan(Side.BUY, 100.0, 98.0, 104.0, symbol=PERP)
    d = evaluate(plan, RiskSnapshot(equity_usd=100_000.0, dd_state=-1.2), cfg)
    b, sink = broker(cfg.execution)
    b.on_bar(make_bar(PERP, 0, 100.0))
    b.submit_entry(d, 0)
    b.on_bar(make_bar(PERP, 60_000, 100.0, 100.1, 99.9, 100.0))
    b.on_bar(make_bar(PERP, 120_000, 99.0, 99.0, 97.0, 97.5))
    (trade,) = sink.closes
    assert trade.exit_fill.reason is FillReason.STOP
    assert trade.trade_r == pytest.approx(-0.5, abs=0.005)


@settings(max_examples=300, deadline=None)
@given(
    price=st.floats(min_value=1e-3, max_value=1e6),
    notional=st.floats(min_value=20.0, max_value=50_000.0),
    taker_bps=st.floats(min_value=0.01, max_value=100.0),
    side=st.sampled_from(list(Side)),
)
def test_buy_then_sell_at_one_price_loses_exactly_the_fees(price, notional, taker_bps, side) -> None:
    """Entering and exiting at the same price (no slippage) changes cash by exactly minus both fees."""
    cfg = ExecutionConfig(taker_fee_bps=taker_bps, maker_fee_bps=0.0, slippage_bps=0.0, min_notional_usd=10.0)
    b, sink = broker(cfg, cash=100_000.0)
    qty = notional / price
    enter(b, side, qty=qty, entry=price, stop=price * (1 - 0.5 * side.sign), target=price * (1 + 0.5 * side.sign))
    b.on_bar(make_bar(PERP, 60_000, price))
    b.request_exit(PERP, FillReason.EXIT_SIGNAL, 60_000)
    b.on_bar(make_bar(PERP, 120_000, price))
    entry_fill, exit_fill = sink.fills
    fees = entry_fill.fee_usd + exit_fill.fee_usd
    assert entry_fill.price == exit_fill.price == price
    assert fees > 0 and fees == pytest.approx(2 * qty * price * taker_bps / 10_000)
    assert b.cash_usd == pytest.approx(100_000.0 - fees, rel=1e-12, abs=1e-9)
    assert sink.closes[0].pnl_usd == pytest.approx(-fees, rel=1e-9)


# ------------------------------------------------------------------ the big property
@st.composite
def sessions(draw):
    """A random walk of bars with gaps (through stops and targets) and a script of entries/exits/kill-switches."""
    n = draw(st.integers(min_value=2, max_value=40))
    price = draw(st.floats(min_value=0.01, max_value=1e5))
    bars, actions = [], []
    for i in range(n):
        o = price * math.exp(draw(st.floats(min_value=-0.15, max_value=0.15)))
        c = o * math.exp(draw(st.floats(min_value=-0.08, max_value=0.08)))
        h = max(o, c) * math.exp(draw(st.floats(min_value=0.0, max_value=0.05)))
        lo = min(o, c) * math.exp(-draw(st.floats(min_value=0.0, max_value=0.05)))
        bars.append((i * 60_000, o, h, lo, c))
        price = c
        actions.append(
            draw(
                st.one_of(
                    st.just(None),
                    st.tuples(
                        st.just("entry"),
                        st.sampled_from(list(Side)),
                        st.floats(min_value=0.002, max_value=0.2),  # stop distance
                        st.floats(min_value=0.002, max_value=0.3),  # target distance
                        st.floats(min_value=1.0, max_value=5_000.0),  # notional
                    ),
                    st.just(("exit",)),
                    st.sampled_from([None, None, None, ("kill",)]),
                )
            )
        )
    return bars, actions


@settings(max_examples=250, deadline=None)
@given(
    session=sessions(),
    kind=st.sampled_from([InstrumentKind.PERP, InstrumentKind.SPOT]),
    fees=st.tuples(st.floats(min_value=0.1, max_value=50.0), st.floats(min_value=0.1, max_value=20.0), st.floats(min_value=0.0, max_value=50.0)),
    cash0=st.floats(min_value=500.0, max_value=1e6),
)
def test_paper_broker_invariants_hold_for_any_bars_and_entries(session, kind, fees, cash0) -> None:
    """Fills stay in their bar's range, entries fill at a later bar's open, fees are charged, stops win ties and cash reconciles with the fills."""
    taker_bps, maker_bps, slip_bps = fees
    cfg = ExecutionConfig(taker_fee_bps=taker_bps, maker_fee_bps=maker_bps, slippage_bps=slip_bps, min_notional_usd=10.0)
    sym = PERP if kind is InstrumentKind.PERP else SPOT
    sink = RecordingSink()
    b = PaperBroker(cfg, make_instruments((PERP,), (SPOT,)), sink, cash_usd=cash0)
    bars_by_ts = {}
    orders_by_id = {}
    bars, actions = session
    for (ts, o, h, lo, c), action in zip(bars, actions):
        bar = make_bar(sym, ts, o, h, lo, c)
        bars_by_ts[ts] = bar
        n_fills = len(sink.fills)
        b.on_bar(bar)
        for fill in sink.fills[n_fills:]:
            assert fill.ts_ms == ts, "a fill belongs to the bar being processed"
        p = b.positions.get(sym)
        if p is not None:  # survived this bar: neither level was touched
            if p.side is Side.BUY:
                assert bar.low > p.stop and bar.high < p.target
            else:
                assert bar.high < p.stop and bar.low > p.target
            assert p.last_price == bar.close
            assert kind is InstrumentKind.PERP or p.side is Side.BUY, "spot is never short"
        if action is None:
            continue
        if action[0] == "entry" and sym not in b.active:
            _, side, stop_d, tgt_d, notional = action
            plan = make_plan(side, c, c * (1 - side.sign * stop_d), c * (1 + side.sign * tgt_d), symbol=sym, ts_ms=ts)
            order = b.submit_entry(make_decision(plan, qty=notional / c, nominal_r_usd=10.0), ts)
            orders_by_id[order.order_id] = order
        elif action[0] == "exit" and p is not None:
            b.request_exit(sym, FillReason.EXIT_SIGNAL, ts)
        elif action[0] == "kill":
            b.cancel_pending()
            b.flatten_now(FillReason.KILL_SWITCH, ts)

    buys = sells = fee_total = 0.0
    net_qty = 0.0
    for fill in sink.fills:
        bar = bars_by_ts[fill.ts_ms]
        assert bar.low <= fill.price <= bar.high, f"{fill} outside {bar}"
        rate = maker_bps if fill.liquidity == "maker" else taker_bps
        assert fill.fee_usd > 0
        assert fill.fee_usd == pytest.approx(fill.qty * fill.price * rate / 10_000, rel=1e-9)
        if fill.reason is FillReason.ENTRY:
            order = orders_by_id[fill.order_id]
            assert fill.ts_ms > order.ts_ms, "entries never fill on the decision bar"
            ref = bar.open * (1 + fill.side.sign * slip_bps / 10_000)
            assert fill.price == min(max(ref, bar.low), bar.high)
        if fill.side is Side.BUY:
            buys += fill.qty * fill.price
            net_qty += fill.qty
        else:
            sells += fill.qty * fill.price
            net_qty -= fill.qty
        fee_total += fill.fee_usd
    for trade in sink.closes:
        p, x = trade.position, trade.exit_fill
        bar = bars_by_ts[x.ts_ms]
        if x.reason is FillReason.TARGET:  # stop first: a target exit means the stop was not touched
            assert (bar.low > p.stop) if p.side is Side.BUY else (bar.high < p.stop)
        assert trade.pnl_usd == pytest.approx(
            p.side.sign * p.qty * (x.price - p.entry_price) - p.entry_fee_usd - x.fee_usd, rel=1e-9, abs=1e-9
        )
    for order in sink.rejected():
        assert order.reject_reason.split(":")[0] in {
            "min_notional", "insufficient_cash", "insufficient_margin", "short_not_allowed", "invalid_qty"}
    if kind is InstrumentKind.PERP:
        return  # margined: the wallet and equity are checked against the journal in test_margin_properties
    scale = cash0 + buys + sells
    assert b.cash_usd == pytest.approx(cash0 - buys + sells - fee_total, rel=0, abs=1e-9 * scale)
    p = b.positions.get(sym)
    held = 0.0 if p is None else p.side.sign * p.qty
    assert net_qty == pytest.approx(held, rel=1e-9, abs=1e-12)
    marked = 0.0 if p is None else held * p.last_price
    assert b.equity_usd == pytest.approx(cash0 - buys + sells - fee_total + marked, rel=0, abs=1e-9 * scale)
