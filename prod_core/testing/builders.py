"""Small builders for tests: bars, plans, features, decisions, governance configs, a recording broker sink.

Every builder has sensible defaults so a test names only what it is about::

    bar = make_bar(open=100, low=97)           # high/close default around open
    plan = make_plan(side=Side.SELL)           # stop 2% above, target 4% below
    cfg = gov(risk={"risk_per_trade_pct": 1}, execution__slippage_bps=0)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from prod_core.account import lot_body
from prod_core.storage import journal_fill_row, journal_funding_row
from prod_core.configs.governance import GovernanceConfig
from prod_core.domain import Bar, Decision, Fill, Instrument, InstrumentKind, Order, Position, Regime, Side, TradePlan
from prod_core.execution import ClosedTrade
from prod_core.regime import Features

SYMBOL = "BTC/USDT"


def make_bar(
    symbol: str = SYMBOL,
    ts_ms: int = 0,
    open: float = 100.0,  # noqa: A002 - OHLC naming is the convention
    high: float | None = None,
    low: float | None = None,
    close: float | None = None,
    volume: float = 1.0,
) -> Bar:
    """A valid bar: ``close`` defaults to ``open``, ``high``/``low`` to the body's ends."""
    c = open if close is None else close
    h = max(open, c) if high is None else high
    lo = min(open, c) if low is None else low
    if not (lo <= min(open, c) and h >= max(open, c)):
        raise ValueError(f"make_bar: need low <= open,close <= high, was o={open} h={h} l={lo} c={c}")
    return Bar(symbol, ts_ms, open, h, lo, c, volume)


def make_plan(
    side: Side = Side.BUY,
    entry: float = 100.0,
    stop: float | None = None,
    target: float | None = None,
    *,
    symbol: str = SYMBOL,
    strategy: str = "trend_following",
    ts_ms: int = 0,
    plan_id: str | None = None,
    reason: str = "test",
    regime: Regime = Regime.TREND_UP,
) -> TradePlan:
    """A plan with the stop 2% and the target 4% from ``entry`` on the right sides."""
    sign = side.sign
    return TradePlan(
        plan_id=plan_id or f"{strategy}-{symbol}-{ts_ms}",
        ts_ms=ts_ms,
        strategy=strategy,
        symbol=symbol,
        side=side,
        entry=entry,
        stop=entry * (1 - 0.02 * sign) if stop is None else stop,
        target=entry * (1 + 0.04 * sign) if target is None else target,
        reason=reason,
        regime=regime,
    )


def make_decision(
    plan: TradePlan | None = None, qty: float = 1.0, nominal_r_usd: float = 50.0, decision: str = "approved"
) -> Decision:
    """An approved decision for ``plan`` (default ``make_plan()``) with ``qty`` units."""
    plan = plan or make_plan()
    return Decision(plan=plan, decision=decision, qty=qty, risk_usd=qty * plan.risk_per_unit, nominal_r_usd=nominal_r_usd)


def make_features(symbol: str = SYMBOL, **attrs: Any) -> Features:
    """A ``Features`` with any attributes set (regime, atr, ema_fast, ema_slow, mr_mean, mr_var, last_close, ...)."""
    f = Features(symbol)
    f.n = 1_000
    for name, value in attrs.items():
        setattr(f, name, value)
    return f


def make_instruments(perp: tuple[str, ...] = (SYMBOL,), spot: tuple[str, ...] = ("BNB/USDT",)) -> dict[str, Instrument]:
    out = {s: Instrument(symbol=s, kind=InstrumentKind.PERP) for s in perp}
    out.update({s: Instrument(symbol=s, kind=InstrumentKind.SPOT) for s in spot})
    return out


def _merge(base: dict, overrides: dict) -> dict:
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def gov(**overrides: Any) -> GovernanceConfig:
    """The default GovernanceConfig with nested overrides, validated like the YAML file.

    ``gov(risk={"risk_per_trade_pct": 1.0})`` and ``gov(risk__risk_per_trade_pct=1.0)`` are
    the same; unspecified keys keep their defaults.
    """
    nested: dict = {}
    for key, value in overrides.items():
        path = key.split("__")
        node = nested
        for part in path[:-1]:
            node = node.setdefault(part, {})
        if isinstance(value, dict) and isinstance(node.get(path[-1]), dict):
            node[path[-1]] = _merge(node[path[-1]], value)
        else:
            node[path[-1]] = value
    return GovernanceConfig.model_validate(_merge(GovernanceConfig().model_dump(), nested))


@dataclass
class RecordingSink:
    """A ``BrokerSink`` that records every callback in order."""

    orders: list[Order] = field(default_factory=list)
    fills: list[Fill] = field(default_factory=list)
    opens: list[tuple[Position, Decision]] = field(default_factory=list)
    closes: list[ClosedTrade] = field(default_factory=list)
    events: list[tuple[str, Any]] = field(default_factory=list)

    def on_order(self, order: Order) -> None:
        self.orders.append(order)
        self.events.append(("order", order))

    accept: bool = True  # False: every commit fails, as when storage cannot journal

    def on_fill(self, fill: Fill) -> None:
        self.fills.append(fill)
        self.events.append(("fill", fill))

    def commit_open(self, fill: Fill, position: Position, decision: Decision) -> bool:
        if self.accept:
            self.on_fill(fill)
        return self.accept

    def commit_close(self, trade: ClosedTrade) -> bool:
        if self.accept:
            self.on_fill(trade.exit_fill)
        return self.accept

    def commit_increase(self, fill: Fill, before: Position, after: Position) -> bool:
        if self.accept:
            self.on_fill(fill)
        return self.accept

    def commit_reduce(self, fill: Fill, before: Position, after: Position) -> bool:
        if self.accept:
            self.on_fill(fill)
        return self.accept

    def commit_funding(self, after: Position, funding_ts_ms: int, mark: float, rate: float, amount: float) -> bool:
        if self.accept:
            self.events.append(("funding", (after.symbol, funding_ts_ms, mark, rate, amount)))
        return self.accept

    def on_open(self, position: Position, decision: Decision) -> None:
        self.opens.append((position, decision))
        self.events.append(("open", position))

    def on_close(self, trade: ClosedTrade) -> None:
        self.closes.append(trade)
        self.events.append(("close", trade))

    def rejected(self) -> list[Order]:
        return [o for o in self.orders if o.status.value == "rejected"]


