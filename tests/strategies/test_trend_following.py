"""Tests for the trend-following strategy (prod_core.strategies.trend_following)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prod_core.domain import Position, Regime, Side
from prod_core.strategies import TrendFollowing
from prod_core.testing.builders import make_bar, make_features, strategy_exits, strategy_plan

UP = dict(regime=Regime.TREND_UP, atr=1.0, ema_fast=100.0, ema_slow=98.0)
DOWN = dict(regime=Regime.TREND_DOWN, atr=1.0, ema_fast=100.0, ema_slow=102.0)
CROSS_UP = make_bar(open=99.5, close=100.5, high=101.0, low=99.0)
CROSS_DOWN = make_bar(open=100.5, close=99.5, high=101.0, low=99.0)


def propose(f, bar, can_short: bool):
    return strategy_plan(TrendFollowing, "trend_following", f, bar, can_short)


def should_exit(f, position) -> bool:
    return strategy_exits(TrendFollowing, f, position)


def test_trend_up_with_close_crossing_above_fast_ema_proposes_buy_with_stop_below_and_target_above() -> None:
    """In an up-trend a bar crossing above the fast EMA proposes a buy at the close, stop 2 ATR below, target 4 ATR above."""
    plan = propose(make_features(**UP), CROSS_UP, can_short=False)
    assert plan is not None
    assert (plan.side, plan.entry, plan.stop, plan.target) == (Side.BUY, 100.5, 98.5, 104.5)
    assert plan.strategy == "trend_following" and plan.regime is Regime.TREND_UP


def test_trend_down_on_perp_proposes_sell_with_stop_above_and_target_below() -> None:
    """In a down-trend on a shortable instrument a bar crossing below the fast EMA proposes a sell."""
    plan = propose(make_features(**DOWN), CROSS_DOWN, can_short=True)
    assert plan is not None
    assert (plan.side, plan.entry, plan.stop, plan.target) == (Side.SELL, 99.5, 101.5, 95.5)


def test_trend_down_on_spot_never_proposes_a_short() -> None:
    """Spot instruments are long-only: a down-trend signal proposes nothing."""
    assert propose(make_features(**DOWN), CROSS_DOWN, can_short=False) is None


@pytest.mark.parametrize("regime", [Regime.WARMUP, Regime.CALM, Regime.VOLATILE, Regime.TREND_DOWN])
def test_buy_signal_outside_trend_up_proposes_nothing(regime: Regime) -> None:
    """The buy setup only counts in TREND_UP."""
    assert propose(make_features(**{**UP, "regime": regime}), CROSS_UP, can_short=True) is None


def test_trend_up_without_a_cross_proposes_nothing() -> None:
    """A bar that stays above the fast EMA (no resumption cross) is not an entry."""
    assert propose(make_features(**UP), make_bar(open=100.2, close=100.8), can_short=True) is None


def test_should_exit_when_emas_cross_against_the_position() -> None:
    """A long exits when the fast EMA falls below the slow one, a short when it rises above."""

    def pos(side: Side) -> Position:
        return Position("p", "p", "trend_following", "BTC/USDT", side, 1.0, 100.0, 98.0, 104.0, 0, 50.0, 0.1, 100.0)

    assert should_exit(make_features(ema_fast=99.0, ema_slow=100.0), pos(Side.BUY))
    assert not should_exit(make_features(ema_fast=101.0, ema_slow=100.0), pos(Side.BUY))
    assert should_exit(make_features(ema_fast=101.0, ema_slow=100.0), pos(Side.SELL))
    assert not should_exit(make_features(ema_fast=99.0, ema_slow=100.0), pos(Side.SELL))


@pytest.mark.parametrize("atr", [60.0, 1e-300])
def test_trend_up_with_degenerate_atr_proposes_nothing_instead_of_raising(atr: float) -> None:
    """An ATR so large the stop would be <= 0, or so small the stop rounds to the entry, gives no plan (not an exception)."""
    assert propose(make_features(**{**UP, "atr": atr}), CROSS_UP, can_short=True) is None


prices = st.floats(min_value=1e-6, max_value=1e7, allow_nan=False, allow_infinity=False)
atr_fracs = st.one_of(st.floats(min_value=0.0, max_value=1.0), st.sampled_from([0.0, 1e-300, 1e-17, 0.25, 0.5, 1.0]))


@settings(max_examples=500, deadline=None)
@given(
    regime=st.sampled_from(list(Regime)),
    atr_frac=atr_fracs,
    open_=prices,
    move=st.floats(min_value=-0.5, max_value=0.5),
    fast_at=st.floats(min_value=-0.2, max_value=1.2),
    slow_off=st.floats(min_value=-0.2, max_value=0.2),
    can_short=st.booleans(),
)
def test_trend_following_never_raises_and_plans_are_well_formed(
    regime: Regime, atr_frac: float, open_: float, move: float, fast_at: float, slow_off: float, can_short: bool
) -> None:
    """For any features and bar a proposal is None or a trend-regime plan with stop/target on the right sides, never a spot short."""
    close = open_ * (1 + move)
    fast = open_ + fast_at * (close - open_)  # mostly between open and close: the entry setup
    f = make_features(regime=regime, atr=atr_frac * close, ema_fast=fast, ema_slow=fast * (1 + slow_off))
    plan = propose(f, make_bar(open=open_, close=close), can_short)
    if plan is None:
        return
    assert plan.regime is regime and regime in (Regime.TREND_UP, Regime.TREND_DOWN)
    assert plan.side is (Side.BUY if regime is Regime.TREND_UP else Side.SELL)
    assert can_short or plan.side is Side.BUY
    if plan.side is Side.BUY:
        assert 0 < plan.stop < plan.entry < plan.target
    else:
        assert 0 < plan.target < plan.entry < plan.stop
