"""Tests for R sizing and the hard pre-trade gates (prod_core.risk.sizing)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prod_core.domain import Side
from prod_core.risk import RiskSnapshot, cost_rate, evaluate
from prod_core.testing.builders import gov, make_plan

CFG = gov()
RATE = (7.5 + 2.0) / 10_000  # default taker fee + slippage


def loss_at_stop(decision) -> float:
    """USD lost if the plan fills at its entry and exits at its stop, with entry and exit costs."""
    plan = decision.plan
    rate = cost_rate(CFG)
    return decision.qty * (plan.risk_per_unit + (plan.entry + plan.stop) * rate)


def test_cost_rate_is_taker_fee_plus_slippage_per_fill() -> None:
    """One market fill costs taker_fee_bps + slippage_bps of notional."""
    assert cost_rate(CFG) == pytest.approx(RATE)
    assert cost_rate(gov(execution={"taker_fee_bps": 10, "slippage_bps": 0})) == pytest.approx(0.001)


def test_one_r_is_risk_per_trade_pct_of_equity_and_size_spends_it_at_the_stop() -> None:
    """At 10,000 USD and 0.5% 1R is 50 USD; a 100 -> 98 buy sizes 50 / (2 + 198 * rate) units."""
    d = evaluate(make_plan(Side.BUY, 100.0, 98.0, 104.0), RiskSnapshot(equity_usd=10_000.0), CFG)
    assert d.decision == "approved" and d.nominal_r_usd == pytest.approx(50.0)
    assert d.qty == pytest.approx(50.0 / (2.0 + 198.0 * RATE))
    assert d.risk_usd == pytest.approx(50.0)
    assert loss_at_stop(d) == pytest.approx(50.0)


def test_sell_plan_is_sized_on_the_distance_to_a_stop_above() -> None:
    """A 100 -> 103 short risks 1R over 3 USD per unit plus costs."""
    d = evaluate(make_plan(Side.SELL, 100.0, 103.0, 94.0), RiskSnapshot(equity_usd=20_000.0), CFG)
    assert d.nominal_r_usd == pytest.approx(100.0)
    assert d.qty == pytest.approx(100.0 / (3.0 + 203.0 * RATE))


def test_larger_risk_pct_scales_size_linearly() -> None:
    """Doubling risk_per_trade_pct doubles 1R and the size."""
    plan, snap = make_plan(), RiskSnapshot(equity_usd=10_000.0)
    base = evaluate(plan, snap, CFG)
    double = evaluate(plan, snap, gov(risk__risk_per_trade_pct=1.0))
    assert double.qty == pytest.approx(2 * base.qty)
    assert double.nominal_r_usd == pytest.approx(100.0)


@pytest.mark.parametrize(
    ("dd_state", "safe_mode", "factor"),
    [(-0.99, False, 1.0), (-1.0, False, 0.5), (-1.5, False, 0.5), (0.0, True, 0.5), (-1.2, True, 0.25)],
)
def test_throttle_and_safe_mode_multiply_the_budget_and_mark_the_plan_resized(
    dd_state: float, safe_mode: bool, factor: float
) -> None:
    """dd_state <= throttle_at_r halves the budget, safe mode halves it again; 1R itself stays nominal."""
    d = evaluate(make_plan(), RiskSnapshot(equity_usd=10_000.0, dd_state=dd_state, safe_mode=safe_mode), CFG)
    assert d.nominal_r_usd == pytest.approx(50.0)
    assert d.risk_usd == pytest.approx(50.0 * factor)
    assert d.decision == ("approved" if factor == 1.0 else "resized")


def test_max_trade_risk_below_one_r_caps_the_budget_and_marks_the_plan_resized() -> None:
    """max_trade_risk_r = 0.5 caps a plan's risk at half of 1R."""
    d = evaluate(make_plan(), RiskSnapshot(equity_usd=10_000.0), gov(risk__max_trade_risk_r=0.5))
    assert d.risk_usd == pytest.approx(25.0)
    assert d.decision == "resized"


@pytest.mark.parametrize(
    ("snap", "decision", "detail"),
    [
        (RiskSnapshot(10_000.0, kill_switch=True, lock_reason="max_trades"), "vetoed_kill_switch", "kill-switch"),
        (RiskSnapshot(10_000.0, lock_reason="max_daily_loss", dd_stopped=True), "vetoed_daily_lock", "max_daily_loss"),
        (RiskSnapshot(10_000.0, lock_reason="manual"), "vetoed_daily_lock", "manual"),
        (RiskSnapshot(10_000.0, dd_state=-1.8), "vetoed_drawdown", "dd_state=-1.80R"),
        (RiskSnapshot(10_000.0, dd_state=-0.2, dd_stopped=True), "vetoed_drawdown", "drawdown stop"),
        (RiskSnapshot(10_000.0, feed_ok=False, holds=frozenset({"trend_following"})), "vetoed_feed_degraded", "feed"),
        (RiskSnapshot(10_000.0, holds=frozenset({"trend_following"})), "vetoed_strategy_hold", "on hold"),
        (RiskSnapshot(0.0), "vetoed_no_equity", "equity"),
    ],
)
def test_gates_veto_with_reason_in_precedence_order(snap: RiskSnapshot, decision: str, detail: str) -> None:
    """Kill-switch, daily lock, drawdown stop, stale feed, strategy hold and no equity veto with qty 0 and a reason."""
    d = evaluate(make_plan(strategy="trend_following"), snap, CFG)
    assert d.decision == decision and not d.approved
    assert d.qty == 0.0 and d.risk_usd == 0.0
    assert detail in d.reason


