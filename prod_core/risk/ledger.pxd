# Cython declarations of the compiled build (prod_core/compiled.py): the governance state as an extension
# type (its fields at fixed offsets for the ledger's functions, the pipeline and the fast lane, which
# cimport it) and the ledger's functions callable from C. Pure Python ignores this file.

cdef class GovernanceState:
    cdef public object closed_r, open_r, peak_r, max_dd_r, dd_epoch, dd_stopped, throttled, day
    cdef public object day_start_closed_r, trades_today, consecutive_losses, lock_reason, kill_switch, holds
    cdef public object config_hash, cash_usd

    cpdef tuple _values(self)
    cpdef _set_values(self, tuple values)

cpdef _engage(GovernanceState state, reason)
cpdef ladder_step(GovernanceState state, cfg)
cpdef mark_open_r(GovernanceState state, open_r, cfg)
cpdef on_entry_filled(GovernanceState state, cfg)
cpdef on_trade_closed(GovernanceState state, trade_r, open_r, cfg)
