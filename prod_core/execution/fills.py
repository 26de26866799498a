"""Fill models for paper orders: where a market, limit, stop or liquidation fills within a bar.

Pure functions of a ``Bar`` (or a ``Book``) and plain floats: no IO, no clock, no state. The
broker calls them only when an order is due, never per bar, and they allocate nothing beyond
the returned floats.

Conventions: ``buying`` is the side of the fill (a long's stop sells, a short's stop buys);
``long`` is the side of the position a stop or liquidation protects. Prices in basis points
are 1e-4 of the reference price. A market fill never lies outside its bar's [low, high]: the
bar is the only evidence of what traded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from prod_core.domain import Bar, FillReason

# Enum members on the hot path are read as module globals: on Python 3.11 ``Side.BUY`` costs ~150 ns
# more than a global (``EnumType.__getattr__`` sends every attribute lookup on an enum class down
# the slow path), and a fill reads a dozen of them.
_LIQUIDATION, _STOP = FillReason.LIQUIDATION, FillReason.STOP

Level = tuple[float, float]  # (price, qty)


# ----------------------------------------------------------------- order book
@dataclass(frozen=True, slots=True)
class Book:
    """A snapshot of an order book: ``bids`` and ``asks`` as (price, qty) levels, best first.

    Validated at construction: positive finite prices and quantities, bids strictly
    descending, asks strictly ascending.
    """

    bids: tuple[Level, ...]
    asks: tuple[Level, ...]

    def __post_init__(self) -> None:
        for name, levels, sign in (("bids", self.bids, -1.0), ("asks", self.asks, 1.0)):
            prev = -math.inf
            for price, qty in levels:
                if not (price > 0.0 and qty > 0.0 and math.isfinite(price) and math.isfinite(qty)):
                    raise ValueError(f"Book.{name} levels need a positive finite price and qty, was {(price, qty)!r}")
                if sign * price <= prev:
                    raise ValueError(
                        f"Book.{name} must be best first ({'descending' if sign < 0 else 'ascending'} prices), "
                        f"was {[p for p, _ in levels]!r}"
                    )
                prev = sign * price

    @property
    def mid(self) -> float:
        """(best bid + best ask) / 2; nan when a side is empty (no two-sided market)."""
        if not self.bids or not self.asks:
            return math.nan
        return (self.bids[0][0] + self.asks[0][0]) * 0.5

    def levels(self, buying: bool) -> tuple[Level, ...]:
        """The side a taker order consumes: the asks for a buy, the bids for a sell."""
        return self.asks if buying else self.bids


def walk_book(levels: tuple[Level, ...], qty: float) -> tuple[float, float]:
    """(volume-weighted average price, filled qty) of a taker order of ``qty`` that consumes
    ``levels`` best first until it is filled or the book is exhausted (a partial fill).

    The filled qty is exactly ``qty`` when the book holds enough; the price is nan when nothing
    fills (``qty`` <= 0 or an empty side).
    """
    remaining = qty
    cost = taken = 0.0
    done = 1e-12 * qty  # float residue of the subtractions below: counts as filled
    for price, level_qty in levels:
        if remaining <= done:
            break
        take = level_qty if level_qty < remaining else remaining
        cost += price * take
        taken += take
        remaining -= take
    if not taken > 0.0:
        return math.nan, 0.0
    return cost / taken, (qty if remaining <= done else taken)


# ------------------------------------------------------------- market orders
def impact_bps(impact_coef: float, notional_usd: float, bar: Bar) -> float:
    """Square-root market impact in basis points:
    ``impact_coef * range_bps * sqrt(notional_usd / (bar.volume * bar.close))``,
    with ``range_bps = (high - low) / open * 1e4``.

    The bar's range stands in for volatility and its notional volume for liquidity, so an order
    pays more the larger it is against what traded and the wider the bar. A bar without volume
    or range gives no information on either and yields 0 (a zero-volume bar is usually a
    synthetic gap-fill; ``participation_qty`` decides whether anything fills on it).
    """
    if impact_coef <= 0.0 or notional_usd <= 0.0:
        return 0.0
    volume_usd = bar.volume * bar.close
    spread = bar.high - bar.low
    if not (volume_usd > 0.0 and spread > 0.0 and bar.open > 0.0):
        return 0.0
    scale = impact_coef * (spread / bar.open * 1e4)
    if scale <= 0.0:  # underflow: without this, 0 * an overflowing size ratio would be nan
        return 0.0
    return scale * math.sqrt(notional_usd / volume_usd)  # may be inf on a dust bar: market_price clamps it


def market_price(buying: bool, ref: float, qty: float, bar: Bar, spread_bps: float, impact_coef: float) -> float:
    """A market order's average fill price: ``ref * (1 +/- (spread_bps + impact_bps) / 1e4)``
    (+ for a buy), clamped to [bar.low, bar.high].

    ``ref`` is the reference price (the open for an order due at this bar, ``stop_ref`` for a
    stop), ``spread_bps`` half the bid-ask spread (ExecutionConfig.slippage_bps), ``qty`` the
    part filling on this bar (its notional at ``ref`` sets the impact).
    """
    cost = spread_bps + impact_bps(impact_coef, qty * ref, bar)
    price = ref * (1.0 + cost * 1e-4) if buying else ref * (1.0 - cost * 1e-4)
    if price > bar.high:
        return bar.high
    if price < bar.low:
        return bar.low
    return price


def participation_qty(remaining: float, bar_volume: float, max_participation_pct: float | None) -> float:
    """The part of ``remaining`` one bar can take: at most ``max_participation_pct`` % of its
    volume. None = no cap: all of it, whatever the volume (the parity behaviour). With a cap, a
    bar without volume takes nothing: the order waits for a bar that trades.

    The caller rounds the result down to the lot step (``rules.round_qty``).
    """
    if max_participation_pct is None:
        return remaining
    if bar_volume <= 0.0 or remaining <= 0.0:
        return 0.0
    cap = bar_volume * max_participation_pct * 0.01
    return remaining if remaining <= cap else cap


# -------------------------------------------------------------- limit orders
def limit_fills(buying: bool, limit: float, bar: Bar, mode: str) -> bool:
    """Whether a resting limit fills on ``bar`` (ExecutionConfig.limit_fill).

    "through": the market traded beyond the limit (buy: low < limit; sell: high > limit), so the
    queue ahead of us at that price is certainly gone. "touch": reaching it is enough
    (low <= limit; high >= limit), the optimistic model.
    """
    if mode == "through":
        return bar.low < limit if buying else bar.high > limit
    if mode == "touch":
        return bar.low <= limit if buying else bar.high >= limit
    raise ValueError(f"limit fill mode must be 'through' or 'touch', was {mode!r}")


def limit_fill_price(buying: bool, limit: float, bar: Bar) -> float:
    """The fill price of a limit that fills on ``bar``: the limit itself, or the open when the bar
    opens beyond it on the favourable side (a gap fills at the open, better than the limit)."""
    if buying:
        return bar.open if bar.open < limit else limit
    return bar.open if bar.open > limit else limit


# ------------------------------------------------------------------- stops
def stop_triggered(long: bool, stop: float, bar: Bar) -> bool:
    """Whether the stop of a ``long`` (or short) position triggers: low <= stop (high >= stop)."""
    return bar.low <= stop if long else bar.high >= stop


def stop_ref(long: bool, stop: float, bar: Bar) -> float:
    """The reference price of a triggered stop, which then fills as a market order
    (``market_price(not long, stop_ref(...), ...)``): the stop, or the open when the bar gaps
    through it (long: min(open, stop); short: max(open, stop))."""
    if long:
        return bar.open if bar.open < stop else stop
    return bar.open if bar.open > stop else stop


# ------------------------------------------------------ margin (isolated perps)
def liquidation_hit(long: bool, liq_price: float, bar: Bar) -> bool:
    """Whether ``bar`` reaches the liquidation price: low <= liq (long), high >= liq (short)."""
    return bar.low <= liq_price if long else bar.high >= liq_price


def _check_margin_args(entry: float, leverage: float) -> None:
    if not (entry > 0.0 and math.isfinite(entry)):
        raise ValueError(f"entry must be a positive finite price, was {entry!r}")
    if not (leverage >= 1.0 and math.isfinite(leverage)):
        raise ValueError(f"leverage must be >= 1 (a margined perp), was {leverage!r}")


def liquidation_price(long: bool, entry: float, leverage: float, mmr: float) -> float:
    """Liquidation price of an isolated linear perp opened at ``entry`` with ``leverage`` L and
    maintenance margin rate ``mmr``.

    Per unit, the margin is entry / L; the position is liquidated when the margin plus the
    unrealized pnl falls to mmr of the notional at the price P:
    long: entry/L + (P - entry) = mmr * P  =>  P = entry * (1 - 1/L) / (1 - mmr);
    short: entry/L + (entry - P) = mmr * P  =>  P = entry * (1 + 1/L) / (1 + mmr).
    Isolated margin only: fees, funding and added margin are not in it. The price lies on the
    safe side of the entry only when mmr < 1/L (exchanges cap leverage so); otherwise the
    position is liquidated on its first bar.
    """
    _check_margin_args(entry, leverage)
    if not 0.0 <= mmr < 1.0:
        raise ValueError(f"maintenance margin rate must be in [0, 1), was {mmr!r}; it is a fraction, not a percent")
    inv = 1.0 / leverage
    if long:
        return entry * (1.0 - inv) / (1.0 - mmr)
    return entry * (1.0 + inv) / (1.0 + mmr)


def bankruptcy_price(long: bool, entry: float, leverage: float) -> float:
    """The price at which an isolated position's margin is exactly lost: long entry * (1 - 1/L),
    short entry * (1 + 1/L). A liquidation is settled here (plus the liquidation fee)."""
    _check_margin_args(entry, leverage)
    inv = 1.0 / leverage
    return entry * (1.0 - inv) if long else entry * (1.0 + inv)


def first_hit(long: bool, bar: Bar, stop: float | None, liq_price: float | None) -> FillReason | None:
    """Which protective level ``bar`` reaches first on the adverse path from its open:
    ``FillReason.STOP``, ``FillReason.LIQUIDATION`` or None (neither; None levels are absent).

    Both reached: the one nearer the open on the adverse side (for a long, the higher). The open
    already at or beyond the liquidation price: liquidation, because isolated margin cannot pay
    a stop fill beyond bankruptcy; beyond the stop only: the stop. A tie is a liquidation (the
    exchange's engine acts on the same price; it is also the costlier outcome for the paper run).
    """
    liq_hit = liq_price is not None and liquidation_hit(long, liq_price, bar)
    if stop is None or not stop_triggered(long, stop, bar):
        return _LIQUIDATION if liq_hit else None
    if liq_price is None or not liq_hit:
        return _STOP
    if (bar.open <= liq_price) if long else (bar.open >= liq_price):
        return _LIQUIDATION
    stop_first = stop > liq_price if long else stop < liq_price
    return _STOP if stop_first else _LIQUIDATION