def test_hold_on_another_strategy_does_not_veto() -> None:
    """A hold only blocks the strategy it names."""
    d = evaluate(make_plan(strategy="trend_following"), RiskSnapshot(10_000.0, holds=frozenset({"mean_reversion"})), CFG)
    assert d.approved


def test_stop_closer_than_min_distance_is_vetoed_as_too_tight() -> None:
    """A stop 0.01% from entry (below min_stop_distance_pct 0.05%) is a noise stop."""
    d = evaluate(make_plan(Side.BUY, 100.0, 99.99, 101.0), RiskSnapshot(10_000.0), CFG)
    assert d.decision == "vetoed_stop_too_tight"


plans = st.builds(
    lambda side, entry, dist, tgt: make_plan(side, entry, entry * (1 - side.sign * dist), entry * (1 + side.sign * tgt)),
    st.sampled_from(list(Side)),
    st.floats(min_value=1e-4, max_value=1e6),
    st.floats(min_value=1e-5, max_value=0.5),
    st.floats(min_value=1e-4, max_value=0.5),
)
snapshots = st.builds(
    RiskSnapshot,
    # none, or a cent and up: at subnormal scale (equity ~1e-309 USD) a float keeps too few digits for the
    # 1e-9 relative bounds below (Hypothesis found 2.2e-309: loss/nominal = 1 - 1.04e-9)
    equity_usd=st.one_of(st.just(0.0), st.floats(min_value=0.01, max_value=1e8)),
    lock_reason=st.sampled_from(["limits_ok"] * 6 + ["max_daily_loss", "max_trades", "max_consecutive_losses", "manual"]),
    kill_switch=st.sampled_from([False, False, False, False, True]),
    dd_state=st.floats(min_value=-3.0, max_value=0.0),
    dd_stopped=st.sampled_from([False, False, False, True]),
    safe_mode=st.booleans(),
    holds=st.sampled_from([frozenset(), frozenset(), frozenset({"trend_following"}), frozenset({"mean_reversion"})]),
    feed_ok=st.sampled_from([True, True, True, False]),
)
configs = st.builds(
    lambda pct, max_r, taker, slip, thr: gov(
        risk={"risk_per_trade_pct": pct, "max_trade_risk_r": max_r},
        execution={"taker_fee_bps": taker, "slippage_bps": slip},
        drawdown={"throttle_multiplier": thr},
    ),
    st.floats(min_value=0.01, max_value=5.0),
    st.floats(min_value=0.1, max_value=3.0),
    st.floats(min_value=0.0, max_value=100.0),
    st.floats(min_value=0.0, max_value=500.0),
    st.floats(min_value=0.05, max_value=1.0),
)


@settings(max_examples=600, deadline=None)
@given(plan=plans, snap=snapshots, cfg=configs)
def test_sized_plan_never_risks_more_than_its_budget_and_gates_always_veto(plan, snap, cfg) -> None:
    """For any plan, equity and governance state: a stop-out costs <= 1R x multipliers and <= max_trade_risk_r; gated states veto."""
    d = evaluate(plan, snap, cfg)
    nominal = snap.equity_usd * cfg.risk.risk_per_trade_pct / 100
    assert d.nominal_r_usd == pytest.approx(nominal)
    expected_veto = (
        "kill_switch" if snap.kill_switch
        else "daily_lock" if snap.lock_reason != "limits_ok"
        else "drawdown" if snap.dd_stopped or snap.dd_state <= cfg.drawdown.no_entries_at_r
        else "feed_degraded" if not snap.feed_ok
        else "strategy_hold" if plan.strategy in snap.holds
        else "no_equity" if nominal <= 0
        else "stop_too_tight" if plan.risk_per_unit / plan.entry * 100 < cfg.risk.min_stop_distance_pct
        else None
    )
    if expected_veto is not None:
        assert d.decision == f"vetoed_{expected_veto}" and d.qty == 0.0
        return
    multiplier = (cfg.drawdown.throttle_multiplier if snap.dd_state <= cfg.drawdown.throttle_at_r else 1.0) * (
        cfg.portfolio.safe_mode_risk_multiplier if snap.safe_mode else 1.0
    )
    loss = d.qty * (plan.risk_per_unit + (plan.entry + plan.stop) * cost_rate(cfg))
    assert d.approved and d.qty > 0 and math.isfinite(d.qty)
    assert loss == pytest.approx(d.risk_usd, rel=1e-9)
    assert loss <= nominal * multiplier * (1 + 1e-9)
    assert loss <= nominal * cfg.risk.max_trade_risk_r * (1 + 1e-9)
    assert loss == pytest.approx(nominal * min(multiplier, cfg.risk.max_trade_risk_r), rel=1e-9)
    assert d.decision == ("approved" if loss >= nominal * (1 - 1e-9) else "resized")


