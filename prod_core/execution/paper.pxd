# Cython declarations of the compiled build (prod_core/compiled.py): the broker as an extension type,
# its hot fields at fixed offsets (a read inside its methods is a load, not a dictionary look-up).
# Pure Python ignores this file. Other attributes (and tests' patches) live in the instance __dict__.

cdef class PaperBroker:
    cdef dict __dict__
    cdef public object instruments, sink, cash_usd, funding, cfg, _cap, _perp, active, _latency
    cdef public dict positions, pending_entries, pending_exits, last_bar, _liq, _next_funding, _r_parts
    cdef public str _prefix
    cdef public long long _seq
    cdef public double _taker, _maker, _liq_fee, _spread_bps, _impact, _exit_rate
    cdef public bint _ideal
