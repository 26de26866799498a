"""The strategy API: what a quant writes to paper-trade an idea (docs/STRATEGIES.md).

A strategy is a class with validated parameters and one hook::

    class SmaCross(Strategy[SmaParams]):
        Params = SmaParams                      # a pydantic model (StrategyParams)
        uses_features = False                   # True: wants the regime detector's Features

        def setup(self) -> None:                # per-symbol state (one instance per symbol)
            self.closes = []

        @property
        def warmup_bars(self) -> int:           # bars before a signal can mean anything
            return self.params.slow

        def on_bar(self, bar, features, position):
            ...
            return self.buy("fast above slow")  # an entry (optionally stop=/target=),
            return self.exit("fast below slow") # an exit of its own position,
            return None                         # or nothing

The runner builds one instance per (strategy, symbol) and calls ``on_bar`` on every clean
bar of the symbol, whatever the regime, so indicator state keeps up. What happens to the
answer is governance's: an entry is taken only when the symbol is flat, the strategy is
enabled in the current regime (``enable_map``; ``always`` = every regime, warm-up included),
not on hold and past its ``warmup_bars``; it then goes through risk sizing and the portfolio
limits like any plan. An exit applies only to the position the strategy opened. A strategy
never sizes, never reads the clock and never does IO. An exception inside ``on_bar`` holds the
strategy (audited, alerted); the runner goes on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Generic, TypeVar

import msgspec
import numpy as np
from pydantic import BaseModel, ConfigDict

from prod_core.domain import Bar, Position, Regime, Side, TradePlan
from prod_core.regime import Features

# Enum members on the hot path are read as module globals: on Python 3.11 ``Side.BUY`` costs ~150 ns
# more than a global (``EnumType.__getattr__`` sends every attribute lookup on an enum class down
# the slow path), and a fill reads a dozen of them.
_BUY, _SELL = Side.BUY, Side.SELL


class StrategyParams(BaseModel):
    """Base of a strategy's parameters: frozen, unknown keys refused, strict types (as YAML gives them)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)


P = TypeVar("P", bound=StrategyParams)


class Entry(msgspec.Struct, frozen=True, gc=False):
    """Enter ``side`` at the next fill. ``stop`` / ``target`` are prices, 0.0 = none (exit on a
    signal only; R sizing needs a stop). ``entry`` is the reference price (default: the bar's close)."""

    side: Side
    reason: str = ""
    stop: float = 0.0
    target: float = 0.0
    entry: float = 0.0


class Exit(msgspec.Struct, frozen=True, gc=False):
    """Close the strategy's own position at the next fill."""

    reason: str = ""


Signal = Entry | Exit | None


@dataclass(frozen=True, slots=True)
class Scan:
    """What ``Strategy.scan`` answers for a run of bars: per bar, the signal ``on_bar`` would have
    given with no position (``entry``: +1 buy, -1 sell, 0 none) and with its own long or short
    position (``exit_long`` / ``exit_short``: True = exit). ``*_reason`` are the signals' reasons.
    An entry from a scan has no stop and no target."""

    entry: np.ndarray  # int8, one per bar
    exit_long: np.ndarray  # bool
    exit_short: np.ndarray  # bool
    buy_reason: str = ""
    sell_reason: str = ""
    exit_long_reason: str = ""
    exit_short_reason: str = ""

    def events(self) -> np.ndarray:
        """The bars where some signal is given, whatever the position (bool per bar)."""
        return (self.entry != 0) | self.exit_long | self.exit_short

    def signal(self, i: int, position: Position | None) -> Signal:
        """The ``on_bar`` answer for bar ``i`` given the strategy's own ``position``."""
        if position is None:
            e = self.entry[i]
            if e > 0:
                return Entry(_BUY, self.buy_reason)
            if e < 0:
                return Entry(_SELL, self.sell_reason)
            return None
        if position.side is _BUY:
            return Exit(self.exit_long_reason) if self.exit_long[i] else None
        return Exit(self.exit_short_reason) if self.exit_short[i] else None


class Strategy(Generic[P]):
    """Base class of every strategy (built-in ones included). See the module doc."""

    Params: ClassVar[type[StrategyParams]] = StrategyParams
    uses_features: ClassVar[bool] = True

    def __init__(self, params: P, *, name: str, symbol: str, can_short: bool = False) -> None:
        self.params = params
        self.name = name
        self.symbol = symbol
        self.can_short = can_short
        self.setup()

    def setup(self) -> None:
        """Create per-symbol state (called once, at construction)."""

    @property
    def warmup_bars(self) -> int:
        """Bars of the symbol this strategy must see before its entries are taken."""
        return 0

    def on_bar(self, bar: Bar, features: Features | None, position: Position | None) -> Signal:
        """One bar of ``self.symbol``. ``features`` is None when no configured strategy uses them
        (the regime detector does not run); ``position`` is this strategy's open position, if any."""
        raise NotImplementedError

    def scan(self, ts_ms: np.ndarray, ohlcv: np.ndarray) -> Scan | None:
        """Optional vectorised twin of ``on_bar`` for a replay: consume a run of this symbol's
        clean bars (``ts_ms`` int64, ``ohlcv`` float64 (n, 5)) exactly as ``on_bar`` called on each
        would (same state afterwards) and answer, per bar, what ``on_bar`` would have returned
        with and without a position. Return None when the strategy has no scan: the default. A
        replay whose strategies all scan skips the bars where nothing can happen (docs/PERFORMANCE.md);
        a scan's answers must equal ``on_bar``'s (test it the way tests/strategies/test_sma_scan.py does)."""
        return None

    # Helpers for the return value.
    def buy(self, reason: str = "", *, stop: float = 0.0, target: float = 0.0) -> Entry:
        return Entry(_BUY, reason, stop, target)

    def sell(self, reason: str = "", *, stop: float = 0.0, target: float = 0.0) -> Entry:
        return Entry(_SELL, reason, stop, target)

    def exit(self, reason: str = "") -> Exit:
        return Exit(reason)


def scans(strategy: Strategy) -> bool:
    """True when ``strategy`` overrides ``Strategy.scan``."""
    return type(strategy).scan is not Strategy.scan


def to_plan(strategy: str, bar: Bar, entry: Entry, regime: Regime = Regime.WARMUP) -> TradePlan:
    """The ``TradePlan`` of an ``Entry`` answered on ``bar`` (ValueError: stop/target on the wrong side)."""
    return TradePlan(plan_id=f"{strategy}-{bar.symbol}-{bar.ts_ms}", ts_ms=bar.ts_ms, strategy=strategy,
                     symbol=bar.symbol, side=entry.side, entry=entry.entry or bar.close, stop=entry.stop,
                     target=entry.target, reason=entry.reason, regime=regime)
