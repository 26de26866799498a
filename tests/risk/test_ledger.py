"""Tests for the account's R ledger and governance locks (prod_core.risk.ledger)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prod_core.risk import GovernanceState, ladder_step, mark_open_r, on_entry_filled, on_trade_closed
from prod_core.risk.ledger import LIMITS_OK, day_of, roll_day
from prod_core.testing.builders import gov

CFG = gov()  # daily loss 3R, 30 trades, 6 losses in a row; throttle -1R, no entries -1.8R


def fresh(day: str = "2024-01-01") -> GovernanceState:
    state = GovernanceState()
    roll_day(state, day)
    return state


def test_day_of_is_the_utc_calendar_day() -> None:
    """Timestamps are bucketed into UTC days."""
    assert day_of(0) == "1970-01-01"
    assert day_of(1_704_153_599.9) == "2024-01-01"
    assert day_of(1_704_153_600) == "2024-01-02"


def test_daily_lock_with_loss_past_limit_engages_max_daily_loss() -> None:
    """Realised + open R of the day at -3R engages the max_daily_loss lock."""
    state = fresh()
    assert on_trade_closed(state, -2.0, 0.0, CFG) is None
    assert mark_open_r(state, -0.9, CFG) is None
    assert mark_open_r(state, -1.0, CFG) == "max_daily_loss"
    assert state.lock_reason == "max_daily_loss"


def test_daily_loss_counts_only_today_realised_r() -> None:
    """Losses booked before the day rolled do not count toward today's limit."""
    state = fresh()
    on_trade_closed(state, -2.5, 0.0, CFG)
    roll_day(state, "2024-01-02")
    assert state.day_r == pytest.approx(0.0)
    assert on_trade_closed(state, -2.5, 0.0, CFG) is None
    assert state.lock_reason == LIMITS_OK


def test_max_trades_lock_engages_on_the_limit_th_entry_of_the_day() -> None:
    """The 30th entry filled in a UTC day engages max_trades."""
    state = fresh()
    reasons = [on_entry_filled(state, CFG) for _ in range(30)]
    assert reasons[:29] == [None] * 29 and reasons[29] == "max_trades"
    assert state.trades_today == 30


def test_consecutive_losses_lock_engages_after_six_losing_trades() -> None:
    """Six closed losing trades in a row engage max_consecutive_losses; a win in between resets the count."""
    state = fresh()
    for _ in range(5):
        assert on_trade_closed(state, -0.1, 0.0, CFG) is None
    assert on_trade_closed(state, 0.05, 0.0, CFG) is None
    assert state.consecutive_losses == 0
    reasons = [on_trade_closed(state, -0.1, 0.0, CFG) for _ in range(6)]
    assert reasons == [None] * 5 + ["max_consecutive_losses"]


def test_first_lock_reason_is_kept_when_another_limit_is_hit() -> None:
    """Once locked, a later limit does not overwrite the reason."""
    state = fresh()
    mark_open_r(state, -3.5, CFG)
    assert [on_entry_filled(state, CFG) for _ in range(30)] == [None] * 30
    assert state.lock_reason == "max_daily_loss"


@pytest.mark.parametrize("reason", ["max_daily_loss", "max_trades", "max_consecutive_losses", "manual"])
def test_roll_day_resets_counters_but_does_not_lift_the_lock(reason: str) -> None:
    """In paper mode a new UTC day resets the counters; only an operator lifts a lock."""
    state = fresh()
    state.lock_reason = reason
    state.trades_today = 12
    on_trade_closed(state, -0.5, 0.0, CFG)
    assert roll_day(state, "2024-01-02") is True
    assert (state.trades_today, state.day_start_closed_r, state.day) == (0, state.closed_r, "2024-01-02")
    assert state.lock_reason == reason
    assert roll_day(state, "2024-01-02") is False


