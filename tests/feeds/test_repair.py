"""BarRepair: rejected or missing closed bars are re-requested, held bars released in order, counted once."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prod_core.feeds.repair import GIVEN_UP, REPAIRED, BarRepair, RepairPolicy

TF = 60_000
T0 = 1_740_009_600_000
SYM = "BTC/USDT"


def good(i: int, base: float = 100.0) -> list:
    """A clean row for slot ``i``."""
    p = base + i
    return [T0 + i * TF, p, p + 2.0, p - 2.0, p + 1.0, 5.0 + i]


CORRUPT = {
    "nan": lambda r: [r[0], math.nan, *r[2:]],
    "non_positive_price": lambda r: [r[0], r[1], r[2], -1.0, r[4], r[5]],
    "negative_volume": lambda r: [*r[:5], -1.0],
    "high_below_low": lambda r: [r[0], r[1], r[3] - 1.0, r[3], r[4], r[5]],
    "open_close_outside_range": lambda r: [r[0], r[2] + 1.0, *r[2:]],
}


def ts_of(bars) -> list[int]:
    return [b.ts_ms for b in bars]


def slots(bars) -> list[int]:
    return [(b.ts_ms - T0) // TF for b in bars]


def test_clean_rows_pass_straight_through_in_order() -> None:
    """With nothing malformed every bar is released at once and nothing is wanted."""
    rep = BarRepair("1m")
    out = rep.offer(SYM, [good(i) for i in range(5)], now_s=0.0)
    assert slots(out) == [0, 1, 2, 3, 4]
    assert out[2].close == good(2)[4]
    assert rep.wanted(SYM) is None and rep.rejected == {} and rep.cursor_ms(SYM) == T0 + 4 * TF


def test_nan_row_holds_later_bars_until_the_rerequest_fills_it() -> None:
    """A NaN bar is counted once, later bars wait, and the re-fetched good bar releases them in order."""
    rep = BarRepair(TF)
    rows = [good(0), CORRUPT["nan"](good(1)), good(2), good(3)]
    assert slots(rep.offer(SYM, rows, now_s=0.0)) == [0]
    assert rep.held(SYM) == 2
    assert rep.wanted(SYM) == (T0 + TF, T0 + 2 * TF)
    assert not rep.due(SYM, 0.5) and rep.due(SYM, 1.0)
    # the exchange sends the same bad row once more: not counted again
    assert rep.offer(SYM, [CORRUPT["nan"](good(1)), good(2)], now_s=1.0, repair=True) == []
    assert rep.rejected == {"nan": 1}
    out = rep.offer(SYM, [good(1), good(2)], now_s=3.0, repair=True)
    assert slots(out) == [1, 2, 3]
    assert rep.repaired == 1 and rep.given_up == 0 and rep.wanted(SYM) is None
    assert [(e.outcome, e.cause, e.attempts) for e in rep.pop_events()] == [(REPAIRED, "nan", 2)]


def test_gap_is_rerequested_like_a_rejected_bar() -> None:
    """Missing timestamps open holes (counted as gaps) and the window covers them."""
    rep = BarRepair("1m")
    assert slots(rep.offer(SYM, [good(0), good(3), good(4)], now_s=0.0)) == [0]
    assert rep.gaps == 2 and rep.rejected == {}
    assert rep.wanted(SYM) == (T0 + TF, T0 + 3 * TF)
    out = rep.offer(SYM, [good(1), good(2)], now_s=1.0, repair=True)
    assert slots(out) == [1, 2, 3, 4] and rep.repaired == 2


def test_gap_rerequest_returning_a_bad_row_counts_its_kind_once() -> None:
    """A gap slot re-fetched malformed counts that kind once however many times it comes back."""
    rep = BarRepair("1m", RepairPolicy(max_attempts=5))
    rep.offer(SYM, [good(0), good(2)], now_s=0.0)
    for t in (1.0, 3.0):
        rep.offer(SYM, [CORRUPT["negative_volume"](good(1))], now_s=t, repair=True)
    assert rep.rejected == {"negative_volume": 1} and rep.gaps == 1
    assert slots(rep.offer(SYM, [good(1)], now_s=7.0, repair=True)) == [1, 2]


def test_hole_is_given_up_after_the_attempt_budget_and_held_bars_are_released() -> None:
    """An exchange that never fixes the bar costs max_attempts re-requests, then the feed moves on."""
    rep = BarRepair("1m", RepairPolicy(max_attempts=3))
    bad = CORRUPT["high_below_low"](good(1))
    rep.offer(SYM, [good(0), bad, good(2), good(3)], now_s=0.0)
    now = 0.0
    sent = []
    while rep.wanted(SYM) is not None:
        now = rep.next_attempt_s(SYM)
        sent.append(now)
        out = rep.offer(SYM, [bad, good(2)], now_s=now, repair=True)
    assert sent == [1.0, 3.0, 7.0]  # backoff 1 s, 2 s, 4 s: the exchange is not hammered
    assert slots(out) == [2, 3]
    assert rep.given_up == 1 and rep.repaired == 0 and rep.rejected == {"high_below_low": 1}
    assert [(e.outcome, e.cause, e.attempts) for e in rep.pop_events()] == [(GIVEN_UP, "high_below_low", 3)]
    # the given-up bar arriving later is an out-of-order row, never released behind the feed's back
    assert rep.offer(SYM, [good(1)], now_s=8.0) == []
    assert rep.rejected["out_of_order"] == 1


def test_held_bars_are_released_after_max_hold_even_without_rerequests() -> None:
    """A caller that never re-requests still gets its bars after max_hold_s: the feed never stalls."""
    rep = BarRepair("1m", RepairPolicy(max_hold_s=30.0))
    rep.offer(SYM, [good(0), CORRUPT["nan"](good(1)), good(2)], now_s=0.0)
    assert rep.expire(SYM, 29.0) == []
    assert slots(rep.expire(SYM, 30.0)) == [2]
    assert rep.given_up == 1


def test_duplicate_and_out_of_order_rows_are_counted_and_dropped() -> None:
    """Rows at or before the newest timestamp seen that fill no hole are anomalies, never released twice."""
    rep = BarRepair("1m")
    out = rep.offer(SYM, [good(0), good(1), good(2), good(2), good(0), good(3)], now_s=0.0)
    assert slots(out) == [0, 1, 2, 3]
    assert rep.rejected == {"duplicate": 1, "out_of_order": 1}


def test_rerequest_overlap_is_ignored_silently() -> None:
    """Rows of a re-requested window that fill no hole are neither counted nor released again."""
    rep = BarRepair("1m")
    rep.offer(SYM, [good(0), good(1), CORRUPT["nan"](good(2)), good(3)], now_s=0.0)
    out = rep.offer(SYM, [good(i) for i in range(4)], now_s=1.0, repair=True, window=(T0, T0 + 4 * TF))
    assert slots(out) == [2, 3]
    assert rep.rejected == {"nan": 1}


def test_row_without_a_usable_timestamp_is_counted_and_its_slot_found_as_a_gap() -> None:
    """A row whose time is None or NaN is counted as nan; the next row reveals the missing slot."""
    rep = BarRepair("1m")
    rep.offer(SYM, [good(0), [None, 1, 1, 1, 1, 1], [math.nan, 1, 1, 1, 1, 1], good(2)], now_s=0.0)
    assert rep.rejected == {"nan": 2} and rep.gaps == 1
    assert rep.wanted(SYM) == (T0 + TF, T0 + 2 * TF)


def test_outage_larger_than_max_gap_bars_is_given_up_at_once() -> None:
    """A long exchange outage is not re-requested bar by bar: released as is, one event."""
    rep = BarRepair("1m", RepairPolicy(max_gap_bars=10))
    out = rep.offer(SYM, [good(0), good(50)], now_s=0.0)
    assert slots(out) == [0, 50] and rep.wanted(SYM) is None
    assert rep.gaps == 49 and rep.given_up == 49
    (event,) = rep.pop_events()
    assert (event.outcome, event.cause, event.bars, event.ts_ms) == (GIVEN_UP, "gap", 49, T0 + TF)


def test_symbols_are_repaired_independently() -> None:
    """A hole in one symbol holds back only that symbol's bars."""
    rep = BarRepair("1m")
    rep.offer("A", [good(0), CORRUPT["nan"](good(1)), good(2)], now_s=0.0)
    assert slots(rep.offer("B", [good(0), good(1), good(2)], now_s=0.0)) == [0, 1, 2]
    assert rep.wanted("B") is None and rep.held("A") == 1
    assert rep.due_symbols(0.5) == [] and rep.due_symbols(1.0) == ["A"]


