"""Tests for exposure and position-count limits (prod_core.portfolio.limits), alone and after risk sizing."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from prod_core.domain import Side
from prod_core.portfolio import BookSnapshot, fit
from prod_core.risk import RiskSnapshot, cost_rate, evaluate
from prod_core.testing.builders import gov, make_decision, make_plan

CFG = gov()  # 4 positions, gross 150%, net 100%, symbol 50% of equity
EQ = 10_000.0


def book(gross: float = 0.0, net: float = 0.0, symbol: float = 0.0, positions: int = 0, busy: bool = False) -> BookSnapshot:
    return BookSnapshot(equity_usd=EQ, gross_usd=gross, net_usd=net, symbol_usd=symbol, positions=positions, symbol_busy=busy)


def decision(side: Side = Side.BUY, notional: float = 1_000.0):
    return make_decision(make_plan(side, 100.0), qty=notional / 100.0, nominal_r_usd=50.0)


def test_decision_within_all_limits_passes_unchanged() -> None:
    """A 1,000 USD entry into an empty book is approved as sized."""
    d = decision()
    assert fit(d, book(), CFG) is d


def test_gross_limit_scales_the_entry_to_the_room_left() -> None:
    """With 14,000 of 15,000 gross used a 2,000 entry is resized to 1,000 (half the qty and risk)."""
    d = decision(notional=2_000.0)
    out = fit(d, book(gross=14_000.0), CFG)
    assert out.decision == "resized"
    assert out.qty == pytest.approx(d.qty * 0.5) and out.risk_usd == pytest.approx(d.risk_usd * 0.5)
    assert "50.00%" in out.reason


def test_symbol_limit_scales_the_entry() -> None:
    """With 4,000 of the 5,000 per-symbol cap used a 2,000 entry is resized to 1,000."""
    out = fit(decision(notional=2_000.0), book(gross=4_000.0, net=4_000.0, symbol=4_000.0), CFG)
    assert out.qty * 100.0 == pytest.approx(1_000.0)


def test_net_limit_scales_a_buy_but_lets_a_sell_through() -> None:
    """With +9,500 net long a 2,000 buy is cut to 500 while a 2,000 sell reduces net and passes."""
    b = book(gross=9_500.0, net=9_500.0)
    assert fit(decision(Side.BUY, 2_000.0), b, CFG).qty * 100.0 == pytest.approx(500.0)
    assert fit(decision(Side.SELL, 2_000.0), b, CFG).decision == "approved"


def test_sell_is_scaled_by_net_short_limit() -> None:
    """With -9,000 net short a 2,000 sell is cut to 1,000."""
    out = fit(decision(Side.SELL, 2_000.0), book(gross=9_000.0, net=-9_000.0), CFG)
    assert out.qty * 100.0 == pytest.approx(1_000.0)


def test_buy_that_reduces_a_net_short_beyond_the_cap_is_never_scaled_up() -> None:
    """When losses left the book net short past the cap, a small buy is approved as sized, never enlarged."""
    d = decision(Side.BUY, 500.0)
    out = fit(d, book(gross=11_000.0, net=-11_000.0), CFG)
    assert out.qty == pytest.approx(d.qty)
    assert out.decision == "approved"


def test_max_positions_vetoes() -> None:
    """Four open or pending positions veto a fifth."""
    assert fit(decision(), book(positions=4), CFG).decision == "vetoed_max_positions"


def test_busy_symbol_vetoes() -> None:
    """One position or pending entry per symbol."""
    assert fit(decision(), book(busy=True), CFG).decision == "vetoed_symbol_busy"


def test_no_room_or_room_below_min_notional_vetoes_exposure() -> None:
    """A full book, or room smaller than the minimum order, vetoes with reason exposure."""
    assert fit(decision(), book(gross=15_000.0), CFG).decision == "vetoed_exposure"
    out = fit(decision(), book(gross=14_995.0), CFG, min_notional_usd=10.0)
    assert out.decision == "vetoed_exposure" and out.qty == 0.0 and "room" in out.reason


def test_vetoed_decision_passes_through() -> None:
    """Portfolio does not revive a risk veto."""
    vetoed = make_decision(decision="vetoed_daily_lock", qty=0.0)
    assert fit(vetoed, book(), CFG) is vetoed


# ------------------------------------------------------------------ properties: risk then portfolio
plans = st.builds(
    lambda side, entry, dist: make_plan(side, entry, entry * (1 - side.sign * dist), entry * (1 + side.sign * 0.05)),
    st.sampled_from(list(Side)),
    st.floats(min_value=1e-3, max_value=1e5),
    st.floats(min_value=5e-4, max_value=0.3),
)


@st.composite
def books(draw, equity: float):
    """Any exposure book: mostly within limits, sometimes beyond them (losses shrink equity under open positions)."""
    scale = draw(st.sampled_from([1.0, 1.0, 1.0, 2.5]))
    gross = draw(st.floats(min_value=0.0, max_value=1.5 * equity * scale))
    net = draw(st.floats(min_value=-1.0, max_value=1.0)) * min(gross, equity * scale)
    symbol = draw(st.floats(min_value=0.0, max_value=1.0)) * min(gross, 0.5 * equity * scale)
    positions = draw(st.integers(min_value=0, max_value=5))
    return BookSnapshot(equity, gross, net, symbol, positions, draw(st.sampled_from([False] * 5 + [True])))


@st.composite
def cases(draw):
    equity = draw(st.floats(min_value=100.0, max_value=1e7))
    snap = RiskSnapshot(
        equity_usd=equity,
        lock_reason=draw(st.sampled_from(["limits_ok"] * 8 + ["max_daily_loss", "manual"])),
        kill_switch=draw(st.sampled_from([False] * 9 + [True])),
        dd_state=draw(st.floats(min_value=-2.5, max_value=0.0)),
        dd_stopped=draw(st.sampled_from([False] * 9 + [True])),
        safe_mode=draw(st.booleans()),
        holds=draw(st.sampled_from([frozenset()] * 4 + [frozenset({"trend_following"})])),
        feed_ok=draw(st.sampled_from([True] * 9 + [False])),
    )
    cfg = gov(
        risk={"risk_per_trade_pct": draw(st.floats(min_value=0.05, max_value=5.0))},
        portfolio={
            "max_open_positions": draw(st.integers(min_value=1, max_value=6)),
            "max_gross_exposure_pct": 150.0,
            "max_net_exposure_pct": draw(st.sampled_from([50.0, 100.0, 150.0])),
            "max_symbol_exposure_pct": draw(st.sampled_from([20.0, 50.0, 100.0])),
        },
    )
    return draw(plans), snap, cfg, draw(books(equity)), draw(st.sampled_from([0.0, 10.0]))


@settings(max_examples=800, deadline=None)
@given(case=cases())
def test_risk_then_portfolio_never_breaches_trade_risk_exposure_or_position_limits(case) -> None:
    """For any plan, equity, governance state and book an approved/resized decision keeps the per-trade risk cap and every exposure limit."""
    plan, snap, cfg, bk, min_notional = case
    sized = evaluate(plan, snap, cfg)
    d = fit(sized, bk, cfg, min_notional)
    gated = (
        snap.kill_switch or snap.lock_reason != "limits_ok" or snap.dd_stopped
        or snap.dd_state <= cfg.drawdown.no_entries_at_r or not snap.feed_ok or plan.strategy in snap.holds
    )
    if gated:
        assert not d.approved and d.qty == 0.0
    if not d.approved:
        assert d.qty == 0.0 and d.risk_usd == 0.0 and d.decision.startswith("vetoed_")
        return
    pc = cfg.portfolio
    nominal = snap.equity_usd * cfg.risk.risk_per_trade_pct / 100
    multiplier = (cfg.drawdown.throttle_multiplier if snap.dd_state <= cfg.drawdown.throttle_at_r else 1.0) * (
        pc.safe_mode_risk_multiplier if snap.safe_mode else 1.0
    )
    loss = d.qty * (plan.risk_per_unit + (plan.entry + plan.stop) * cost_rate(cfg))
    assert loss <= cfg.risk.max_trade_risk_r * nominal * multiplier * (1 + 1e-9)
    assert d.qty <= sized.qty * (1 + 1e-12), "portfolio never enlarges a sized plan"
    want = d.qty * plan.entry
    tol = 1e-9 * bk.equity_usd
    assert bk.positions < pc.max_open_positions and not bk.symbol_busy
    assert bk.gross_usd + want <= pc.max_gross_exposure_pct / 100 * bk.equity_usd + tol
    assert bk.symbol_usd + want <= pc.max_symbol_exposure_pct / 100 * bk.equity_usd + tol
    net_after = bk.net_usd + plan.side.sign * want
    assert abs(net_after) <= max(pc.max_net_exposure_pct / 100 * bk.equity_usd, abs(bk.net_usd)) + tol
    if d.decision == "resized" and d.qty < sized.qty * (1 - 1e-12):
        assert want >= min_notional * (1 - 1e-9)


@settings(max_examples=300, deadline=None)
@given(
    equity=st.floats(min_value=1_000.0, max_value=1e6),
    dd_state=st.floats(min_value=-1.79, max_value=-1.0),
    entry=st.floats(min_value=0.1, max_value=1e5),
    dist=st.floats(min_value=0.002, max_value=0.1),
    side=st.sampled_from(list(Side)),
)
def test_throttled_plan_is_sized_to_lose_about_half_r_at_the_stop(equity, dd_state, entry, dist, side) -> None:
    """With dd_state between throttle_at_r and no_entries_at_r a stop-out costs throttle_multiplier R (0.5R)."""
    plan = make_plan(side, entry, entry * (1 - side.sign * dist), entry * (1 + side.sign * 0.05))
    d = evaluate(plan, RiskSnapshot(equity_usd=equity, dd_state=dd_state), CFG)
    assume(d.approved)
    loss = d.qty * (plan.risk_per_unit + (plan.entry + plan.stop) * cost_rate(CFG))
    assert d.decision == "resized"
    assert loss / d.nominal_r_usd == pytest.approx(CFG.drawdown.throttle_multiplier, rel=1e-9)


@st.composite
def fit_cases(draw):
    equity = draw(st.floats(min_value=100.0, max_value=1e7))
    side = draw(st.sampled_from(list(Side)))
    entry = draw(st.floats(min_value=1e-3, max_value=1e5))
    notional = draw(st.floats(min_value=0.0, max_value=3.0)) * equity
    cfg = gov(
        portfolio={
            "max_open_positions": draw(st.integers(min_value=1, max_value=6)),
            "max_gross_exposure_pct": 150.0,
            "max_net_exposure_pct": draw(st.sampled_from([50.0, 100.0, 150.0])),
            "max_symbol_exposure_pct": draw(st.sampled_from([20.0, 50.0, 100.0])),
        }
    )
    d = make_decision(make_plan(side, entry), qty=notional / entry, nominal_r_usd=equity / 200)
    return d, draw(books(equity)), cfg, draw(st.sampled_from([0.0, 10.0]))


@settings(max_examples=800, deadline=None)
@given(case=fit_cases())
def test_fit_never_enlarges_a_decision_nor_breaches_exposure_limits(case) -> None:
    """For any sized decision and book the fitted entry is no larger and keeps gross, per-symbol and net exposure within limits."""
    d, bk, cfg, min_notional = case
    out = fit(d, bk, cfg, min_notional)
    if not out.approved:
        assert out.qty == 0.0 and out.decision.startswith("vetoed_")
        return
    pc = cfg.portfolio
    assert out.qty <= d.qty * (1 + 1e-12) and out.risk_usd <= d.risk_usd * (1 + 1e-12)
    want = out.qty * d.plan.entry
    tol = 1e-9 * bk.equity_usd
    assert bk.positions < pc.max_open_positions and not bk.symbol_busy
    assert bk.gross_usd + want <= pc.max_gross_exposure_pct / 100 * bk.equity_usd + tol
    assert bk.symbol_usd + want <= pc.max_symbol_exposure_pct / 100 * bk.equity_usd + tol
    net_after = bk.net_usd + d.plan.side.sign * want
    assert abs(net_after) <= max(pc.max_net_exposure_pct / 100 * bk.equity_usd, abs(bk.net_usd)) + tol
