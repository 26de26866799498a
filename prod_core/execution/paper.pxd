# Cython declarations of the compiled build (prod_core/compiled.py): the broker as an extension type,
# its fields at fixed offsets (a read inside its methods is a load, not a dictionary look-up) and its
# hot methods callable from C (``cpdef``: a subclass's or an instance's override is still called).
# Pure Python ignores this file. Attributes not declared here (tests' patches) live in the instance
# __dict__; every attribute the broker sets itself is declared, so the __dict__ stays empty and the
# ``cpdef`` methods' override check stays on its fast path.

from prod_core.domain.types cimport Bar as CBar


cdef class Working:
    cdef public object order, decision, reason, sent_s, book
    cdef public double remaining, filled
    cdef public long long wait, age

    cpdef done(self, status, ts_ms, reject_reason=*)


cdef class PaperBroker:
    cdef dict __dict__
    cdef public object instruments, sink, cash_usd, funding, cfg, _cap, _perp, active, _latency
    cdef public dict positions, pending_entries, pending_exits, last_bar, _liq, _next_funding, _r_parts
    cdef public str _prefix
    cdef public long long _seq
    cdef public double _taker, _maker, _liq_fee, _spread_bps, _impact, _exit_rate
    cdef public bint _ideal

    cpdef account_marks(self)
    cpdef position_exposure_usd(self)
    cpdef exposure_usd(self)
    cpdef symbol_usd(self, symbol)
    cpdef open_r(self, exit_cost=*, exclude=*)
    cpdef str _next_id(self, str kind)
    cpdef submit_entry(self, decision, ts_ms, now_s=*)
    cpdef _cancel_entry(self, symbol, ts_ms)
    cpdef on_bar(self, CBar bar)
    cpdef _market(self, symbol, buying, ref, qty, CBar bar)
    cpdef _take(self, symbol, buying, ref, qty, CBar bar, book=*)
    cpdef _tranche(self, symbol, remaining, CBar bar)
    cpdef _work_entry(self, Working w, CBar bar)
    cpdef _entry_rules(self, inst, side, qty, CBar bar)
    cpdef _reject_entry(self, Working w, reason, ts_ms)
    cpdef _fill_entry(self, Working w, inst, leverage, qty, price, fee, CBar bar, ref)
    cpdef _levels(self, p)
    cpdef _work_exit(self, Working w, CBar bar)
    cpdef _exit_tranche(self, p, Working w, ref, CBar bar)
    cpdef _check_levels(self, p, CBar bar)
    cpdef _close(self, p, price, reason, ts_ms, fee_rate, maker=*, ref=*, order=*)