def test_window_is_capped_and_repairs_the_first_holes_first() -> None:
    """The re-request window never exceeds max_window_bars, starting at the first hole."""
    rep = BarRepair("1m", RepairPolicy(max_window_bars=2))
    rep.offer(SYM, [good(0), good(4)], now_s=0.0)
    assert rep.wanted(SYM) == (T0 + TF, T0 + 3 * TF)
    assert slots(rep.offer(SYM, [good(1), good(2)], now_s=1.0, repair=True)) == [1, 2]
    assert rep.wanted(SYM) == (T0 + 3 * TF, T0 + 4 * TF)


def test_give_up_releases_everything_held() -> None:
    """give_up (e.g. on stop) abandons the holes and returns the held bars in order."""
    rep = BarRepair("1m")
    rep.offer(SYM, [good(0), good(2), CORRUPT["nan"](good(3)), good(4)], now_s=0.0)
    assert slots(rep.give_up(SYM)) == [2, 4]
    assert rep.given_up == 2 and rep.wanted(SYM) is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_attempts": 0}, r"max_attempts must be >= 1, was 0"),
        ({"retry_base_s": 0.0}, r"retry_base_s > 0"),
        ({"retry_factor": 0.5}, r"retry_factor >= 1"),
        ({"max_hold_s": 0.0}, r"max_hold_s must be > 0"),
        ({"max_window_bars": 0}, r"max_window_bars >= 1"),
    ],
)
def test_invalid_policy_is_refused_with_the_value(kwargs: dict, message: str) -> None:
    """A bad policy fails at construction naming the field and the value."""
    with pytest.raises(ValueError, match=message):
        RepairPolicy(**kwargs)


