# Cython declarations of the compiled build (prod_core/compiled.py): ``Bar`` as an extension type, so the
# broker and the pipeline (which cimport it) read a bar's fields at fixed offsets. Pure Python ignores
# this file.

cdef class Bar:
    cdef public object symbol, ts_ms, open, high, low, close, volume
