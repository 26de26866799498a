"""crupto paper-trading core.

Market data flows feed -> regime -> strategy -> risk -> portfolio -> execution ->
storage -> telemetry. Decision packages are pure; adapters do the IO; the runner wires
them. See docs/ARCHITECTURE.md.
"""

__version__ = "0.1.0"

from prod_core import compiled as _compiled

_compiled.install()  # the compiled hot modules, when built from this very source (prod_core/compiled.py)
