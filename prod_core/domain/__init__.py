"""Typed values shared by every layer: bars, regimes, plans, orders, fills, positions.

Hot-path values (``Bar``) are plain slotted classes that cost a few hundred
nanoseconds to build; values created per plan/order/fill are frozen slotted
dataclasses validated at construction. Timestamps are UTC epoch values with a
``ts_`` prefix; units are in names (``_usd``, ``_pct``, ``_r``, ``_ms``).
"""

from prod_core.domain.types import (
    STAGES,
    Bar,
    Decision,
    Fill,
    FillReason,
    InstrumentKind,
    Instrument,
    Order,
    OrderStatus,
    Position,
    Regime,
    Side,
    TradePlan,
    timeframe_to_ms,
)

__all__ = [
    "STAGES",
    "Bar",
    "Decision",
    "Fill",
    "FillReason",
    "Instrument",
    "InstrumentKind",
    "Order",
    "OrderStatus",
    "Position",
    "Regime",
    "Side",
    "TradePlan",
    "timeframe_to_ms",
]
