# Cython declarations of the compiled build (prod_core/compiled.py): the pipeline as an extension type,
# its fields at fixed offsets, its broker typed (``self.broker.positions`` is two loads) and its hot
# methods callable from C (``cpdef``: a subclass's or an instance's override is still called).
# Pure Python ignores this file. Attributes not declared here (tests' patches) live in the instance
# __dict__; every attribute the pipeline sets itself is declared, so the __dict__ stays empty and
# the ``cpdef`` methods' override check stays on its fast path.

from prod_core.domain.types cimport Bar as CBar
from prod_core.execution.paper cimport PaperBroker
from prod_core.risk.ledger cimport GovernanceState as CState
from prod_core.telemetry.live cimport LiveMetrics as CLive
from prod_core.feeds.hygiene cimport is_clean

cdef class Pipeline:
    cdef dict __dict__
    cdef public PaperBroker broker
    cdef public object run_id, account, on_storage_error, _journaled_key, _close_info, instruments
    cdef public CState state
    cdef public CLive live
    cdef public object storage, notify, feed_name, clock_mode, wall_clock, _stage
    cdef public object portfolio, gov, detector, kinds, overlay_lock, overlay_safe, _firm_cap, _auto_kill_at
    cdef public object _outcomes, _enabled_now, _anomaly_pending, _next_day_ms, _corr_ts, live_from_ms, _last_equity_ts
    cdef public object _anomaly_burst, _anomaly_logged_at, _enabled, _enabled_safe, _rets, _strategy_logged
    cdef public object _fill_bodies, _rejects_in_window
    cdef public dict last_ts, _slots, _prev_close, _sym_index, _can_short
    cdef public bint immediate, storage_ok, _gov_dirty, _bar_days, feed_ok, trade_events, _account_dirty, _corr_on
    cdef public long long equity_every, timing_every, _timing_countdown, _equity_tick, plans_seen, fills_seen

    cpdef on_bar(self, CBar bar)
    cpdef _plan(self, name, CBar bar, entry, regime)
    cpdef _handle_plan(self, plan, timed)
    cpdef _mark(self)
    cpdef flush_marks(self)
    cpdef _ladder_events(self, before)
    cpdef tuple _transition_key(self)
    cpdef snapshot(self, state=*, cash_usd=*)
    cpdef _commit(self, write)
    cpdef mark_journaled(self)
    cpdef _refresh_account(self)
    cpdef _snapshot_equity(self, ts_ms)
    cpdef _new_bar_day(self, ts_ms)
    cpdef on_order(self, order)
    cpdef _outcome(self, rejected)
    cpdef _fill_seen(self, fill)
    cpdef _bodies(self)
    cpdef _opened_body(self, state, position)
    cpdef _changed_body(self, state)
    cpdef _commit_fill(self, write, saved)

cpdef tuple _save_state(CState state)
cpdef _restore_state(CState state, tuple saved)
