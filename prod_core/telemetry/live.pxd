# Cython declarations of the compiled build (prod_core/compiled.py): the live metrics as extension
# types, so the pipeline (which cimports them) bumps its counters and histograms without looking the
# containers up by name. Pure Python ignores this file. As with ``__slots__`` in pure Python, an
# attribute that is not declared here cannot be set.

cimport cython

@cython.locals(lo=Py_ssize_t, hi=Py_ssize_t, mid=Py_ssize_t, b=double)
cdef Py_ssize_t _bucket(tuple bounds, double value)


cdef class StageTimes:
    cdef public tuple stages, bounds_ns
    cdef public list counts, sum_ns, count

    cpdef record(self, Py_ssize_t stage_index, elapsed_ns)


cdef class ValueHistogram:
    cdef public tuple bounds
    cdef public dict counts, sums

    cpdef observe(self, label, double value)


cdef class LiveMetrics:
    cdef public object feeds, symbols, strategies, stages, feed_symbols
    cdef public object feed_health, feed_last_bar_ts, daily_lock_reason, dd_state, max_dd_r, dd_critical_r
    cdef public object regime, equity_usd, pnl_cum_r, open_positions_count
    cdef public object exposure_gross_pct, exposure_net_pct, portfolio_safe_mode, kill_switch_state
    cdef public object runner_last_cycle_ts, runner_up, execution_reject_rate, pending_plans
    cdef public object stage_sla_ms, alert_test, storage_write_failing, storage_retries
    cdef public object anomalies_total, feed_rate_limited, errors_total
    cdef public object funding_usd_total, funding_events_total, strategy_errors_total
    cdef public dict bars_total, plans_total, orders_total, fills_total, order_qty, order_filled_qty
    cdef public StageTimes stage_times
    cdef public ValueHistogram fill_slippage, fill_time