def test_five_percent_corrupted_rows_for_two_minutes_leave_no_hole() -> None:
    """The incident: 1 s bars, two symbols, 5% of rows corrupted per response; the re-fetch heals every one."""
    rng = random.Random(7)
    rep = BarRepair("1s")
    tf = 1000
    kinds = list(CORRUPT)

    def row(sym_base: float, ts: int) -> list:
        i = ts // tf
        return [ts, sym_base + i % 7, sym_base + 9, sym_base - 1, sym_base + 3, 1.0]

    def response(sym_base: float, tss) -> list[list]:
        return [CORRUPT[rng.choice(kinds)](row(sym_base, ts)) if rng.random() < 0.05 else row(sym_base, ts)
                for ts in tss]

    released: dict[str, list[int]] = {"A": [], "B": []}
    bases = {"A": 100.0, "B": 50.0}
    for second in range(1, 121):
        now = float(second)
        for sym, base in bases.items():
            released[sym] += ts_of(rep.offer(sym, response(base, [(second - 1) * tf]), now_s=now))
        for sym in rep.due_symbols(now):
            since, until = rep.wanted(sym)
            rows = response(bases[sym], range(since, until, tf))
            released[sym] += ts_of(rep.offer(sym, rows, now_s=now, repair=True, window=(since, until)))
    for sym in bases:  # what is still held at the end is only behind the last second's holes
        assert released[sym] == list(range(0, released[sym][-1] + tf, tf))
        assert released[sym][-1] >= 115 * tf
    assert sum(rep.rejected.values()) > 5 and rep.given_up == 0


# --------------------------------------------------------------- property
FATES = ("good", "missing", *CORRUPT)


