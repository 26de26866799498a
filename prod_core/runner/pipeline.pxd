# Cython declarations of the compiled build (prod_core/compiled.py): the pipeline as an extension type,
# its hot fields at fixed offsets and its broker typed, so ``self.broker.positions`` is two loads.
# Pure Python ignores this file. Other attributes (and tests' patches) live in the instance __dict__.

from prod_core.execution.paper cimport PaperBroker

cdef class Pipeline:
    cdef dict __dict__
    cdef public PaperBroker broker
    cdef public object run_id, account, on_storage_error, _journaled_key, _close_info, instruments
    cdef public object storage, live, notify, state, feed_name, clock_mode, wall_clock, _stage
    cdef public object portfolio, gov, detector, kinds, overlay_lock, overlay_safe, _firm_cap, _auto_kill_at
    cdef public object _outcomes, _enabled_now, _anomaly_pending, _next_day_ms, _corr_ts, live_from_ms, _last_equity_ts
    cdef public dict last_ts, _slots, _prev_close, _sym_index, _can_short
    cdef public bint immediate, storage_ok, _gov_dirty, _bar_days, feed_ok, trade_events, _account_dirty, _corr_on
    cdef public long long equity_every, timing_every, _timing_countdown, _equity_tick, plans_seen, fills_seen
