"""Account: the paper account as the fold of its journal. Pure: no IO, no clock.

The journal is an ordered list of entries (account opened, fills, funding payments,
governance transitions).
``fold`` rebuilds cash, open positions, closed R and the daily counters from the fills, and
locks, switches, peak and drawdown from the last journaled transition; ``compare`` lists
how a saved snapshot differs from that fold. The live pipeline books fills with the same
arithmetic (``prod_core.account.margin``), the runner folds the journal at every start and
``python -m prod_core.cli reconcile`` prints both sides.
"""

from prod_core.account.journal import (
    COUNTER_FIELDS,
    TRANSITION_FIELDS,
    Book,
    FillBodies,
    carried_lot,
    compare,
    fold,
    lot_body,
    state_body,
)
from prod_core.account.margin import cash_delta, close_pnl

__all__ = [
    "COUNTER_FIELDS",
    "TRANSITION_FIELDS",
    "Book",
    "FillBodies",
    "carried_lot",
    "cash_delta",
    "close_pnl",
    "compare",
    "fold",
    "lot_body",
    "state_body",
]
