"""The money arithmetic of one USDT account: spot fully funded, linear perps on isolated margin.

Pure functions shared by the live broker and the journal fold, so that both compute every
balance with the same operations in the same order (the fold equals the live state exactly).

- Spot (and any position with ``leverage == 0``): buying spends the notional, selling returns
  it; the position's value in equity is its signed mark value.
- Margined perp (``leverage > 0``): opening moves only the fee out of the wallet; the margin
  (entry notional / leverage) is set aside, not spent; closing books ``side * qty * (price -
  entry)`` into the wallet. Its value in equity is the unrealised pnl.
- Equity = wallet + sum of values; margin in use = perp margins + spot mark values (a spot
  holding is fully funded); available = equity - margin in use.
- Funding: at a funding time a perp position pays ``side * qty * mark * rate`` (a long pays a
  positive rate, a short receives it); the wallet moves and the position carries the sum, so
  its trade pnl includes it exactly once.
"""

from __future__ import annotations

from collections.abc import Iterable

from msgspec.structs import replace

from prod_core.domain import Position, Side


def cash_delta(side: Side, qty: float, price: float, fee_usd: float) -> float:
    """Cash a fully funded fill moves: a buy spends its notional, a sell receives it; the fee is paid."""
    notional = qty * price
    return (-notional if side.sign > 0 else notional) - fee_usd


def open_cash(leverage: float, side: Side, qty: float, price: float, fee_usd: float) -> float:
    """Wallet change of an entry fill (open or increase)."""
    if leverage > 0.0:
        return -fee_usd
    return cash_delta(side, qty, price, fee_usd)


def exit_cash(position: Position, qty: float, price: float, fee_usd: float) -> float:
    """Wallet change of an exit fill of ``qty`` of ``position`` (reduce or close)."""
    if position.leverage > 0.0:
        return position.side.sign * qty * (price - position.entry_price) - fee_usd
    return cash_delta(position.side.opposite, qty, price, fee_usd)


def increased(position: Position, qty: float, price: float, fee_usd: float) -> Position:
    """The position after a further entry fill: average entry price, fees summed."""
    total = position.qty + qty
    entry = (position.qty * position.entry_price + qty * price) / total
    return replace(position, qty=total, entry_price=entry, entry_fee_usd=position.entry_fee_usd + fee_usd)


def reduced(position: Position, qty: float, price: float, fee_usd: float) -> Position:
    """The position after a partial exit of ``qty``: the exit's net pnl is realised."""
    pnl = position.side.sign * qty * (price - position.entry_price) - fee_usd
    return replace(position, qty=position.qty - qty, realized_usd=position.realized_usd + pnl)


def close_pnl(position: Position, price: float, fee_usd: float) -> float:
    """Net pnl of the whole trade when the rest of ``position`` exits at ``price``: the partial
    exits, entry and exit fees and the funding paid included."""
    return (
        position.realized_usd
        + position.side.sign * position.qty * (price - position.entry_price)
        - position.entry_fee_usd
        - fee_usd
        - position.funding_usd
    )


def open_pnl(position: Position, exit_rate: float = 0.0) -> float:
    """Net pnl of the trade if it were closed at its mark now, paying ``exit_rate`` of the notional."""
    return close_pnl(position, position.last_price, position.qty * position.last_price * exit_rate)


def funding_amount(position: Position, mark: float, rate: float) -> float:
    """What ``position`` pays at a funding time (negative: it receives)."""
    return position.side.sign * position.qty * mark * rate


def funded(position: Position, amount: float, funding_ts_ms: int) -> Position:
    return replace(position, funding_usd=position.funding_usd + amount, funding_ts_ms=funding_ts_ms)


def value(position: Position) -> float:
    """What ``position`` adds to equity at its mark."""
    if position.leverage > 0.0:
        return position.side.sign * position.qty * (position.last_price - position.entry_price)
    return position.side.sign * position.qty * position.last_price


def equity(wallet_usd: float, positions: Iterable[Position]) -> float:
    total = wallet_usd
    for p in positions:
        total += value(p)
    return total


def margin_in_use(positions: Iterable[Position]) -> float:
    """Margin of the perps plus the mark value of fully funded holdings."""
    total = 0.0
    for p in positions:
        total += p.margin_usd
    return total


def entry_cost(leverage: float, qty: float, price: float, fee_usd: float) -> float:
    """What an entry needs from the available balance: its margin (or notional) and fee."""
    notional = qty * price
    return (notional / leverage if leverage > 0.0 else notional) + fee_usd
