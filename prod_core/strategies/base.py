"""Finding strategy classes (import path, entry point, built-in name) and shared helpers."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from pydantic import ValidationError

from prod_core.domain import Bar, Side
from prod_core.strategies.api import Entry, Strategy, StrategyParams

ENTRY_POINT_GROUP = "crupto.strategies"
BUILTIN = {
    "trend_following": "prod_core.strategies.trend_following:TrendFollowing",
    "mean_reversion": "prod_core.strategies.mean_reversion:MeanReversion",
    "sma_cross": "prod_core.strategies.sma_cross:SmaCross",
}


class StrategyConfigError(ValueError):
    """A strategy entry of governance.yaml that cannot be used; the message says which and why."""


def atr_entry(bar: Bar, side: Side, atr: float, stop_atr: float, target_atr: float, reason: str) -> Entry | None:
    """An entry at the bar's close with stop/target ``stop_atr``/``target_atr`` ATRs away.

    None when the ATR is degenerate (a stop at or below zero, or lost in rounding).
    """
    close = bar.close
    sign = side.sign
    stop = close - sign * stop_atr * atr
    target = close + sign * target_atr * atr
    if not (0.0 < stop < close < target if sign > 0 else 0.0 < target < close < stop):
        return None
    return Entry(side, reason, stop, target)


def resolve_class(name: str, ref: str | None) -> type[Strategy]:
    """The class of strategy ``name``: ``ref`` as ``module:Class``, or an entry point / built-in named ``ref``
    (default: ``name`` itself)."""
    target = ref or name
    if ":" not in target:
        found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == target]
        if found:
            target = found[0].value
        elif target in BUILTIN:
            target = BUILTIN[target]
        else:
            known = sorted({*BUILTIN, *(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))})
            raise StrategyConfigError(
                f"strategies.{name}: no strategy {target!r}: write `class: package.module:ClassName` or use an "
                f"entry point of group {ENTRY_POINT_GROUP!r} (known: {', '.join(known)})"
            )
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or the user's module failing at import
        raise StrategyConfigError(
            f"strategies.{name}: cannot import module {module_name!r} of {target!r}: {type(exc).__name__}: {exc}; "
            "is the package installed in this environment (pip install -e ...) or on PYTHONPATH?"
        ) from None
    cls: Any = module
    for part in attr.split("."):
        cls = getattr(cls, part, None)
        if cls is None:
            raise StrategyConfigError(f"strategies.{name}: module {module_name!r} has no {attr!r} ({target!r})")
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise StrategyConfigError(
            f"strategies.{name}: {target!r} is not a Strategy subclass (prod_core.strategies.Strategy)"
        )
    return cls


@dataclass(frozen=True, slots=True)
class StrategyKind:
    """A configured strategy: its name, class and validated parameters."""

    name: str
    cls: type[Strategy]
    params: StrategyParams

    def build(self, symbol: str, can_short: bool) -> Strategy:
        return self.cls(self.params, name=self.name, symbol=symbol, can_short=can_short)

    @property
    def uses_features(self) -> bool:
        return bool(self.cls.uses_features)


def resolve(name: str, ref: str | None, params: dict[str, Any]) -> StrategyKind:
    """Import and validate one strategy entry of governance.yaml."""
    cls = resolve_class(name, ref)
    try:
        validated = cls.Params.model_validate(params)
    except ValidationError as exc:
        problems = "; ".join(
            f"strategies.{name}.{'.'.join(str(x) for x in e['loc']) or 'params'}: {e['msg']}"
            + (f" (was {e['input']!r})" if "input" in e and not isinstance(e["input"], dict) else "")
            for e in exc.errors()
        )
        raise StrategyConfigError(problems) from None
    return StrategyKind(name, cls, validated)


def build_kinds(strategies: Any) -> dict[str, StrategyKind]:
    """Every strategy of a ``StrategiesConfig``, resolved and validated, in config order."""
    return {name: resolve(name, spec.cls, spec.params) for name, spec in strategies.items()}
