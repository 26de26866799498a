"""Sizing in R and the hard pre-trade gates."""

from __future__ import annotations

import msgspec

from prod_core.configs.governance import GovernanceConfig
from prod_core.domain import Decision, TradePlan


class RiskSnapshot(msgspec.Struct, frozen=True, gc=False):
    """What risk needs to know about the account when a plan arrives."""

    equity_usd: float
    lock_reason: str = "limits_ok"
    kill_switch: bool = False
    dd_state: float = 0.0
    dd_stopped: bool = False
    safe_mode: bool = False
    holds: frozenset[str] = frozenset()
    feed_ok: bool = True
    storage_ok: bool = True


def cost_rate(cfg: GovernanceConfig) -> float:
    """Fraction of notional paid per market fill (taker fee + adverse slippage)."""
    ex = cfg.execution
    return (ex.taker_fee_bps + ex.slippage_bps) / 10_000.0


def _veto(plan: TradePlan, reason: str, nominal: float, detail: str) -> Decision:
    return Decision(plan=plan, decision=f"vetoed_{reason}", qty=0.0, risk_usd=0.0, nominal_r_usd=nominal, reason=detail)


def evaluate(plan: TradePlan, snap: RiskSnapshot, cfg: GovernanceConfig) -> Decision:
    """Size ``plan`` (``sizing.mode``) or veto it at the hard gates.

    R sizing (default): 1R (nominal) = risk_per_trade_pct of equity; the budget is 1R times the
    drawdown throttle and safe-mode multipliers, capped at max_trade_risk_r, and a stop-out
    costs at most the budget: the loss per unit at the stop counts the price distance plus
    entry and exit costs. Fixed quantity / fixed notional: the configured size times the same
    multipliers; with a stop, a risk beyond max_trade_risk_r * 1R is scaled down. 1R of the
    fixed modes is ``sizing.nominal_r_usd`` (or the R-sizing 1R), so R is still reported.
    """
    sizing = cfg.sizing
    nominal = sizing.nominal_r_usd if sizing.mode != "r" and sizing.nominal_r_usd else \
        snap.equity_usd * cfg.risk.risk_per_trade_pct / 100.0
    if snap.kill_switch:
        return _veto(plan, "kill_switch", nominal, "kill-switch engaged")
    if snap.lock_reason != "limits_ok":
        return _veto(plan, "daily_lock", nominal, f"daily lock: {snap.lock_reason}")
    if snap.dd_stopped or snap.dd_state <= cfg.drawdown.no_entries_at_r:
        return _veto(plan, "drawdown", nominal, f"drawdown stop: dd_state={snap.dd_state:.2f}R")
    if not snap.feed_ok:
        return _veto(plan, "feed_degraded", nominal, "feed health is not 1: no new entries on stale data")
    if not snap.storage_ok:
        return _veto(plan, "storage", nominal, "storage is failing: no new entries until fills can be journaled")
    if plan.strategy in snap.holds:
        return _veto(plan, "strategy_hold", nominal, f"strategy {plan.strategy} on hold")
    if nominal <= 0.0:
        return _veto(plan, "no_equity", nominal, f"equity {snap.equity_usd:.2f} USD")
    distance = plan.risk_per_unit
    if plan.stop and distance / plan.entry * 100.0 < cfg.risk.min_stop_distance_pct:
        return _veto(
            plan, "stop_too_tight", nominal, f"stop {distance / plan.entry * 100:.3f}% < {cfg.risk.min_stop_distance_pct}%"
        )
    multiplier = 1.0
    if snap.dd_state <= cfg.drawdown.throttle_at_r:
        multiplier *= cfg.drawdown.throttle_multiplier
    if snap.safe_mode:
        multiplier *= cfg.portfolio.safe_mode_risk_multiplier
    rate = cost_rate(cfg)
    loss_per_unit = distance + (plan.entry + plan.stop) * rate if plan.stop else 0.0
    if sizing.mode == "r":
        if not plan.stop:
            return _veto(plan, "no_stop", nominal, "R sizing needs a stop: give the entry a stop, or set sizing.mode "
                                                   "to fixed_qty or fixed_notional")
        budget_r = min(multiplier, cfg.risk.max_trade_risk_r)
        qty = nominal * budget_r / loss_per_unit
        decision = "approved" if budget_r >= 1.0 else "resized"
        return Decision(plan=plan, decision=decision, qty=qty, risk_usd=qty * loss_per_unit, nominal_r_usd=nominal)
    if sizing.mode == "fixed_qty":
        base = sizing.size_of(sizing.qty, plan.symbol)
        what = "sizing.qty"
    else:
        notional = sizing.size_of(sizing.notional_usd, plan.symbol)
        base = None if notional is None else notional / plan.entry
        what = "sizing.notional_usd"
    if base is None:
        return _veto(plan, "no_size", nominal, f"{what} has no size for {plan.symbol} (and no '*' entry)")
    qty = base * multiplier
    decision = "approved" if multiplier >= 1.0 else "resized"
    risk = qty * loss_per_unit
    cap = cfg.risk.max_trade_risk_r * nominal
    if risk > cap:
        qty *= cap / risk
        risk = cap
        decision = "resized"
    return Decision(plan=plan, decision=decision, qty=qty, risk_usd=risk, nominal_r_usd=nominal)