def test_drawdown_ladder_throttles_at_minus_one_and_stops_entries_at_minus_1_8_until_reset() -> None:
    """dd_state <= -1R throttles, <= -1.8R latches the entry stop even after the curve recovers."""
    state = fresh()
    on_trade_closed(state, 2.0, 0.0, CFG)
    assert (state.peak_r, state.dd_state, state.throttled) == (2.0, 0.0, False)
    on_trade_closed(state, -1.0, 0.0, CFG)
    assert state.dd_state == pytest.approx(-1.0) and state.throttled and not state.dd_stopped
    mark_open_r(state, -0.8, CFG)
    assert state.dd_state == pytest.approx(-1.8) and state.dd_stopped
    assert state.max_dd_r == pytest.approx(1.8)
    mark_open_r(state, 0.5, CFG)
    assert state.dd_state == pytest.approx(-0.5) and not state.throttled
    assert state.dd_stopped, "entries resume only after an operator reset"
    assert state.max_dd_r == pytest.approx(1.8)


def test_state_round_trips_through_dict_and_ignores_unknown_keys() -> None:
    """Persisted governance state loads back identically; unknown keys from newer versions are ignored."""
    state = fresh()
    on_trade_closed(state, -0.7, 0.2, CFG)
    state.holds.append("mean_reversion")
    assert GovernanceState.from_dict({**state.to_dict(), "future_field": 1}) == state


ops = st.lists(
    st.one_of(
        st.tuples(st.just("close"), st.floats(min_value=-2.5, max_value=3.0), st.floats(min_value=-2.0, max_value=2.0)),
        st.tuples(st.just("mark"), st.floats(min_value=-3.0, max_value=3.0)),
        st.tuples(st.just("entry")),
        st.tuples(st.just("roll"), st.integers(min_value=1, max_value=3)),
    ),
    max_size=80,
)
small_cfgs = st.builds(
    lambda loss, trades, losses: gov(daily_lock={"max_daily_loss_r": loss, "max_trades": trades, "max_consecutive_losses": losses}),
    st.floats(min_value=0.5, max_value=5.0),
    st.integers(min_value=1, max_value=10),
    st.integers(min_value=1, max_value=6),
)


@settings(max_examples=400, deadline=None)
@given(ops=ops, cfg=small_cfgs)
def test_ledger_invariants_hold_for_any_sequence_of_events(ops, cfg) -> None:
    """closed_r is the sum of trade R, dd_state <= 0 <= max_dd_r, and locks engage with the right reason and stay until an operator lifts them."""
    state = fresh()
    closed: list[float] = []
    day = 1
    for op in ops:
        before = state.lock_reason
        if op[0] == "close":
            closed.append(op[1])
            engaged = on_trade_closed(state, op[1], op[2], cfg)
            if before == LIMITS_OK:
                if state.day_r <= -cfg.daily_lock.max_daily_loss_r:
                    assert engaged == "max_daily_loss"
                elif state.consecutive_losses >= cfg.daily_lock.max_consecutive_losses:
                    assert engaged == "max_consecutive_losses"
                else:
                    assert engaged is None
        elif op[0] == "mark":
            engaged = mark_open_r(state, op[1], cfg)
            if before == LIMITS_OK:
                assert engaged == ("max_daily_loss" if state.day_r <= -cfg.daily_lock.max_daily_loss_r else None)
        elif op[0] == "entry":
            engaged = on_entry_filled(state, cfg)
            if before == LIMITS_OK:
                assert engaged == ("max_trades" if state.trades_today >= cfg.daily_lock.max_trades else None)
        else:
            day += op[1]
            roll_day(state, f"2024-01-{day:02d}")
            engaged = None
            assert state.trades_today == 0 and state.day_r == pytest.approx(state.open_r)
        if before != LIMITS_OK:
            assert engaged is None and state.lock_reason == before, "locks are lifted only by an operator"
        assert state.closed_r == pytest.approx(math.fsum(closed), abs=1e-9)
        assert state.dd_state <= 0.0
        assert state.max_dd_r >= 0.0
        assert state.max_dd_r >= -state.dd_state - 1e-12
        assert state.peak_r >= 0.0 and state.peak_r >= state.pnl_cum_r - 1e-12
        assert state.throttled == (state.dd_state <= cfg.drawdown.throttle_at_r)
        if state.dd_state <= cfg.drawdown.no_entries_at_r:
            assert state.dd_stopped
    ladder_step(state, cfg)
    assert state.dd_state <= 0.0