def open_write(fill: Fill, position: Position, *, run_id: str, account: str = "paper", ts: float = 0.0):
    """An ``AccountWrite`` that journals ``fill`` opening ``position`` (storage tests)."""
    from prod_core.account import lot_body
    from prod_core.storage import AccountWrite, journal_fill_row

    body = {"day": "", "lot": lot_body(position), "state": {}}
    return AccountWrite(account=account, run_id=run_id, ts=ts, snapshot={},
                        entries=(journal_fill_row(fill, "open", position.position_id, body),),
                        fill=fill, open_position=position)


def close_write(fill: Fill, position_id: str, *, run_id: str, account: str = "paper", pnl_usd: float = 0.0,
                trade_r: float = 0.0, ts: float = 0.0):
    """An ``AccountWrite`` that journals ``fill`` closing ``position_id`` (storage tests)."""
    from prod_core.storage import AccountWrite, journal_fill_row

    return AccountWrite(account=account, run_id=run_id, ts=ts, snapshot={},
                        entries=(journal_fill_row(fill, "close", position_id, {"day": "", "state": {}}),),
                        fill=fill, close=(position_id, fill.ts_ms, fill.price, fill.reason.value, pnl_usd, trade_r))


_JOURNAL_COLUMNS = ("ts_ms", "kind", "event", "fill_id", "position_id", "symbol", "side", "qty", "price", "fee_usd",
                    "reason", "body_json")


@dataclass
class JournalSink(RecordingSink):
    """A ``BrokerSink`` that journals like the pipeline (same row builders) into a list the
    account fold reads: ``fold(account, sink.entries)`` rebuilds what the broker holds."""

    cash_usd: float = 0.0
    entries: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.entries.append({"seq": 1, "kind": "open", "event": "open", "body": {"cash_usd": self.cash_usd, "lots": [],
                                                                                "state": {}}})

    def _add(self, row: tuple[Any, ...]) -> None:
        entry = dict(zip(_JOURNAL_COLUMNS, row, strict=True))
        entry["body"] = json.loads(entry.pop("body_json"))
        entry["seq"] = len(self.entries) + 1
        self.entries.append(entry)

    def commit_open(self, fill: Fill, position: Position, decision: Decision) -> bool:
        if self.accept:
            self._add(journal_fill_row(fill, "open", position.position_id, {"lot": lot_body(position)}))
        return super().commit_open(fill, position, decision)

    def commit_increase(self, fill: Fill, before: Position, after: Position) -> bool:
        if self.accept:
            self._add(journal_fill_row(fill, "increase", after.position_id, {}))
        return super().commit_increase(fill, before, after)

    def commit_reduce(self, fill: Fill, before: Position, after: Position) -> bool:
        if self.accept:
            self._add(journal_fill_row(fill, "reduce", after.position_id, {}))
        return super().commit_reduce(fill, before, after)

    def commit_close(self, trade: ClosedTrade) -> bool:
        if self.accept:
            self._add(journal_fill_row(trade.exit_fill, "close", trade.position.position_id, {}))
        return super().commit_close(trade)

    def commit_funding(self, after: Position, funding_ts_ms: int, mark: float, rate: float, amount: float) -> bool:
        if self.accept:
            self._add(journal_funding_row(after, funding_ts_ms, mark, amount, {"rate": rate}))
        return super().commit_funding(after, funding_ts_ms, mark, rate, amount)


def strategy_answer(cls, f, bar, position=None, *, name: str = "", can_short: bool = True):
    """What a built-in strategy answers on one bar (default parameters, a fresh instance)."""
    strategy = cls(cls.Params(), name=name or cls.__name__, symbol=bar.symbol, can_short=can_short)
    return strategy.on_bar(bar, f, position)


def strategy_plan(cls, name: str, f, bar, can_short: bool):
    """What the pipeline makes of a strategy's answer on a flat symbol: a TradePlan or None."""
    from prod_core.strategies.api import to_plan

    signal = strategy_answer(cls, f, bar, name=name, can_short=can_short)
    return None if signal is None else to_plan(name, bar, signal, f.regime)


def strategy_exits(cls, f, position) -> bool:
    """True when the strategy asks to exit its own ``position`` on a bar."""
    from prod_core.strategies.api import Exit

    return isinstance(strategy_answer(cls, f, make_bar(symbol=position.symbol), position), Exit)


def drain(feed) -> list:
    """Every bar a (replay) feed delivers, polled at time 0 until it is exhausted."""
    feed.start(0.0)
    out = []
    while not feed.exhausted:
        out.extend(feed.poll(0.0))
    return out
