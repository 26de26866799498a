"""Domain value types."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum, StrEnum

import msgspec

STAGES: tuple[str, ...] = (
    "feed",
    "regime",
    "strategy",
    "risk",
    "portfolio",
    "execution",
    "storage",
    "telemetry",
)

_TF_UNITS_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def timeframe_to_ms(timeframe: str) -> int:
    """Convert a ccxt-style timeframe ('1m', '5m', '1h', '1d') to milliseconds."""
    if len(timeframe) < 2 or timeframe[-1] not in _TF_UNITS_MS or not timeframe[:-1].isdigit():
        raise ValueError(f"timeframe must look like '1m', '5m', '1h' or '1d', was {timeframe!r}")
    count = int(timeframe[:-1])
    if count <= 0:
        raise ValueError(f"timeframe must be positive, was {timeframe!r}")
    return count * _TF_UNITS_MS[timeframe[-1]]


class Regime(IntEnum):
    """Market regime codes exported as ``regime_label``."""

    WARMUP = 0
    CALM = 1
    TREND_UP = 2
    TREND_DOWN = 3
    VOLATILE = 4


class Side(StrEnum):
    """Order/position side. ``sign`` (+1 buy, -1 sell) and ``opposite`` (the side that closes a
    position of this side) are plain member attributes: read on the hot path, an enum property
    costs ten times more."""

    BUY = "buy"
    SELL = "sell"

    sign: int
    opposite: "Side"

    def __init__(self, value: str) -> None:
        self.sign = 1 if value == "buy" else -1


Side.BUY.opposite = Side.SELL
Side.SELL.opposite = Side.BUY


class InstrumentKind(StrEnum):
    SPOT = "spot"
    PERP = "perp"


class FillReason(StrEnum):
    ENTRY = "entry"
    STOP = "stop"
    TARGET = "target"
    EXIT_SIGNAL = "exit_signal"
    KILL_SWITCH = "kill_switch"
    LIQUIDATION = "liquidation"


class OrderStatus(StrEnum):
    SUBMITTED = "submitted"
    FILLED = "filled"
    PARTIAL = "partial"
    REJECTED = "rejected"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class Instrument:
    """A tradable symbol with its exchange metadata.

    Exchange rules (0 = unset): ``price_tick`` and ``qty_step`` round prices and quantities,
    ``min_qty`` and ``min_notional_usd`` refuse small orders. A perp trades on isolated margin:
    initial margin = notional / ``leverage``, liquidation when the margin left falls to
    ``maint_margin_rate`` of the notional. ``funding_rate``: a fixed rate per funding
    interval that overrides the feed's rates (None = the feed's). Spot is fully funded.
    """

    symbol: str
    kind: InstrumentKind = InstrumentKind.SPOT
    price_tick: float = 0.0
    qty_step: float = 0.0
    min_qty: float = 0.0
    min_notional_usd: float = 0.0
    leverage: float = 1.0
    maint_margin_rate: float = 0.0
    funding_interval_ms: int = 8 * 3_600_000
    funding_rate: float | None = None

    @property
    def can_short(self) -> bool:
        return self.kind is InstrumentKind.PERP


class Bar:
    """One closed OHLCV candle. Plain slotted class: cheap to build on the hot path.

    ``ts_ms`` is the UTC epoch millisecond of the bar's open.
    """

    __slots__ = ("symbol", "ts_ms", "open", "high", "low", "close", "volume")

    def __init__(
        self,
        symbol: str,
        ts_ms: int,
        open: float,  # noqa: A002 - OHLC naming is the convention
        high: float,
        low: float,
        close: float,
        volume: float,
    ) -> None:
        self.symbol = symbol
        self.ts_ms = ts_ms
        self.open = open
        self.high = high
        self.low = low
        self.close = close
        self.volume = volume

    @staticmethod
    def many(names: Sequence[str], sym: list[int], ts: list[int], ohlcv: list[list[float]]) -> list["Bar"]:
        """Bars from columns (symbol index into ``names``, ts, [o, h, l, c, v] rows): the replay's hot
        path, filled slot by slot without a Python ``__init__`` call per bar (twice as fast)."""
        new = Bar.__new__  # (not ``object.__new__``: the compiled build's Bar is an extension type, types.pxd)
        out: list[Bar] = []
        append = out.append
        for s, t, (o, h, lo, c, v) in zip(sym, ts, ohlcv):
            bar = new(Bar)
            bar.symbol = names[s]
            bar.ts_ms = t
            bar.open = o
            bar.high = h
            bar.low = lo
            bar.close = c
            bar.volume = v
            append(bar)
        return out

    def as_tuple(self) -> tuple[str, int, float, float, float, float, float]:
        return (self.symbol, self.ts_ms, self.open, self.high, self.low, self.close, self.volume)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Bar) and self.as_tuple() == other.as_tuple()

    def __hash__(self) -> int:
        return hash(self.as_tuple())

    def __repr__(self) -> str:
        return (
            f"Bar({self.symbol!r}, ts_ms={self.ts_ms}, o={self.open}, h={self.high}, "
            f"l={self.low}, c={self.close}, v={self.volume})"
        )


class TradePlan(msgspec.Struct, frozen=True, gc=False):
    """A strategy's proposal: enter ``side`` on ``symbol`` near ``entry``, usually with a protective stop.

    ``stop`` / ``target`` 0.0 = none (the position exits on a signal only; R sizing needs a stop)."""

    plan_id: str
    ts_ms: int
    strategy: str
    symbol: str
    side: Side
    entry: float
    stop: float
    target: float
    reason: str
    regime: Regime = Regime.WARMUP

    def __post_init__(self) -> None:
        if not (math.isfinite(self.entry) and self.entry > 0):
            raise ValueError(f"TradePlan.entry must be a positive finite price, was {self.entry!r}")
        for name in ("stop", "target"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"TradePlan.{name} must be a positive finite price or 0 (none), was {value!r}")
        buy = self.side.sign > 0
        if self.stop and not (self.stop < self.entry if buy else self.stop > self.entry):
            raise ValueError(f"{self.side.value} plan needs its stop {'below' if buy else 'above'} the entry, "
                             f"was stop={self.stop} entry={self.entry}")
        if self.target and not (self.target > self.entry if buy else self.target < self.entry):
            raise ValueError(f"{self.side.value} plan needs its target {'above' if buy else 'below'} the entry, "
                             f"was target={self.target} entry={self.entry}")

    @property
    def risk_per_unit(self) -> float:
        """Price distance to the stop; 0.0 without a stop."""
        return abs(self.entry - self.stop) if self.stop else 0.0


class Decision(msgspec.Struct, frozen=True, gc=False):
    """The outcome of the risk/portfolio gates for one plan.

    ``decision`` is ``approved``, ``resized`` or ``vetoed_<reason>``. ``qty`` is 0 on a veto.
    """

    plan: TradePlan
    decision: str
    qty: float
    risk_usd: float
    nominal_r_usd: float
    reason: str = ""

    @property
    def approved(self) -> bool:
        return not self.decision.startswith("vetoed")


class Order(msgspec.Struct, frozen=True, gc=False):
    order_id: str
    plan_id: str
    ts_ms: int
    symbol: str
    side: Side
    qty: float
    kind: str  # market
    reason: FillReason
    status: OrderStatus = OrderStatus.SUBMITTED
    reject_reason: str = ""
    filled_qty: float = 0.0  # filled so far (partial) or in all (filled, cancelled rest)
    done_ms: int = 0  # bar time of the last fill, the rejection or the cancellation

    def ended(self, status: OrderStatus, filled_qty: float, done_ms: int, reject_reason: str = "") -> "Order":
        """This order in a later state."""
        return Order(self.order_id, self.plan_id, self.ts_ms, self.symbol, self.side, self.qty, self.kind, self.reason,
                     status, reject_reason, filled_qty, done_ms)


class Fill(msgspec.Struct, frozen=True, gc=False):
    fill_id: str
    order_id: str
    ts_ms: int
    symbol: str
    side: Side
    qty: float
    price: float
    fee_usd: float
    reason: FillReason
    liquidity: str = "taker"
    ref_price: float = 0.0  # the price the fill model started from (bar open, stop, book mid): slippage is measured from it

    def __post_init__(self) -> None:
        if not (self.qty > 0 and math.isfinite(self.qty)):
            raise ValueError(f"Fill.qty must be positive, was {self.qty!r}")
        if not (self.price > 0 and math.isfinite(self.price)):
            raise ValueError(f"Fill.price must be positive, was {self.price!r}")
        if self.fee_usd < 0:
            raise ValueError(f"Fill.fee_usd must be >= 0, was {self.fee_usd!r}")


class Position(msgspec.Struct, gc=False):
    """An open position. Mutable: execution updates ``last_price`` on every bar.

    ``leverage`` > 0 marks a margined perp (isolated): opening it moves only the fee out of the
    wallet, closing it books ``side * qty * (price - entry)``; 0 is fully funded (spot, and perps
    opened before margin accounting): the notional itself moves. ``entry_price`` is the average
    of the entry fills, ``entry_fee_usd`` their fees, ``funding_usd`` the funding paid (negative:
    received) and ``funding_ts_ms`` the last funding time it settled, ``realized_usd`` the net pnl of
    partial exits so far.
    """

    position_id: str
    plan_id: str
    strategy: str
    symbol: str
    side: Side
    qty: float
    entry_price: float
    stop: float
    target: float
    ts_open_ms: int
    nominal_r_usd: float
    entry_fee_usd: float
    last_price: float
    leverage: float = 0.0
    maint_margin_rate: float = 0.0
    funding_usd: float = 0.0
    funding_ts_ms: int = 0  # the last funding time settled (0: none yet)
    realized_usd: float = 0.0

    @property
    def margined(self) -> bool:
        return self.leverage > 0.0

    @property
    def margin_usd(self) -> float:
        """Margin the position holds: entry notional / leverage (margined), its mark value (funded)."""
        if self.leverage > 0.0:
            return self.qty * self.entry_price / self.leverage
        return self.qty * self.last_price

    @property
    def notional_usd(self) -> float:
        return self.qty * self.last_price

    @property
    def signed_notional_usd(self) -> float:
        return self.side.sign * self.qty * self.last_price

    @property
    def unrealized_usd(self) -> float:
        return self.side.sign * self.qty * (self.last_price - self.entry_price)
