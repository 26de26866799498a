"""The firm-level gross cap's reservation (migration 8, ``firm_exposure``) on both backends."""

from __future__ import annotations

import threading

import pytest

from prod_core.storage import LATEST_VERSION, Storage


def test_reservation_passes_under_the_cap_and_writes_this_accounts_row(db_target: str) -> None:
    """other + own + entry <= cap: passed, the row becomes own + entry; over the cap: vetoed, the
    row stays this account's current gross (kept current, never the refused entry)."""
    with Storage(db_target) as st:
        assert st.schema_version == LATEST_VERSION >= 8
        st.set_firm_gross("fund-b", 6000.0, ts=100.0)
        res = st.reserve_firm_gross("fund-a", own_usd=1000.0, add_usd=2500.0, cap_usd=10_000.0, ts=101.0)
        assert res.passed and res.other_usd == 6000.0 and res.total_usd == 9500.0
        assert {r["account"]: r["gross_usd"] for r in st.firm_exposure()} == {"fund-a": 3500.0, "fund-b": 6000.0}
        res = st.reserve_firm_gross("fund-a", own_usd=3500.0, add_usd=600.0, cap_usd=10_000.0, ts=102.0)
        assert not res.passed and res.total_usd == pytest.approx(10_100.0)
        assert {r["account"]: r["gross_usd"] for r in st.firm_exposure()} == {"fund-a": 3500.0, "fund-b": 6000.0}
        # exactly at the cap passes
        assert st.reserve_firm_gross("fund-a", own_usd=3500.0, add_usd=500.0, cap_usd=10_000.0, ts=103.0).passed
        # a fall is recorded too (heartbeat save, clean stop: 0 when flat)
        st.set_firm_gross("fund-a", 0.0, ts=104.0)
        assert st.firm_exposure()[0] == {"account": "fund-a", "gross_usd": 0.0, "updated_at": 104.0}


def test_dead_runners_row_stops_counting_a_cleanly_stopped_ones_counts(db_target: str) -> None:
    """An account whose lease heartbeat is stale (runner dead) is skipped; one with a fresh lease
    counts; one without a lease (clean stop) counts with the gross it recorded at the stop."""
    with Storage(db_target) as st:
        st.acquire_lease("dead", "r-dead", pid=1, host="h", now=0.0, takeover=lambda h: None)
        st.acquire_lease("live", "r-live", pid=2, host="h", now=995.0, takeover=lambda h: None)
        st.set_firm_gross("dead", 5000.0, ts=0.0)
        st.set_firm_gross("live", 3000.0, ts=995.0)
        st.set_firm_gross("stopped", 1000.0, ts=10.0)  # no lease: its runner stopped with positions open
        res = st.reserve_firm_gross("me", own_usd=0.0, add_usd=100.0, cap_usd=10_000.0, ts=1000.0)
        assert res.passed and res.other_usd == 4000.0 and res.skipped == ("dead",)
        # while the dead account's heartbeat was fresh, it counted
        res = st.reserve_firm_gross("me", own_usd=0.0, add_usd=100.0, cap_usd=10_000.0, ts=20.0)
        assert res.other_usd == 9000.0 and res.skipped == ()


@pytest.mark.parametrize("workers", [4])
def test_concurrent_reservations_never_exceed_the_cap(db_target: str, workers: int) -> None:
    """Separate Storage objects (connections) reserve at the same moment, many times: the write
    lock serialises them, so the recorded firm gross never exceeds the cap and the winners are
    exactly those that fit."""
    cap, add = 1000.0, 300.0
    Storage(db_target).close()  # migrate once before the race
    barrier = threading.Barrier(workers)
    results: dict[str, list[bool]] = {}
    errors: list[BaseException] = []

    def worker(account: str) -> None:
        try:
            with Storage(db_target) as st:
                own = 0.0
                got: list[bool] = []
                for i in range(5):
                    barrier.wait(timeout=30)
                    res = st.reserve_firm_gross(account, own_usd=own, add_usd=add, cap_usd=cap, ts=100.0 + i)
                    got.append(res.passed)
                    if res.passed:
                        own += add
                    assert res.total_usd <= cap or not res.passed
                results[account] = got
        except BaseException as exc:  # surfaced below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(f"acc-{n}",)) for n in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    wins = sum(sum(got) for got in results.values())
    assert wins == int(cap // add) == 3  # exactly as many entries as fit: one wins each contested slot
    with Storage(db_target) as st:
        rows = st.firm_exposure()
        assert sum(r["gross_usd"] for r in rows) == pytest.approx(wins * add) and sum(r["gross_usd"] for r in rows) <= cap
