# Cython declarations of the compiled build (prod_core/compiled.py): the pipeline's and the broker's
# extension types, so the lane's locals annotated with them read their fields at fixed offsets.
# Pure Python ignores this file (and never evaluates a local's annotation).

from prod_core.runner.pipeline cimport Pipeline
from prod_core.execution.paper cimport PaperBroker
from prod_core.risk.ledger cimport GovernanceState as CState