# ------------------------------------------------------------------ sizing modes
FIXED_QTY = gov(sizing={"mode": "fixed_qty", "qty": {"BTC/USDT": 0.25, "*": 3.0}, "nominal_r_usd": 40.0})
FIXED_NOTIONAL = gov(sizing={"mode": "fixed_notional", "notional_usd": {"*": 500.0}})


def test_fixed_qty_sizes_the_configured_quantity_per_symbol_and_reports_r_against_nominal() -> None:
    """fixed_qty: the symbol's quantity (or '*'), whatever the stop; 1R is sizing.nominal_r_usd."""
    snap = RiskSnapshot(equity_usd=10_000.0)
    btc = evaluate(make_plan(Side.BUY, 100.0, 0.0, 0.0), snap, FIXED_QTY)
    other = evaluate(make_plan(Side.BUY, 100.0, 99.0, 0.0, symbol="XRP/USDT"), snap, FIXED_QTY)
    assert (btc.decision, btc.qty, btc.nominal_r_usd, btc.risk_usd) == ("approved", 0.25, 40.0, 0.0)
    assert other.qty == 3.0 and other.risk_usd == pytest.approx(3.0 * (1.0 + 199.0 * RATE))


def test_fixed_notional_sizes_notional_over_entry_and_defaults_1r_to_the_risk_pct() -> None:
    """fixed_notional: 500 USD at an entry of 125 is 4 units; without nominal_r_usd 1R is 0.5% of equity."""
    d = evaluate(make_plan(Side.BUY, 125.0, 0.0, 0.0), RiskSnapshot(equity_usd=10_000.0), FIXED_NOTIONAL)
    assert d.qty == pytest.approx(4.0) and d.nominal_r_usd == pytest.approx(50.0)


def test_fixed_size_is_scaled_by_the_drawdown_throttle_and_safe_mode() -> None:
    """Governance multipliers apply to fixed sizes too: throttled and in safe mode, a quarter of the size."""
    d = evaluate(make_plan(Side.BUY, 100.0, 0.0, 0.0), RiskSnapshot(equity_usd=10_000.0, dd_state=-1.2, safe_mode=True),
                 FIXED_QTY)
    assert d.decision == "resized" and d.qty == pytest.approx(0.0625)


def test_fixed_size_with_a_stop_beyond_the_max_trade_risk_is_scaled_down() -> None:
    """A stop that would risk more than max_trade_risk_r * 1R scales the fixed size down to that risk."""
    d = evaluate(make_plan(Side.BUY, 100.0, 50.0, 0.0, symbol="ETH/USDT"), RiskSnapshot(equity_usd=10_000.0), FIXED_QTY)
    assert d.decision == "resized" and d.risk_usd == pytest.approx(40.0)
    assert d.qty == pytest.approx(40.0 / (50.0 + 150.0 * RATE))


def test_fixed_qty_without_a_size_for_the_symbol_is_vetoed_no_size() -> None:
    """No entry for the symbol and no '*': vetoed with the config key to fill in."""
    cfg = gov(sizing={"mode": "fixed_qty", "qty": {"BTC/USDT": 0.25}})
    d = evaluate(make_plan(Side.BUY, 100.0, 0.0, 0.0, symbol="ETH/USDT"), RiskSnapshot(equity_usd=10_000.0), cfg)
    assert d.decision == "vetoed_no_size" and "sizing.qty has no size for ETH/USDT" in d.reason


def test_r_sizing_vetoes_a_plan_without_a_stop_and_says_what_to_do() -> None:
    """R sizing needs a stop: a signal-only plan is vetoed no_stop, naming the fixed modes."""
    d = evaluate(make_plan(Side.BUY, 100.0, 0.0, 0.0), RiskSnapshot(equity_usd=10_000.0), CFG)
    assert d.decision == "vetoed_no_stop" and "fixed_qty" in d.reason


def test_fixed_mode_without_sizes_is_refused_by_the_config() -> None:
    """mode fixed_qty with an empty qty table is a config error that says what to add."""
    with pytest.raises(ValueError, match=r"mode fixed_qty needs `qty: \{SYMBOL: quantity\}`"):
        gov(sizing={"mode": "fixed_qty"})
