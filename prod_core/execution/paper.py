"""The paper broker: order lifecycle of one paper account on closed bars.

Per bar of a symbol, in this order (the bar's open is the first price anyone could trade at):

1. **Funding** of an open perp at every funding time since the last bar, at the mark of that
   instant (the previous bar's close), before anything fills at this bar's open.
2. **Working entry**: a market order decided at an earlier bar's close fills at this bar's
   open (after ``latency_bars`` bars), priced by the fill model, at most
   ``max_participation_pct`` of the bar's volume; the rest works on, and is cancelled after
   ``cancel_after_bars`` bars. On a feed with an order book, the part filling at this bar walks
   the book captured ``latency_ms`` after the order (or its rest) was sent (``capture_books``).
3. **Working exit** (exit signal, kill-switch, the rest of a stop): the same at this bar's open.
4. **Protective levels** along the adverse path from the open: the liquidation price of a
   margined perp or the stop, whichever the market reaches first (a stop fills as a market
   order from ``min(open, stop)``; a liquidation settles the whole position at the bankruptcy
   price), else the target as a resting limit that fills only when the market trades through
   it (or touches it, by config).
5. Mark to the close.

Nothing changes here until the sink has journaled it (``commit_*`` returns True): a fill that
cannot be journaled is not a fill.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import msgspec

from prod_core.account.margin import (
    close_pnl,
    entry_cost,
    equity,
    exit_cash,
    funded,
    funding_amount,
    increased,
    margin_in_use,
    open_cash,
    open_pnl,
    reduced,
    value,
)
from prod_core.configs.governance import ExecutionConfig
from prod_core.domain import (
    Bar,
    Decision,
    Fill,
    FillReason,
    Instrument,
    InstrumentKind,
    Order,
    OrderStatus,
    Position,
    Side,
)
from prod_core.execution.fills import (
    Book,
    bankruptcy_price,
    liquidation_price,
    limit_fill_price,
    limit_fills,
    market_price,
    participation_qty,
    walk_book,
)
from prod_core.execution.rules import check_order, round_limit, round_price, round_qty
from prod_core.feeds.funding import FundingRates

# Enum members on the hot path are read as module globals: on Python 3.11 ``Side.BUY`` costs ~150 ns
# more than a global (``EnumType.__getattr__`` sends every attribute lookup on an enum class down
# the slow path), and a fill reads a dozen of them.
_ENTRY, _STOP, _TARGET, _LIQUIDATION = (
    FillReason.ENTRY, FillReason.STOP, FillReason.TARGET, FillReason.LIQUIDATION)
_PERP = InstrumentKind.PERP
_CANCELLED, _FILLED, _PARTIAL, _REJECTED = (
    OrderStatus.CANCELLED, OrderStatus.FILLED, OrderStatus.PARTIAL, OrderStatus.REJECTED)
_BUY, _SELL = Side.BUY, Side.SELL


class ClosedTrade(msgspec.Struct, frozen=True, gc=False):
    position: Position  # as it was before the closing fill
    exit_fill: Fill
    pnl_usd: float  # the whole trade, net of every fee, partial exit and funding payment
    trade_r: float  # pnl_usd / nominal 1R at plan time


class BrokerSink(Protocol):
    """Where the broker reports. ``commit_*`` journal a change with its consequences BEFORE the
    broker changes its own state; False means it could not be journaled (nothing changed)."""

    def on_order(self, order: Order) -> None: ...

    def commit_open(self, fill: Fill, position: Position, decision: Decision) -> bool: ...

    def commit_increase(self, fill: Fill, before: Position, after: Position) -> bool: ...

    def commit_reduce(self, fill: Fill, before: Position, after: Position) -> bool: ...

    def commit_close(self, trade: ClosedTrade) -> bool: ...

    def commit_funding(self, after: Position, funding_ts_ms: int, mark: float, rate: float, amount: float) -> bool: ...

    def on_open(self, position: Position, decision: Decision) -> None: ...

    def on_close(self, trade: ClosedTrade) -> None: ...


class Working:
    """A market order being worked: what is left, how long it waited and worked, and (on a feed
    with an order book) when it was sent and the book it will be priced on."""

    __slots__ = ("order", "decision", "reason", "remaining", "filled", "wait", "age", "sent_s", "book")

    def __init__(self, order: Order, decision: Decision | None, reason: FillReason, wait: int,
                 sent_s: float | None = None) -> None:
        self.order = order
        self.decision = decision
        self.reason = reason
        self.remaining = order.qty
        self.filled = 0.0
        self.wait = wait  # eligible bars still to skip (latency)
        self.age = 0  # eligible bars worked
        self.sent_s = sent_s  # wall time it (or its rest) was sent; None: stamped by the next capture_books
        self.book: Book | None = None  # the book seen latency_ms after sent_s, walked at its next bar

    def done(self, status: OrderStatus, ts_ms: int, reject_reason: str = "") -> Order:
        return self.order.ended(status, self.filled, ts_ms, reject_reason)


class PaperBroker:
    """Simulated exchange for one paper account (one USDT wallet, spot and linear perps)."""

    def __init__(
        self,
        cfg: ExecutionConfig,
        instruments: dict[str, Instrument],
        sink: BrokerSink,
        *,
        cash_usd: float,
        id_prefix: str = "",
        funding: FundingRates | None = None,
    ) -> None:
        self.instruments = instruments
        self.sink = sink
        self.cash_usd = cash_usd  # the wallet balance
        self.positions: dict[str, Position] = {}
        self.pending_entries: dict[str, Working] = {}
        self.pending_exits: dict[str, Working] = {}
        self.last_bar: dict[str, Bar] = {}
        self.funding = funding
        self._prefix = id_prefix
        self._seq = 0
        self._liq: dict[str, float] = {}  # symbol -> liquidation price of a margined position
        self._next_funding: dict[str, int] = {}  # symbol -> next funding time of its open perp
        self._perp = {s for s, i in instruments.items() if i.kind is _PERP}
        self.active: set[str] = set()  # symbols with a position or working order
        self.reconfigure(cfg)

    def set_instruments(self, instruments: dict[str, Instrument]) -> None:
        """Install new instrument rules (the exchange's, once its markets are loaded)."""
        self.instruments = dict(instruments)
        self._perp = {s for s, i in self.instruments.items() if i.kind is _PERP}

    def reconfigure(self, cfg: ExecutionConfig) -> None:
        """Apply new fees/fill model/limits (governance reload) to orders filled from now on."""
        self.cfg = cfg
        self._taker = cfg.taker_fee_bps / 10_000.0
        self._maker = cfg.maker_fee_bps / 10_000.0
        self._liq_fee = cfg.liquidation_fee_bps / 10_000.0
        self._ideal = cfg.fill_model == "ideal_next_open"
        self._spread_bps = 0.0 if self._ideal else cfg.slippage_bps
        self._impact = 0.0 if self._ideal else cfg.impact_coef
        self._cap = None if self._ideal else cfg.max_participation_pct
        self._latency = cfg.latency_bars
        self._exit_rate = self._taker + self._spread_bps / 10_000.0
        self._r_parts: dict[str, tuple[Position, float, float]] = {}  # open_r cache, per exit rate

    # ----------------------------------------------------------------- state
    @property
    def equity_usd(self) -> float:
        """Wallet + unrealised pnl of the perps + mark value of the spot holdings."""
        return equity(self.cash_usd, self.positions.values())

    @property
    def margin_usd(self) -> float:
        return margin_in_use(self.positions.values())

    @property
    def available_usd(self) -> float:
        """What a new entry may use: equity less the margin in use (spot holdings are fully funded)."""
        return self.equity_usd - self.margin_usd

    def position_exposure_usd(self) -> tuple[float, float]:
        """(gross, net) notional of open positions at their marks."""
        gross = net = 0.0
        for p in self.positions.values():
            n = p.qty * p.last_price
            gross += n
            net += p.side.sign * n
        return gross, net

    def account_marks(self) -> tuple[float, float, float]:
        """(equity, gross, net) in one pass over the positions: ``equity_usd`` and ``position_exposure_usd``."""
        equity = self.cash_usd
        gross = net = 0.0
        for p in self.positions.values():
            equity += value(p)
            n = p.qty * p.last_price
            gross += n
            net += p.side.sign * n
        return equity, gross, net

    def exposure_usd(self) -> tuple[float, float]:
        """(gross, net) notional of open positions plus what working entries still want."""
        gross, net = self.position_exposure_usd()
        for w in self.pending_entries.values():
            plan = w.decision.plan
            n = w.remaining * plan.entry
            gross += n
            net += plan.side.sign * n
        return gross, net

    def symbol_usd(self, symbol: str) -> float:
        total = 0.0
        p = self.positions.get(symbol)
        if p is not None:
            total += p.qty * p.last_price
        w = self.pending_entries.get(symbol)
        if w is not None:
            total += w.remaining * w.decision.plan.entry
        return total

    def open_r(self, exit_cost: bool = True, exclude: str = "") -> float:
        """Open trades marked to market in R, net of fees, funding and partial exits so far and of
        the exit cost to flatten now (``exclude``: a symbol whose position is being closed)."""
        total = 0.0
        if not exit_cost:
            for p in self.positions.values():
                if p.symbol != exclude:
                    total += open_pnl(p, 0.0) / p.nominal_r_usd
            return total
        rate = self._exit_rate
        # Marked on every bar of a symbol with a position: reuse each position's R until its mark
        # moves. A Position changes only by replacement (increased/reduced/funded return new ones)
        # or by ``last_price``, so (the object, its mark) identifies the value. (Positions are kept
        # by their symbol: ``exclude`` leaves out the one being closed.)
        parts = self._r_parts
        for symbol, p in self.positions.items():
            if symbol == exclude:
                continue
            part = parts.get(symbol)
            if part is None or part[0] is not p or part[1] != p.last_price:
                part = parts[symbol] = (p, p.last_price, open_pnl(p, rate) / p.nominal_r_usd)
            total += part[2]
        return total

    def liquidation_price(self, symbol: str) -> float | None:
        return self._liq.get(symbol)

    # ---------------------------------------------------------------- orders
    def _next_id(self, kind: str) -> str:
        self._seq += 1
        return f"{self._prefix}{kind}{self._seq}"

    def submit_entry(self, decision: Decision, ts_ms: int, now_s: float | None = None) -> Order:
        """Queue a market entry for the next bar's open (or later, with latency). ``now_s``: the wall
        time it is sent (for ``capture_books``; None: stamped by the next capture)."""
        plan = decision.plan
        qty = decision.qty
        inst = self.instruments.get(plan.symbol)
        if inst is not None and inst.qty_step > 0.0:
            qty = round_qty(inst, qty) or qty  # the exchange's lot step (below one step: refused when due)
        order = Order(
            order_id=self._next_id("o"), plan_id=plan.plan_id, ts_ms=ts_ms, symbol=plan.symbol, side=plan.side,
            qty=qty, kind="market", reason=_ENTRY,
        )  # fmt: skip
        self.pending_entries[plan.symbol] = Working(order, decision, _ENTRY, self._latency, now_s)
        self.active.add(plan.symbol)
        self.sink.on_order(order)
        return order

    def request_exit(self, symbol: str, reason: FillReason, ts_ms: int, *, latency: bool = True,
                     now_s: float | None = None) -> Order | None:
        """Queue a market exit of the open position for the next bar's open; a working entry's
        rest is cancelled (the trade is being closed). ``now_s`` as for ``submit_entry``."""
        p = self.positions.get(symbol)
        if p is None or symbol in self.pending_exits:
            return None
        self._cancel_entry(symbol, ts_ms)
        order = Order(
            order_id=self._next_id("o"), plan_id=p.plan_id, ts_ms=ts_ms, symbol=symbol, side=p.side.opposite,
            qty=p.qty, kind="market", reason=reason,
        )  # fmt: skip
        self.pending_exits[symbol] = Working(order, None, reason, self._latency if latency else 0, now_s)
        self.sink.on_order(order)
        return order

    def capture_books(self, now_s: float, book_of: Callable[[str], Book | None], latency_ms: int) -> float | None:
        """Give each working market order that is due at its next bar (latency_bars waited) and has
        no book yet the book ``book_of(symbol)`` shows now, once ``latency_ms`` have passed since it
        was sent: the price the market offered that long after the decision. That order's next bar
        walks this book, not a newer one. An order not stamped yet is stamped ``now_s``; ``book_of``
        returning None (no usable book) is asked again at the next call. Called by the runner each
        loop cycle while orders work; returns the earliest future time a capture falls due (None:
        none), so the runner can wake for it."""
        if self._ideal:
            return None
        latency_s = latency_ms / 1000.0
        next_due = None
        for pending in (self.pending_entries, self.pending_exits):
            for symbol, w in pending.items():
                if w.book is not None or w.wait > 0:
                    continue
                if w.sent_s is None:
                    w.sent_s = now_s
                due = w.sent_s + latency_s
                if now_s >= due:
                    w.book = book_of(symbol)  # None (no usable book): asked again at the next cycle
                elif next_due is None or due < next_due:
                    next_due = due
        return next_due

    def _cancel_entry(self, symbol: str, ts_ms: int) -> Order | None:
        w = self.pending_entries.pop(symbol, None)
        if w is None:
            return None
        cancelled = w.done(_CANCELLED, ts_ms)
        self.sink.on_order(cancelled)
        if symbol not in self.positions:
            self.active.discard(symbol)
        return cancelled

    def cancel_pending(self) -> list[Order]:
        """Cancel every working entry (stop, kill-switch). Returns the cancelled orders."""
        return [o for o in (self._cancel_entry(s, self._now(s)) for s in list(self.pending_entries)) if o]

    def _now(self, symbol: str) -> int:
        bar = self.last_bar.get(symbol)
        return bar.ts_ms if bar is not None else 0

    def flatten_now(self, reason: FillReason, ts_ms: int) -> list[ClosedTrade]:
        """Close every position whole at the last known price (kill-switch), inside that bar's
        range, paying the spread and impact. A close that cannot be journaled stays a working
        exit, filled from the next bar's open."""
        trades = []
        for symbol in list(self.positions):
            bar = self.last_bar.get(symbol)
            p = self.positions[symbol]
            if bar is None:
                self.request_exit(symbol, reason, ts_ms, latency=False)  # no price yet: the first bar's open
                continue
            self.pending_exits.pop(symbol, None)
            price = self._market(symbol, p.side is _SELL, bar.close, p.qty, bar)
            trade = self._close(p, price, reason, ts_ms, self._taker, False, bar.close)
            if trade is not None:
                trades.append(trade)
        return trades

    def close_at(self, symbol: str, price: float, reason: FillReason, ts_ms: int) -> ClosedTrade | None:
        """Close a position at a given mark (a carried position whose market is gone, end of data)."""
        p = self.positions.get(symbol)
        if p is None:
            return None
        self.pending_exits.pop(symbol, None)
        self._cancel_entry(symbol, ts_ms)
        return self._close(p, price, reason, ts_ms, self._taker, False, price)

    # ------------------------------------------------------------------ bars
    def on_bar(self, bar: Bar) -> None:
        """Settle funding, fill what is due at this bar, check the protective levels, mark."""
        symbol = bar.symbol
        self.last_bar[symbol] = bar
        if symbol not in self.active:
            return
        p = self.positions.get(symbol)
        if p is not None and bar.ts_ms >= self._next_funding.get(symbol, 1 << 62):
            self._settle_funding(symbol, bar.ts_ms)
        w = self.pending_entries.get(symbol)
        if w is not None and bar.ts_ms > w.order.ts_ms:  # never on the decision bar (or a repeat of it)
            self._work_entry(w, bar)
        w = self.pending_exits.get(symbol)
        if w is not None and bar.ts_ms > w.order.ts_ms:
            self._work_exit(w, bar)
        p = self.positions.get(symbol)
        if p is None:
            return
        if symbol in self._liq or ((p.stop or p.target) and symbol not in self.pending_exits):
            self._check_levels(p, bar)  # (a position with no stop, target or liquidation price has no level)
            p = self.positions.get(symbol)
            if p is None:
                return
        p.last_price = bar.close

    # ------------------------------------------------------------- pricing
    def _market(self, symbol: str, buying: bool, ref: float, qty: float, bar: Bar) -> float:
        """A market fill's price for ``qty`` from ``ref`` (spread + impact on the bar), inside the
        bar's range, on the instrument's tick."""
        price = market_price(buying, ref, qty, bar, self._spread_bps, self._impact)
        inst = self.instruments.get(symbol)
        return round_price(inst, price, buying, bar.low, bar.high) if inst is not None else price

    def _take(self, symbol: str, buying: bool, ref: float, qty: float, bar: Bar,
              book: Book | None = None) -> tuple[float, float, float]:
        """(price, qty, reference) of a market fill: the order's captured book walked when it has
        one (at most its depth, inside the bar's range, slippage from the book's mid), else spread
        + impact on the bar from ``ref``."""
        if book is not None and not self._ideal:
            price, got = walk_book(book.levels(buying), qty)
            if got > 0.0:
                inst = self.instruments.get(symbol)
                price = min(max(price, bar.low), bar.high)
                if inst is not None:
                    price = round_price(inst, price, buying, bar.low, bar.high)
                    got = round_qty(inst, got) if inst.qty_step > 0.0 else got
                if got > 0.0:
                    return price, got, book.mid
        return self._market(symbol, buying, ref, qty, bar), qty, ref

    def _tranche(self, symbol: str, remaining: float, bar: Bar) -> float:
        """The part of ``remaining`` this bar can fill (participation cap, lot step)."""
        qty = participation_qty(remaining, bar.volume, self._cap)
        inst = self.instruments.get(symbol)
        if inst is not None and inst.qty_step > 0.0:
            qty = round_qty(inst, qty)
        return qty

    # --------------------------------------------------------------- entries
    def _work_entry(self, w: Working, bar: Bar) -> None:
        if w.wait > 0:
            w.wait -= 1
            return
        w.age += 1
        book, w.book, w.sent_s = w.book, None, None  # a book serves one bar; the rest is sent again
        plan = w.decision.plan
        symbol = plan.symbol
        buying = plan.side is _BUY
        inst = self.instruments.get(symbol) or Instrument(symbol=symbol)
        first = w.filled == 0.0
        if first:
            reject = self._entry_rules(inst, plan.side, w.order.qty, bar)
            if reject:
                self._reject_entry(w, reject, bar.ts_ms)
                return
        qty = min(self._tranche(symbol, w.remaining, bar), w.remaining)
        # the whole order at this open has just passed the same check (``_entry_rules``)
        if qty > 0.0 and not (first and qty == w.order.qty) and check_order(inst, qty, bar.open,
                                                                           self.cfg.min_notional_usd):
            qty = 0.0  # a tranche below the exchange minimums waits for a bar with more volume
        if qty > 0.0:
            price, qty, ref = self._take(symbol, buying, bar.open, qty, bar, book)
            fee = qty * price * self._taker
            leverage = inst.leverage if inst.kind is _PERP else 0.0
            need = entry_cost(leverage, qty, price, fee)
            available = self.available_usd
            if need > available:
                what = "insufficient_margin" if leverage > 0.0 else "insufficient_cash"
                reason = f"{what}: need {need:.2f}, available {available:.2f} USD"
                if w.filled == 0.0:
                    self._reject_entry(w, reason, bar.ts_ms)
                else:
                    self._cancel_entry(symbol, bar.ts_ms)
                return
            if not self._fill_entry(w, inst, leverage, qty, price, fee, bar, ref):
                return
        if w.remaining > 0.0 and w.age >= self.cfg.cancel_after_bars:
            self._cancel_entry(symbol, bar.ts_ms)

    def _entry_rules(self, inst: Instrument, side: Side, qty: float, bar: Bar) -> str:
        if side is _SELL and inst.kind is not _PERP:
            return f"short_not_allowed: {inst.symbol} is spot"
        return check_order(inst, qty, bar.open, self.cfg.min_notional_usd)

    def _reject_entry(self, w: Working, reason: str, ts_ms: int) -> None:
        symbol = w.order.symbol
        del self.pending_entries[symbol]
        if symbol not in self.positions:
            self.active.discard(symbol)
        self.sink.on_order(w.done(_REJECTED, ts_ms, reason))

    def _fill_entry(self, w: Working, inst: Instrument, leverage: float, qty: float, price: float, fee: float,
                    bar: Bar, ref: float) -> bool:
        plan = w.decision.plan
        symbol = plan.symbol
        fill = Fill(
            fill_id=self._next_id("f"), order_id=w.order.order_id, ts_ms=bar.ts_ms, symbol=symbol, side=plan.side,
            qty=qty, price=price, fee_usd=fee, reason=_ENTRY, ref_price=ref,
        )  # fmt: skip
        before = self.positions.get(symbol)
        if before is None:
            position = Position(
                position_id=self._prefix + plan.plan_id,  # unique for the life of the DB: run prefix + plan
                plan_id=plan.plan_id, strategy=plan.strategy, symbol=symbol, side=plan.side, qty=qty,
                entry_price=price, stop=plan.stop, target=plan.target, ts_open_ms=bar.ts_ms,
                nominal_r_usd=w.decision.nominal_r_usd, entry_fee_usd=fee, last_price=price, leverage=leverage,
                maint_margin_rate=inst.maint_margin_rate if leverage > 0.0 else 0.0,
            )  # fmt: skip
            ok = self.sink.commit_open(fill, position, w.decision)
        else:
            position = increased(before, qty, price, fee)
            ok = self.sink.commit_increase(fill, before, position)
        if not ok:
            if w.filled == 0.0:
                self._reject_entry(w, "storage: the fill could not be journaled", bar.ts_ms)
            else:
                self._cancel_entry(symbol, bar.ts_ms)
            return False
        self.cash_usd += open_cash(leverage, plan.side, qty, price, fee)
        position.last_price = price
        self.positions[symbol] = position
        self._levels(position)
        w.filled += qty
        w.remaining = w.order.qty - w.filled
        if w.remaining <= w.order.qty * 1e-12:
            w.remaining = 0.0
            del self.pending_entries[symbol]
            self.sink.on_order(w.done(_FILLED, bar.ts_ms))
        else:
            self.sink.on_order(w.done(_PARTIAL, bar.ts_ms))
        if before is None:
            self.sink.on_open(position, w.decision)
        return True

    def _levels(self, p: Position) -> None:
        """Cache the liquidation price and the next funding time of ``p``."""
        symbol = p.symbol
        if p.leverage > 0.0:
            self._liq[symbol] = liquidation_price(p.side is _BUY, p.entry_price, p.leverage, p.maint_margin_rate)
        else:
            self._liq.pop(symbol, None)
        if symbol in self._perp and self.funding is not None:
            interval = self.instruments[symbol].funding_interval_ms
            last = max(p.ts_open_ms, p.funding_ts_ms)
            self._next_funding[symbol] = (last // interval + 1) * interval

    # ---------------------------------------------------------------- exits
    def _work_exit(self, w: Working, bar: Bar) -> None:
        if w.wait > 0:
            w.wait -= 1
            return
        w.age += 1
        symbol = w.order.symbol
        p = self.positions.get(symbol)
        if p is None:
            del self.pending_exits[symbol]
            return
        self._exit_tranche(p, w, bar.open, bar)

    def _exit_tranche(self, p: Position, w: Working, ref: float, bar: Bar) -> None:
        """Fill what this bar can take of a working exit at market from ``ref`` (or its captured book)."""
        book, w.book, w.sent_s = w.book, None, None  # a book serves one bar; the rest is sent again
        qty = min(self._tranche(p.symbol, w.remaining, bar), p.qty)
        if qty <= 0.0:
            return
        buying = p.side is _SELL
        price, qty, ref = self._take(p.symbol, buying, ref, qty, bar, book)
        if qty >= p.qty * (1.0 - 1e-12):
            del self.pending_exits[p.symbol]
            if self._close(p, price, w.reason, bar.ts_ms, self._taker, False, ref, w.order) is None:
                self.pending_exits[p.symbol] = w
            return
        fee = qty * price * self._taker
        fill = Fill(
            fill_id=self._next_id("f"), order_id=w.order.order_id, ts_ms=bar.ts_ms, symbol=p.symbol,
            side=p.side.opposite, qty=qty, price=price, fee_usd=fee, reason=w.reason, ref_price=ref,
        )  # fmt: skip
        after = reduced(p, qty, price, fee)
        if not self.sink.commit_reduce(fill, p, after):
            return
        self.cash_usd += exit_cash(p, qty, price, fee)
        after.last_price = price
        self.positions[p.symbol] = after
        w.filled += qty
        w.remaining = after.qty
        self.sink.on_order(w.done(_PARTIAL, bar.ts_ms))

    def _check_levels(self, p: Position, bar: Bar) -> None:
        """Liquidation, stop and target along the adverse path from the bar's open."""
        long = p.side is _BUY
        liq = self._liq.get(p.symbol)
        exiting = p.symbol in self.pending_exits  # an exit already works: the stop order is gone
        stop = p.stop  # 0.0: none
        if long:
            liq_hit = liq is not None and bar.low <= liq
            stop_hit = not exiting and bar.low <= stop
            liq_first = liq_hit and (not stop_hit or liq >= stop or bar.open <= liq)
        else:
            liq_hit = liq is not None and bar.high >= liq
            stop_hit = not exiting and stop > 0.0 and bar.high >= stop
            liq_first = liq_hit and (not stop_hit or liq <= stop or bar.open >= liq)
        if liq_first:
            self._liquidate(p, bar)
            return
        if exiting:
            return
        if stop_hit:
            ref = min(bar.open, p.stop) if long else max(bar.open, p.stop)
            order = Order(
                order_id=self._next_id("o"), plan_id=p.plan_id, ts_ms=bar.ts_ms, symbol=p.symbol,
                side=p.side.opposite, qty=p.qty, kind="stop_market", reason=_STOP,
            )  # fmt: skip
            self._cancel_entry(p.symbol, bar.ts_ms)
            self.sink.on_order(order)
            w = Working(order, None, _STOP, 0)
            w.age = 1
            self.pending_exits[p.symbol] = w
            self._exit_tranche(p, w, ref, bar)
            rest = self.positions.get(p.symbol)
            if rest is not None and liq_hit:
                self._liquidate(rest, bar)
            return
        if not p.target:
            return
        inst = self.instruments.get(p.symbol)
        target = round_limit(inst, p.target, p.side.opposite) if inst is not None else p.target
        buying = not long
        if limit_fills(buying, target, bar, self.cfg.limit_fill):
            self._cancel_entry(p.symbol, bar.ts_ms)
            price = limit_fill_price(buying, target, bar)
            self._close(p, price, _TARGET, bar.ts_ms, self._maker, True, target)

    def _liquidate(self, p: Position, bar: Bar) -> None:
        """Settle the whole position at its bankruptcy price: its margin is lost, plus the fee."""
        self.pending_exits.pop(p.symbol, None)
        self._cancel_entry(p.symbol, bar.ts_ms)
        price = bankruptcy_price(p.side is _BUY, p.entry_price, p.leverage)
        self._close(p, price, _LIQUIDATION, bar.ts_ms, self._liq_fee, False, price)

    # -------------------------------------------------------------- funding
    def _settle_funding(self, symbol: str, upto_ms: int) -> None:
        """Every funding time up to ``upto_ms`` (inclusive) that the open position was held through."""
        interval = self.instruments[symbol].funding_interval_ms
        t = self._next_funding[symbol]
        while t <= upto_ms:
            p = self.positions.get(symbol)
            if p is None:
                return
            rate = self.funding.rate(symbol, t) if self.funding is not None else None
            if rate is None:
                return  # not known yet: asked again at the next bar, still at the mark of time t
            mark = p.last_price
            amount = funding_amount(p, mark, rate)
            after = funded(p, amount, t)
            if not self.sink.commit_funding(after, t, mark, rate, amount):
                return
            self.cash_usd -= amount
            self.positions[symbol] = after
            t += interval
            self._next_funding[symbol] = t

    # ---------------------------------------------------------------- close
    def _close(
        self, p: Position, price: float, reason: FillReason, ts_ms: int, fee_rate: float, maker: bool = False,
        ref: float = 0.0, order: Order | None = None,
    ) -> ClosedTrade | None:
        """Close the rest of ``p`` once the fill is journaled; if it cannot be, the exit stays
        working and is filled from the next bar's open at market (a stop is never silently
        dropped). ``maker``: a resting limit (the target) that filled as maker."""
        exit_side = p.side.opposite
        fee = p.qty * price * fee_rate
        if order is None:
            kind = "limit" if maker else "liquidation" if reason is _LIQUIDATION else "market"
            order = Order(
                order_id=self._next_id("o"), plan_id=p.plan_id, ts_ms=ts_ms, symbol=p.symbol, side=exit_side,
                qty=p.qty, kind=kind, reason=reason,
            )  # fmt: skip
            self.sink.on_order(order)
        fill = Fill(
            fill_id=self._next_id("f"), order_id=order.order_id, ts_ms=ts_ms, symbol=p.symbol, side=exit_side,
            qty=p.qty, price=price, fee_usd=fee, reason=reason, liquidity="maker" if maker else "taker",
            ref_price=ref or price,
        )  # fmt: skip
        pnl = close_pnl(p, price, fee)
        trade = ClosedTrade(position=p, exit_fill=fill, pnl_usd=pnl, trade_r=pnl / p.nominal_r_usd)
        if not self.sink.commit_close(trade):
            if p.symbol not in self.pending_exits:
                self.pending_exits[p.symbol] = Working(order, None, reason, 0)
            self.active.add(p.symbol)
            return None
        self.cash_usd += exit_cash(p, p.qty, price, fee)
        p.last_price = price
        del self.positions[p.symbol]
        self._liq.pop(p.symbol, None)
        self._next_funding.pop(p.symbol, None)
        if p.symbol not in self.pending_entries:
            self.active.discard(p.symbol)
        self.sink.on_order(order.ended(_FILLED, order.qty, ts_ms))
        self.sink.on_close(trade)
        return trade

    def restore(self, positions: list[Position]) -> None:
        """Adopt positions persisted by an earlier run of the same account."""
        for p in positions:
            self.positions[p.symbol] = p
            self.active.add(p.symbol)
            self._levels(p)

