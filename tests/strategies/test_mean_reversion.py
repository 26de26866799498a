"""Tests for the mean-reversion strategy (prod_core.strategies.mean_reversion)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prod_core.domain import Position, Regime, Side
from prod_core.strategies import MeanReversion
from prod_core.testing.builders import make_bar, make_features, strategy_exits, strategy_plan



def propose(f, bar, can_short: bool):
    return strategy_plan(MeanReversion, "mean_reversion", f, bar, can_short)


def should_exit(f, position) -> bool:
    return strategy_exits(MeanReversion, f, position)


def calm(close: float, *, mean: float = 100.0, sd: float = 1.0, atr: float = 1.0, regime: Regime = Regime.CALM):
    return make_features(regime=regime, atr=atr, last_close=close, mr_mean=mean, mr_var=sd * sd)


def test_calm_close_two_sigmas_below_mean_proposes_buy_with_stop_below_and_target_above() -> None:
    """In a calm market a close at z <= -2 proposes a buy at the close, stop 1.5 ATR below and target 1.5 ATR above."""
    plan = propose(calm(97.5), make_bar(open=98.0, close=97.5), can_short=False)
    assert plan is not None
    assert (plan.side, plan.entry, plan.stop, plan.target) == (Side.BUY, 97.5, 96.0, 99.0)
    assert plan.strategy == "mean_reversion" and plan.regime is Regime.CALM


def test_calm_close_two_sigmas_above_mean_on_perp_proposes_sell_with_stop_above() -> None:
    """A stretched move up on a shortable instrument proposes a sell with the stop above and the target below."""
    plan = propose(calm(102.5), make_bar(open=102.0, close=102.5), can_short=True)
    assert plan is not None
    assert (plan.side, plan.entry, plan.stop, plan.target) == (Side.SELL, 102.5, 104.0, 101.0)


def test_stretched_move_up_on_spot_never_proposes_a_short() -> None:
    """Spot instruments are long-only."""
    assert propose(calm(102.5), make_bar(open=102.0, close=102.5), can_short=False) is None


@pytest.mark.parametrize("regime", [Regime.WARMUP, Regime.TREND_UP, Regime.TREND_DOWN, Regime.VOLATILE])
def test_stretched_move_outside_calm_proposes_nothing(regime: Regime) -> None:
    """Mean reversion only trades a calm regime."""
    assert propose(calm(97.5, regime=regime), make_bar(open=98.0, close=97.5), can_short=True) is None


def test_small_deviation_proposes_nothing() -> None:
    """|z| below entry_z is not stretched enough."""
    assert propose(calm(99.0), make_bar(open=99.5, close=99.0), can_short=True) is None


@pytest.mark.parametrize("atr", [80.0, 1e-300])
def test_calm_buy_with_degenerate_atr_proposes_nothing_instead_of_raising(atr: float) -> None:
    """An ATR that would put the stop at or below zero, or at the entry, gives no plan (not an exception)."""
    assert propose(calm(97.5, atr=atr), make_bar(open=98.0, close=97.5), can_short=True) is None


def test_should_exit_only_when_the_market_turns_volatile() -> None:
    """An open mean-reversion trade is closed when the regime becomes VOLATILE."""
    pos = Position("p", "p", "mean_reversion", "BTC/USDT", Side.BUY, 1.0, 100.0, 98.0, 102.0, 0, 50.0, 0.1, 100.0)
    assert should_exit(make_features(regime=Regime.VOLATILE), pos)
    for regime in (Regime.CALM, Regime.TREND_UP, Regime.TREND_DOWN):
        assert not should_exit(make_features(regime=regime), pos)


@settings(max_examples=500, deadline=None)
@given(
    regime=st.sampled_from(list(Regime)),
    close=st.floats(min_value=1e-6, max_value=1e7),
    z=st.floats(min_value=-6.0, max_value=6.0),
    sd_frac=st.floats(min_value=1e-9, max_value=0.3),
    atr_frac=st.one_of(st.floats(min_value=0.0, max_value=1.0), st.sampled_from([0.0, 1e-300, 1e-17, 0.5, 2 / 3, 1.0])),
    can_short=st.booleans(),
)
def test_mean_reversion_never_raises_and_plans_are_well_formed(
    regime: Regime, close: float, z: float, sd_frac: float, atr_frac: float, can_short: bool
) -> None:
    """For any features a proposal is None or a calm-regime plan fading the move, stop/target on the right sides, never a spot short."""
    sd = sd_frac * close
    f = make_features(regime=regime, atr=atr_frac * close, last_close=close, mr_mean=close - z * sd, mr_var=sd * sd)
    plan = propose(f, make_bar(open=close, close=close), can_short)
    if plan is None:
        return
    assert regime is Regime.CALM and plan.regime is Regime.CALM
    assert plan.side is (Side.BUY if f.zscore < 0 else Side.SELL)
    assert can_short or plan.side is Side.BUY
    if plan.side is Side.BUY:
        assert 0 < plan.stop < plan.entry < plan.target
    else:
        assert 0 < plan.target < plan.entry < plan.stop
