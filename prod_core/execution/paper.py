"""Paper fill simulator."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Protocol

from prod_core.account import cash_delta, close_pnl
from prod_core.configs.governance import ExecutionConfig
from prod_core.domain import Bar, Decision, Fill, FillReason, Instrument, Order, OrderStatus, Position, Side


@dataclass(frozen=True, slots=True)
class ClosedTrade:
    position: Position
    exit_fill: Fill
    pnl_usd: float  # net of entry and exit fees
    trade_r: float  # pnl_usd / nominal 1R at plan time


class BrokerSink(Protocol):
    """Where the broker reports. ``commit_*`` journal a fill with its consequences BEFORE the
    broker changes its own state; False means it could not be journaled (nothing changed)."""

    def on_order(self, order: Order) -> None: ...

    def commit_open(self, fill: Fill, position: Position, decision: Decision) -> bool: ...

    def commit_close(self, trade: ClosedTrade) -> bool: ...

    def on_open(self, position: Position, decision: Decision) -> None: ...

    def on_close(self, trade: ClosedTrade) -> None: ...


_NOTHING: tuple = ()


class PaperBroker:
    """Simulated exchange for one paper account."""

    def __init__(
        self,
        cfg: ExecutionConfig,
        instruments: dict[str, Instrument],
        sink: BrokerSink,
        *,
        cash_usd: float,
        id_prefix: str = "",
    ) -> None:
        self.cfg = cfg
        self.instruments = instruments
        self.sink = sink
        self.cash_usd = cash_usd
        self.positions: dict[str, Position] = {}
        self.pending_entries: dict[str, tuple[Decision, Order]] = {}
        self.pending_exits: dict[str, tuple[FillReason, Order]] = {}
        self.last_bar: dict[str, Bar] = {}
        self._prefix = id_prefix
        self._seq = 0
        self.reconfigure(cfg)
        self.active: set[str] = set()  # symbols with a position or pending order

    def reconfigure(self, cfg: ExecutionConfig) -> None:
        """Apply new fees/slippage/limits (governance reload) to orders filled from now on."""
        self.cfg = cfg
        self._taker = cfg.taker_fee_bps / 10_000.0
        self._maker = cfg.maker_fee_bps / 10_000.0
        self._slip = cfg.slippage_bps / 10_000.0

    # ----------------------------------------------------------------- state
    @property
    def equity_usd(self) -> float:
        eq = self.cash_usd
        for p in self.positions.values():
            eq += p.side.sign * p.qty * p.last_price
        return eq

    def position_exposure_usd(self) -> tuple[float, float]:
        """(gross, net) notional of open positions at their marks."""
        gross = net = 0.0
        for p in self.positions.values():
            n = p.qty * p.last_price
            gross += n
            net += p.side.sign * n
        return gross, net

    def exposure_usd(self) -> tuple[float, float]:
        """(gross, net) notional of open positions plus pending entries."""
        gross, net = self.position_exposure_usd()
        for decision, _ in self.pending_entries.values():
            n = decision.qty * decision.plan.entry
            gross += n
            net += decision.plan.side.sign * n
        return gross, net

    def symbol_usd(self, symbol: str) -> float:
        total = 0.0
        p = self.positions.get(symbol)
        if p is not None:
            total += p.qty * p.last_price
        pe = self.pending_entries.get(symbol)
        if pe is not None:
            total += pe[0].qty * pe[0].plan.entry
        return total

    def open_r(self, exit_cost: bool = True, exclude: str = "") -> float:
        """Open trades marked to market in R, net of entry fee and the exit cost to flatten now
        (``exclude``: a symbol whose position is being closed)."""
        total = 0.0
        rate = self._taker + self._slip if exit_cost else 0.0
        for p in self.positions.values():
            if p.symbol == exclude:
                continue
            pnl = p.side.sign * p.qty * (p.last_price - p.entry_price) - p.entry_fee_usd - p.qty * p.last_price * rate
            total += pnl / p.nominal_r_usd
        return total

    # ---------------------------------------------------------------- orders
    def _next_id(self, kind: str) -> str:
        self._seq += 1
        return f"{self._prefix}{kind}{self._seq}"

    def submit_entry(self, decision: Decision, ts_ms: int) -> Order:
        """Queue a market entry for the next bar's open."""
        plan = decision.plan
        order = Order(
            order_id=self._next_id("o"),
            plan_id=plan.plan_id,
            ts_ms=ts_ms,
            symbol=plan.symbol,
            side=plan.side,
            qty=decision.qty,
            kind="market",
            reason=FillReason.ENTRY,
        )
        self.pending_entries[plan.symbol] = (decision, order)
        self.active.add(plan.symbol)
        self.sink.on_order(order)
        return order

    def request_exit(self, symbol: str, reason: FillReason, ts_ms: int) -> Order | None:
        """Queue a market exit of the open position for the next bar's open."""
        p = self.positions.get(symbol)
        if p is None or symbol in self.pending_exits:
            return None
        order = Order(
            order_id=self._next_id("o"),
            plan_id=p.plan_id,
            ts_ms=ts_ms,
            symbol=symbol,
            side=p.side.opposite,
            qty=p.qty,
            kind="market",
            reason=reason,
        )
        self.pending_exits[symbol] = (reason, order)
        self.sink.on_order(order)
        return order

    def cancel_pending(self) -> list[Order]:
        """Cancel every pending entry (stop, kill-switch). Returns the cancelled orders."""
        cancelled = []
        for symbol, (_, order) in list(self.pending_entries.items()):
            c = replace(order, status=OrderStatus.CANCELLED)
            cancelled.append(c)
            self.sink.on_order(c)
            del self.pending_entries[symbol]
            if symbol not in self.positions:
                self.active.discard(symbol)
        return cancelled

    def flatten_now(self, reason: FillReason, ts_ms: int) -> list[ClosedTrade]:
        """Close every position at the last known price (kill-switch), inside that bar's range.

        A close that cannot be journaled stays a pending exit, filled at the next bar's open."""
        trades = []
        for symbol in list(self.positions):
            bar = self.last_bar.get(symbol)
            p = self.positions[symbol]
            if bar is None:
                self.request_exit(symbol, reason, ts_ms)  # no price yet: the first bar's open
                continue
            self.pending_exits.pop(symbol, None)
            price = self._market_price(p.side is Side.SELL, bar.close, bar)
            trade = self._close(p, price, reason, ts_ms, self._taker)
            if trade is not None:
                trades.append(trade)
        return trades

    def close_at(self, symbol: str, price: float, reason: FillReason, ts_ms: int) -> ClosedTrade | None:
        """Close a position at a given mark (a carried position whose market is gone)."""
        p = self.positions.get(symbol)
        if p is None:
            return None
        self.pending_exits.pop(symbol, None)
        return self._close(p, price, reason, ts_ms, self._taker)

    # ------------------------------------------------------------------ bars
    def on_bar(self, bar: Bar) -> None:
        """Fill what is due at this bar, then check stops/targets and mark to market."""
        symbol = bar.symbol
        self.last_bar[symbol] = bar
        if symbol not in self.active:
            return
        pe = self.pending_entries.get(symbol)
        if pe is not None and bar.ts_ms > pe[1].ts_ms:  # never on the decision bar (or a repeat of it)
            del self.pending_entries[symbol]
            self._fill_entry(pe[0], pe[1], bar)
        px = self.pending_exits.pop(symbol, None)
        p = self.positions.get(symbol)
        if px is not None and p is not None:
            price = self._market_price(p.side is Side.SELL, bar.open, bar)
            self._close(p, price, px[0], bar.ts_ms, self._taker)
            return
        if p is None:
            return
        self._check_exits(p, bar)
        if symbol in self.positions:
            p.last_price = bar.close

    def _market_price(self, buying: bool, ref: float, bar: Bar) -> float:
        price = ref * (1.0 + self._slip) if buying else ref * (1.0 - self._slip)
        if price > bar.high:
            return bar.high
        if price < bar.low:
            return bar.low
        return price

    def _fill_entry(self, decision: Decision, order: Order, bar: Bar) -> None:
        plan = decision.plan
        buying = plan.side is Side.BUY
        price = self._market_price(buying, bar.open, bar)
        qty = decision.qty
        inst = self.instruments.get(plan.symbol)
        min_notional = max(self.cfg.min_notional_usd, inst.min_notional_usd if inst else 0.0)
        notional = qty * price
        fee = notional * self._taker
        reject = ""
        if not (qty > 0.0 and math.isfinite(qty)):
            reject = f"invalid_qty: {qty!r}"
        elif notional < min_notional:
            reject = f"min_notional: {notional:.2f} < {min_notional:.2f} USD"
        elif buying and notional + fee > self.cash_usd:
            reject = f"insufficient_cash: need {notional + fee:.2f}, have {self.cash_usd:.2f} USD"
        elif not buying and inst is not None and not inst.can_short:
            reject = f"short_not_allowed: {plan.symbol} is spot"
        if reject:
            self.active.discard(plan.symbol)
            self.sink.on_order(
                replace(order, status=OrderStatus.REJECTED, reject_reason=reject)
            )
            return
        fill = Fill(
            fill_id=self._next_id("f"),
            order_id=order.order_id,
            ts_ms=bar.ts_ms,
            symbol=plan.symbol,
            side=plan.side,
            qty=qty,
            price=price,
            fee_usd=fee,
            reason=FillReason.ENTRY,
        )
        position = Position(
            position_id=self._prefix + plan.plan_id,  # unique for the life of the DB: run prefix + plan
            plan_id=plan.plan_id,
            strategy=plan.strategy,
            symbol=plan.symbol,
            side=plan.side,
            qty=qty,
            entry_price=price,
            stop=plan.stop,
            target=plan.target,
            ts_open_ms=bar.ts_ms,
            nominal_r_usd=decision.nominal_r_usd,
            entry_fee_usd=fee,
            last_price=price,
        )
        if not self.sink.commit_open(fill, position, decision):
            self.active.discard(plan.symbol)
            self.sink.on_order(
                replace(order, status=OrderStatus.REJECTED, reject_reason="storage: the fill could not be journaled")
            )
            return
        self.cash_usd += cash_delta(plan.side, qty, price, fee)
        self.positions[plan.symbol] = position
        self.sink.on_order(replace(order, status=OrderStatus.FILLED))
        self.sink.on_open(position, decision)

    def _check_exits(self, p: Position, bar: Bar) -> None:
        if p.side is Side.BUY:
            if bar.low <= p.stop:
                price = self._market_price(False, min(bar.open, p.stop), bar)
                self._close(p, price, FillReason.STOP, bar.ts_ms, self._taker)
            elif bar.high >= p.target:
                self._close(p, max(bar.open, p.target), FillReason.TARGET, bar.ts_ms, self._maker, maker=True)
        else:
            if bar.high >= p.stop:
                price = self._market_price(True, max(bar.open, p.stop), bar)
                self._close(p, price, FillReason.STOP, bar.ts_ms, self._taker)
            elif bar.low <= p.target:
                self._close(p, min(bar.open, p.target), FillReason.TARGET, bar.ts_ms, self._maker, maker=True)

    def _close(
        self, p: Position, price: float, reason: FillReason, ts_ms: int, fee_rate: float, *, maker: bool = False
    ) -> ClosedTrade | None:
        """Close ``p`` once the fill is journaled; if it cannot be, the exit stays pending and is
        filled at the next bar's open at market (a stop is never silently dropped). ``maker``: a
        resting limit (the target) that filled as maker; anything else is a market order."""
        exit_side = p.side.opposite
        fee = p.qty * price * fee_rate
        order = Order(
            order_id=self._next_id("o"),
            plan_id=p.plan_id,
            ts_ms=ts_ms,
            symbol=p.symbol,
            side=exit_side,
            qty=p.qty,
            kind="limit" if maker else "market",
            reason=reason,
        )
        fill = Fill(
            fill_id=self._next_id("f"),
            order_id=order.order_id,
            ts_ms=ts_ms,
            symbol=p.symbol,
            side=exit_side,
            qty=p.qty,
            price=price,
            fee_usd=fee,
            reason=reason,
            liquidity="maker" if maker else "taker",
        )
        pnl = close_pnl(p, price, fee)
        trade = ClosedTrade(position=p, exit_fill=fill, pnl_usd=pnl, trade_r=pnl / p.nominal_r_usd)
        self.sink.on_order(order)
        if not self.sink.commit_close(trade):
            self.pending_exits[p.symbol] = (reason, order)
            self.active.add(p.symbol)
            return None
        self.cash_usd += cash_delta(exit_side, p.qty, price, fee)
        p.last_price = price
        del self.positions[p.symbol]
        if p.symbol not in self.pending_entries:
            self.active.discard(p.symbol)
        self.sink.on_order(replace(order, status=OrderStatus.FILLED))
        self.sink.on_close(trade)
        return trade

    def restore(self, positions: list[Position]) -> None:
        """Adopt positions persisted by an earlier run of the same account."""
        for p in positions:
            self.positions[p.symbol] = p
            self.active.add(p.symbol)
