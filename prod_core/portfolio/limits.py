"""Exposure and position-count limits."""

from __future__ import annotations

import msgspec
from msgspec.structs import replace

from prod_core.configs.governance import GovernanceConfig
from prod_core.domain import Decision


class BookSnapshot(msgspec.Struct, frozen=True, gc=False):
    """Exposure of open positions plus pending entries, in USD of notional."""

    equity_usd: float
    gross_usd: float
    net_usd: float
    symbol_usd: float  # |notional| already held or pending in the plan's symbol
    positions: int  # open positions + pending entries
    symbol_busy: bool = False


def _veto(decision: Decision, reason: str, detail: str) -> Decision:
    return replace(decision, decision=f"vetoed_{reason}", qty=0.0, risk_usd=0.0, reason=detail)


def fit(decision: Decision, book: BookSnapshot, cfg: GovernanceConfig, min_notional_usd: float = 0.0) -> Decision:
    """Scale ``decision`` to fit the portfolio limits or veto it."""
    if not decision.approved:
        return decision
    pc = cfg.portfolio
    if book.symbol_busy:
        return _veto(decision, "symbol_busy", f"{decision.plan.symbol} already has a position or pending entry")
    if book.positions >= pc.max_open_positions:
        return _veto(decision, "max_positions", f"{book.positions} open/pending >= {pc.max_open_positions}")
    equity = book.equity_usd
    price = decision.plan.entry
    want = decision.qty * price
    gross_room = pc.max_gross_exposure_pct / 100.0 * equity - book.gross_usd
    symbol_room = pc.max_symbol_exposure_pct / 100.0 * equity - book.symbol_usd
    net_cap = pc.max_net_exposure_pct / 100.0 * equity
    # Room before net crosses the cap on the side the entry pushes it. An entry that
    # moves net back toward zero from beyond the other cap only reduces the breach.
    if decision.plan.side.sign > 0:
        net_room = net_cap - book.net_usd
    else:
        net_room = net_cap + book.net_usd
    room = min(gross_room, symbol_room, net_room)
    if want <= room:
        return decision
    allowed = max(0.0, room)
    if allowed <= 0.0 or allowed < min_notional_usd:
        return _veto(decision, "exposure", f"no exposure room: wanted {want:.2f} USD, room {room:.2f} USD")
    scale = allowed / want
    return replace(
        decision,
        decision="resized",
        qty=decision.qty * scale,
        risk_usd=decision.risk_usd * scale,
        reason=f"scaled to {scale:.2%} by exposure limits",
    )
