"""Execution adapters: the paper fill simulator (default) and, later, an exchange sandbox.

``PaperBroker`` fills approved plans at the NEXT bar's open or later (never the bar the
decision was taken on), charges maker/taker fees and adverse slippage, keeps every fill
inside its bar's [low, high], checks stops before targets on each later bar, and keeps
positions and cash. It reports through a ``BrokerSink`` so the runner can persist a fill
before anything else sees it.
"""

from prod_core.execution.paper import BrokerSink, ClosedTrade, PaperBroker

__all__ = ["BrokerSink", "ClosedTrade", "PaperBroker"]
