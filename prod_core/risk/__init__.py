"""Risk: R sizing, hard gates and the account's R ledger. Pure: state and time are passed in.

``evaluate(plan, snapshot, cfg)`` turns a TradePlan into a sized ``Decision`` or a veto
with a reason (kill-switch, daily lock, drawdown stop, strategy hold, stop too tight).
``GovernanceState`` is the paper account's R curve, daily counters, locks and switches;
the ``on_*`` functions update it and engage locks per governance.
"""

from prod_core.risk.ledger import GovernanceState, day_of, ladder_step, mark_open_r, on_entry_filled, on_trade_closed
from prod_core.risk.sizing import RiskSnapshot, cost_rate, evaluate

__all__ = [
    "GovernanceState",
    "RiskSnapshot",
    "cost_rate",
    "day_of",
    "evaluate",
    "ladder_step",
    "mark_open_r",
    "on_entry_filled",
    "on_trade_closed",
]
