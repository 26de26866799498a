"""Merge the exchange's market rules into the configured instruments (pure, no IO).

The exchange (``load_markets`` via a feed's ``instruments()``) knows each market's price
tick, quantity step, minimum quantity and minimum notional; ``configs/symbols.yaml`` may set
them too. For each configured instrument, a rule the configuration left at 0 is taken from
the exchange; a rule the configuration set wins. A configured rule LOOSER than the
exchange's (a finer tick or step, or one that is not a multiple of the exchange's, a lower
minimum) would let the paper broker fill orders the exchange refuses: it is kept, and a
warning line says so. Kind, leverage, margin and a fixed funding rate always come from the
configuration; a perp's funding interval is the exchange's (it settles on its own schedule),
with a warning when the configuration says otherwise.
"""

from __future__ import annotations

import dataclasses

from prod_core.domain import Instrument

__all__ = ["merge_rules"]

# (field, what it is, True if the config value must be a multiple of the exchange's)
_RULES = (
    ("price_tick", "price tick", True),
    ("qty_step", "quantity step", True),
    ("min_qty", "minimum quantity", False),
    ("min_notional_usd", "minimum notional", False),
)


def _is_multiple(value: float, unit: float) -> bool:
    ratio = value / unit
    return round(ratio) >= 1 and abs(ratio - round(ratio)) <= 1e-9 * max(1.0, ratio)


def _looser(value: float, exchange: float, grid: bool) -> bool:
    if grid:
        return not _is_multiple(value, exchange)
    return value < exchange * (1 - 1e-12)


def merge_rules(configured: dict[str, Instrument],
                exchange: dict[str, Instrument]) -> tuple[dict[str, Instrument], list[str]]:
    """The configured instruments with exchange rules filled in, and warning lines.

    ``configured`` and ``exchange`` are keyed by the configured symbol name. A symbol the
    exchange does not describe keeps its configuration (with a warning); exchange entries
    that are not configured are ignored.
    """
    merged: dict[str, Instrument] = {}
    warnings: list[str] = []
    for name, cfg in configured.items():
        ex = exchange.get(name)
        if ex is None:
            merged[name] = cfg
            warnings.append(f"{name}: the exchange gave no market rules; keeping the configured ones")
            continue
        if ex.kind is not cfg.kind:
            warnings.append(f"{name}: configured as {cfg.kind.value} but the exchange market is {ex.kind.value}")
        update = {}
        for field, what, grid in _RULES:
            mine, theirs = getattr(cfg, field), getattr(ex, field)
            if mine <= 0:
                if theirs > 0:
                    update[field] = theirs
                continue
            if theirs > 0 and _looser(mine, theirs, grid):
                rule = "is not a multiple of" if grid else "is below"
                warnings.append(f"{name}: configured {what} {mine:g} {rule} the exchange's {theirs:g}; "
                                f"paper fills may pass orders the exchange refuses (set {field} to 0 to use "
                                "the exchange's)")
        if cfg.kind is ex.kind and ex.funding_interval_ms > 0 and ex.funding_interval_ms != cfg.funding_interval_ms:
            update["funding_interval_ms"] = ex.funding_interval_ms
            warnings.append(f"{name}: the exchange settles funding every {ex.funding_interval_ms / 3_600_000:g} h, "
                            f"not {cfg.funding_interval_ms / 3_600_000:g} h as configured; using the exchange's "
                            "schedule (funding_interval_h in configs/symbols.yaml)")
        merged[name] = dataclasses.replace(cfg, **update) if update else cfg
    return merged, warnings
