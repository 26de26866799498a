# Cython declarations of the compiled build (prod_core/compiled.py): the clean-bar test reads a
# ``Bar``'s fields at fixed offsets (it runs on every bar of the pipeline). Pure Python ignores this file.

from prod_core.domain.types cimport Bar as CBar

cpdef bint is_clean(CBar bar, last_ts_ms)
