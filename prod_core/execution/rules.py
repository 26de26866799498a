"""Exchange order rules for paper fills: lot steps, price ticks, minimum size and notional.

Pure functions of an ``Instrument`` and plain floats: no IO, no clock. A rule that refuses an
order returns a reason string (never raises) whose code before the colon is stable, so a
metric or report can group rejections by it.

Float robustness: quantities and prices arrive as binary floats of decimal numbers
(``0.3 / 0.1 == 2.9999999999999996``). Rounding to a step counts a value within
``_SLACK_STEPS`` (1e-9) of a step, or within a few float ulps of it for very large step counts,
as lying on that step, then rebuilds the result as ``k * step`` rounded to the step's decimal
places with integer arithmetic (``k * m / 10**d`` for a step of ``m / 10**d``, one correctly
rounded division), so ``round_qty`` of 0.3 with step 0.1 is exactly ``0.3``. We chose this over
``decimal.Decimal`` because it costs a few float operations instead of object allocations and
is exact for every step an exchange publishes (a decimal such as 0.001, 0.5, 5 or 1e-8).
"""

from __future__ import annotations

import math
import sys

from prod_core.domain import Instrument, Side

# A value this close to a whole number of steps (in steps) counts as on it.
_SLACK_STEPS = 1e-9
# Relative float error of ``value / step`` for decimal inputs is about 1.5 ulp; allow 4.
_SLACK_REL = 4.0 * sys.float_info.epsilon
_ONE_PLUS = 1.0 + _SLACK_REL
# From 2**52 steps on a float holds whole step counts only.
_WHOLE = float(2**52)
# Relative tolerance of the minimum-size checks, so float noise never rejects an order at the minimum.
_MIN_TOL = 1e-9


_STEP_PARTS: dict[float, tuple[int, int]] = {}


def _step_parts(step: float) -> tuple[int, int]:
    """``step`` as ``m / scale`` with integer ``m`` and ``scale = 10**d`` (0.001 -> (1, 1000),
    0.5 -> (5, 10), 5 -> (5, 1)); d is at most 15 (a non-decimal step is approximated)."""
    parts = _STEP_PARTS.get(step)
    if parts is None:
        d = next((d for d in range(16) if abs(round(step, d) - step) <= step * 1e-9), 15)
        parts = (round(step * 10**d), 10**d)
        if len(_STEP_PARTS) < 1024:  # a handful of instruments; bounded against a caller's mistake
            _STEP_PARTS[step] = parts
    return parts


def round_qty(inst: Instrument, qty: float) -> float:
    """``qty`` rounded down (toward zero) to a whole number of ``inst.qty_step`` (0 = no step).

    A qty within 1e-9 step of the next step counts as on it (see the module docstring), so
    0.3 with step 0.1 gives 0.3, not 0.2. From 2**52 steps on (beyond any real order) the qty is
    returned as it is: a float holds no remainder there. A non-finite qty is returned unchanged (``check_order``
    refuses it).
    """
    step = inst.qty_step
    if step <= 0.0 or not math.isfinite(qty):
        return qty
    ratio = abs(qty) / step
    if ratio >= _WHOLE:  # no sub-step remainder is representable: already whole
        return qty
    k = math.floor(ratio * _ONE_PLUS + _SLACK_STEPS)
    if k == 0:
        return 0.0
    m, scale = _STEP_PARTS.get(step) or _step_parts(step)
    return k * m / scale if qty > 0.0 else -(k * m / scale)


def _clamp(price: float, low: float, high: float) -> float:
    if price < low:
        return low
    if price > high:
        return high
    return price


def round_price(inst: Instrument, price: float, buying: bool, low: float, high: float) -> float:
    """A taker's fill price on the tick, adverse to the taker, never outside [low, high].

    The price is clamped to [low, high] first, then rounded to a whole ``inst.price_tick``
    (0 = no tick): up for a buy, down for a sell. If that tick lies outside the range, it rounds
    the other way. If no tick price lies within [low, high] at all, the clamped price is returned
    unrounded: on a real exchange every trade, hence the bar's low and high, is on the tick, so
    such a bar only comes from synthetic or corrupted data and we keep the price in the range
    rather than invent a trade outside it.
    """
    price = _clamp(price, low, high)
    ticks = _ticks_around(price, inst.price_tick)
    if ticks is None:
        return price
    up, down = ticks
    tol = inst.price_tick * _SLACK_STEPS  # a bar's low/high a hair off the tick (float noise) still bounds it
    for p in ((up, down) if buying else (down, up)):
        if low - tol <= p <= high + tol:
            return _clamp(p, low, high)
    return price


def _ticks_around(price: float, tick: float) -> tuple[float, float] | None:
    """(the tick price at or above ``price``, the one at or below), float noise forgiven; None
    when there is no tick (0), the price is not finite or too large to have a sub-tick remainder."""
    if tick <= 0.0 or not math.isfinite(price):
        return None
    ratio = price / tick
    if ratio >= _WHOLE:
        return None
    slack = ratio * _SLACK_REL + _SLACK_STEPS
    m, scale = _STEP_PARTS.get(tick) or _step_parts(tick)
    return math.ceil(ratio - slack) * m / scale, math.floor(ratio + slack) * m / scale


def round_limit(inst: Instrument, price: float, side_of_order: Side) -> float:
    """A resting limit price on the tick, on the passive side: a sell limit (a long's target)
    rounds up, a buy limit (a short's target) rounds down, so it never crosses the intended
    price. 0 tick = unchanged."""
    ticks = _ticks_around(price, inst.price_tick)
    if ticks is None:
        return price
    return ticks[0] if side_of_order is Side.SELL else ticks[1]


def _fmt(x: float) -> str:
    return f"{x:.10g}"


def check_order(inst: Instrument, qty: float, price: float, min_notional_usd: float = 0.0) -> str:
    """"" when an order of ``qty`` at ``price`` passes the exchange rules, else the reason.

    The checks run on the qty as the exchange would take it (rounded down to the lot step), in
    order: ``invalid_qty``/``invalid_price`` (not a positive finite number), ``qty_step`` (the qty
    rounds to 0 lots), ``min_qty`` (below ``inst.min_qty``), ``min_notional`` (qty x price below
    max(``inst.min_notional_usd``, ``min_notional_usd``), the latter from ExecutionConfig).
    """
    if not (qty > 0.0 and math.isfinite(qty)):
        return f"invalid_qty: {qty!r}"
    if not (price > 0.0 and math.isfinite(price)):
        return f"invalid_price: {price!r}"
    lots = round_qty(inst, qty)
    if lots <= 0.0:
        return f"qty_step: {_fmt(qty)} is below one lot step {_fmt(inst.qty_step)}"
    if inst.min_qty > 0.0 and lots < inst.min_qty * (1.0 - _MIN_TOL):
        return f"min_qty: {_fmt(lots)} < {_fmt(inst.min_qty)} (exchange minimum)"
    floor_usd = max(inst.min_notional_usd, min_notional_usd)
    notional = lots * price
    if floor_usd > 0.0 and notional < floor_usd * (1.0 - _MIN_TOL):
        return f"min_notional: {notional:.2f} < {floor_usd:.2f} USD"
    return ""