@st.composite
def sessions(draw, max_retries: int = 2):
    """A clean series, what the exchange does to each bar, how often it answers a re-request badly, the paging."""
    n = draw(st.integers(min_value=1, max_value=30))
    fates = [draw(st.sampled_from(FATES)) if 0 < i < n - 1 else "good" for i in range(n)]
    retries = [draw(st.integers(min_value=0, max_value=max_retries)) for _ in range(n)]
    extras = [draw(st.sampled_from(("none", "none", "duplicate", "out_of_order"))) for _ in range(n)]
    cuts = sorted(set(draw(st.lists(st.integers(min_value=1, max_value=max(1, n)), max_size=6))))
    return n, fates, retries, extras, cuts


def _play(session, rep: BarRepair) -> tuple[list, dict[str, int]]:
    """Feed the session through ``rep`` like a polling feed; return the released bars and the injected anomalies."""
    n, fates, retries, extras, cuts = session
    stream: list[list] = []
    expected: dict[str, int] = {}
    for i in range(n):
        fate = fates[i]
        if fate in CORRUPT:
            stream.append(CORRUPT[fate](good(i)))
            expected[fate] = expected.get(fate, 0) + 1
        elif fate == "good":
            stream.append(good(i))
            # an exchange glitch after a good row: the same row again, or an older good row
            if extras[i] == "duplicate":
                stream.append(good(i))
                expected["duplicate"] = expected.get("duplicate", 0) + 1
            elif extras[i] == "out_of_order" and i >= 1 and fates[i - 1] == "good":
                stream.append(good(i - 1))
                expected["out_of_order"] = expected.get("out_of_order", 0) + 1
    asked = [0] * n

    def exchange(window: tuple[int, int]) -> list[list]:
        rows = []
        for ts in range(window[0], window[1], TF):
            i = (ts - T0) // TF
            if fates[i] == "good":
                rows.append(good(i))
                continue
            asked[i] += 1
            if asked[i] > retries[i]:
                rows.append(good(i))
            elif fates[i] in CORRUPT:
                rows.append(CORRUPT[fates[i]](good(i)))
        return rows

    released = []
    now = 0.0
    pages = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)]) if a < b]
    for page in pages:
        released += rep.offer(SYM, page, now_s=now)
        while (at := rep.next_attempt_s(SYM)) is not None:
            now = max(now, at)
            released += rep.offer(SYM, exchange(rep.wanted(SYM)), now_s=now, repair=True)
        now += 60.0
    return released, expected


@settings(max_examples=300, deadline=None)
@given(sessions())
def test_released_series_equals_clean_series_and_each_bad_bar_counts_once(session) -> None:
    """If the exchange returns every good bar within the attempt budget, the released series is exactly
    the clean one (no gap, no duplicate, time order) and each injected bad bar is counted once by kind."""
    n, fates, _, _, _ = session
    rep = BarRepair("1m", RepairPolicy(max_attempts=3))
    released, expected = _play(session, rep)
    assert [b.as_tuple()[1:] for b in released] == [tuple(good(i)) for i in range(n)]
    assert rep.rejected == expected
    assert rep.given_up == 0
    assert rep.gaps == fates.count("missing")
    assert rep.repaired == sum(1 for f in fates if f != "good")
    assert rep.held(SYM) == 0


@settings(max_examples=200, deadline=None)
@given(sessions(max_retries=5))
def test_beyond_the_budget_holes_are_given_up_and_the_rest_released_in_order(session) -> None:
    """When the exchange never fixes some bars in time, exactly those are given up; every other bar is
    released once, in time order, and nothing stays held: the feed never stalls."""
    n, fates, retries, _, _ = session
    rep = BarRepair("1m", RepairPolicy(max_attempts=3))
    released, expected = _play(session, rep)
    lost = {i for i in range(n) if fates[i] != "good" and retries[i] >= 3}
    assert [b.as_tuple()[1:] for b in released] == [tuple(good(i)) for i in range(n) if i not in lost]
    assert rep.given_up == len(lost) and rep.repaired == sum(1 for f in fates if f != "good") - len(lost)
    assert rep.rejected == expected and rep.held(SYM) == 0
    given_up = sorted((e.ts_ms - T0) // TF for e in rep.pop_events() if e.outcome == GIVEN_UP)
    assert given_up == sorted(lost)
