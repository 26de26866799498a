"""Governance configuration (configs/governance.yaml)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from prod_core.configs.base import Section

Pct = Annotated[float, Field(gt=0)]
STRATEGY_NAMES = ("trend_following", "mean_reversion")
REGIME_KEYS = ("calm", "trend_up", "trend_down", "volatile")
# Sections of governance.yaml whose every key must be written out: a file truncated
# mid-section, or a deleted key, must not fall back to a default silently. The other
# sections (enable maps, strategies, sla) must be present; keys inside them may default
# (a regime missing from an enable map allows no strategy: the safe direction).
EXPLICIT_SECTIONS = ("account", "risk", "daily_lock", "drawdown", "kill_switch", "portfolio", "execution")


class AccountConfig(Section):
    starting_equity_usd: float = Field(10_000.0, gt=0, description="Paper equity at the first ever run, USD.")


class RiskConfig(Section):
    risk_per_trade_pct: float = Field(0.5, gt=0, le=5, description="1R as a percent of equity at plan time.")
    max_trade_risk_r: float = Field(1.0, gt=0, le=3, description="Largest risk of one plan, in R.")
    min_stop_distance_pct: float = Field(0.05, ge=0, lt=50, description="Veto plans whose stop is closer than this % of entry.")


class DailyLockConfig(Section):
    max_daily_loss_r: float = Field(3.0, gt=0, description="Lock when the day's realised+open R <= -this.")
    max_trades: int = Field(30, gt=0, description="Lock after this many entries filled in a UTC day.")
    max_consecutive_losses: int = Field(6, gt=0, description="Lock after this many losing trades in a row.")


class DrawdownConfig(Section):
    throttle_at_r: float = Field(-1.0, lt=0, description="dd_state at or below this throttles risk.")
    throttle_multiplier: float = Field(0.5, gt=0, le=1, description="Risk multiplier while throttled.")
    no_entries_at_r: float = Field(-1.8, lt=0, description="dd_state at or below this blocks new entries.")
    critical_max_dd_r: float = Field(1.5, gt=0, description="max_dd_r at or above this fires DrawdownCritical.")

    @model_validator(mode="after")
    def _ladder_order(self) -> "DrawdownConfig":
        if self.no_entries_at_r >= self.throttle_at_r:
            raise ValueError(
                f"no_entries_at_r ({self.no_entries_at_r}) must be below throttle_at_r ({self.throttle_at_r}): "
                "the ladder goes normal -> throttled -> no entries"
            )
        return self


class KillSwitchConfig(Section):
    auto_at_max_dd_r: float | None = Field(None, gt=0, description="Engage the kill-switch at this max_dd_r; null = manual only.")


class PortfolioConfig(Section):
    max_open_positions: int = Field(4, gt=0, description="Most positions open at once.")
    max_gross_exposure_pct: float = Field(150.0, gt=0, description="Sum of |notional| as % of equity.")
    max_net_exposure_pct: float = Field(100.0, gt=0, description="|long - short| notional as % of equity.")
    max_symbol_exposure_pct: float = Field(50.0, gt=0, description="|notional| of one symbol as % of equity.")
    correlation_window_bars: int = Field(96, ge=10, description="EWMA span (bars) of the rolling pairwise return correlation.")
    correlation_baseline_bars: int = Field(2880, ge=10, description="EWMA span (bars) of the correlation's own slow baseline.")
    safe_mode_corr_excess: float = Field(0.165, gt=0, le=2, description="Engage safe mode when mean correlation exceeds its baseline by this.")
    safe_mode_release_corr_excess: float = Field(0.08, ge=0, le=2, description="Release safe mode below this excess.")
    safe_mode_min_hold_bars: int = Field(48, ge=0, description="Bars safe mode stays engaged at least.")
    safe_mode_risk_multiplier: float = Field(0.5, gt=0, le=1, description="Risk multiplier in safe mode.")

    @model_validator(mode="after")
    def _hysteresis(self) -> "PortfolioConfig":
        if self.safe_mode_release_corr_excess >= self.safe_mode_corr_excess:
            raise ValueError(
                f"safe_mode_release_corr_excess ({self.safe_mode_release_corr_excess}) must be below "
                f"safe_mode_corr_excess ({self.safe_mode_corr_excess}) for hysteresis"
            )
        if self.correlation_baseline_bars <= self.correlation_window_bars:
            raise ValueError(
                f"correlation_baseline_bars ({self.correlation_baseline_bars}) must be longer than "
                f"correlation_window_bars ({self.correlation_window_bars})"
            )
        if self.max_net_exposure_pct > self.max_gross_exposure_pct:
            raise ValueError("max_net_exposure_pct cannot exceed max_gross_exposure_pct")
        return self


class EnableMap(Section):
    calm: tuple[str, ...] = Field((), strict=False, description="Strategies allowed in a calm regime.")
    trend_up: tuple[str, ...] = Field((), strict=False, description="Strategies allowed in an up-trend.")
    trend_down: tuple[str, ...] = Field((), strict=False, description="Strategies allowed in a down-trend.")
    volatile: tuple[str, ...] = Field((), strict=False, description="Strategies allowed in a volatile regime.")

    @model_validator(mode="after")
    def _known_strategies(self) -> "EnableMap":
        for regime in REGIME_KEYS:
            for name in getattr(self, regime):
                if name not in STRATEGY_NAMES:
                    raise ValueError(f"{regime}: unknown strategy {name!r}; known: {', '.join(STRATEGY_NAMES)}")
        return self

    def allowed(self, regime_key: str) -> tuple[str, ...]:
        return getattr(self, regime_key, ())


class TrendFollowingConfig(Section):
    fast_bars: int = Field(20, ge=2, description="Fast EMA length.")
    slow_bars: int = Field(60, ge=3, description="Slow EMA length.")
    stop_atr: float = Field(2.0, gt=0, description="Stop distance in ATRs.")
    target_atr: float = Field(4.0, gt=0, description="Target distance in ATRs.")

    @model_validator(mode="after")
    def _fast_below_slow(self) -> "TrendFollowingConfig":
        if self.fast_bars >= self.slow_bars:
            raise ValueError(f"fast_bars ({self.fast_bars}) must be below slow_bars ({self.slow_bars})")
        return self


class MeanReversionConfig(Section):
    lookback_bars: int = Field(40, ge=5, description="Bars in the mean/deviation estimate.")
    entry_z: float = Field(2.0, gt=0, description="Enter when price deviates this many sigmas.")
    stop_atr: float = Field(1.5, gt=0, description="Stop distance in ATRs beyond entry.")
    target_atr: float = Field(1.5, gt=0, description="Target distance in ATRs.")


class StrategiesConfig(Section):
    trend_following: TrendFollowingConfig = TrendFollowingConfig()
    mean_reversion: MeanReversionConfig = MeanReversionConfig()


class ExecutionConfig(Section):
    taker_fee_bps: float = Field(7.5, ge=0, le=100, description="Taker fee, basis points of notional.")
    maker_fee_bps: float = Field(2.0, ge=0, le=100, description="Maker fee, basis points of notional.")
    slippage_bps: float = Field(
        2.0, ge=0, le=500,
        description="Half the bid-ask spread a market order pays on top of the reference price, basis points.",
    )
    min_notional_usd: float = Field(10.0, ge=0, description="Orders below this notional are rejected.")
    reject_rate_window: int = Field(50, gt=0, description="Orders in the rolling reject-rate window.")
    fill_model: Literal["ideal_next_open", "market"] = Field(
        "market",
        description="ideal_next_open: market orders fill whole at the next bar's open, no spread, impact or cap "
                    "(the parity scenario); market: spread + impact, latency, participation cap.",
    )
    impact_coef: float = Field(
        0.0, ge=0, le=10,
        description="Square-root market impact: impact_bps = coef * bar range (bps) * sqrt(order notional / bar "
                    "notional volume). 0 = none.",
    )
    latency_bars: int = Field(0, ge=0, le=100, description="Whole bars an order waits before it may fill (0 = the next bar's open).")
    latency_ms: int = Field(
        0, ge=0, le=60_000,
        description="On a feed with an order book (exchange.order_book on FEED=ccxt_ws): an order is priced on the "
                    "book this many ms after it is sent (it still fills at its bar, inside the bar's range). "
                    "Candle feeds ignore it (their latency is latency_bars).",
    )
    max_participation_pct: float | None = Field(
        None, gt=0, le=100,
        description="A market order takes at most this % of a bar's volume; the rest works on the following bars. "
                    "null = no cap.",
    )
    cancel_after_bars: int = Field(5, ge=1, le=10_000, description="An entry's unfilled rest is cancelled after working this many bars.")
    limit_fill: Literal["through", "touch"] = Field(
        "through",
        description="A resting limit (the target) fills when the market trades through its price, or on a touch.",
    )
    liquidation_fee_bps: float = Field(50.0, ge=0, le=500, description="Fee of a liquidation, basis points of the notional at the bankruptcy price.")


class SlaConfig(Section):
    stage_latency_ms: float = Field(50.0, gt=0, description="Per-stage p95 latency SLA, milliseconds.")


class GovernanceConfig(Section):
    account: AccountConfig = AccountConfig()
    risk: RiskConfig = RiskConfig()
    daily_lock: DailyLockConfig = DailyLockConfig()
    drawdown: DrawdownConfig = DrawdownConfig()
    kill_switch: KillSwitchConfig = KillSwitchConfig()
    portfolio: PortfolioConfig = PortfolioConfig()
    enable_map: EnableMap = EnableMap(
        calm=("mean_reversion",), trend_up=("trend_following",), trend_down=("trend_following",)
    )
    safe_mode_enable_map: EnableMap = EnableMap(calm=("mean_reversion",), trend_up=("trend_following",))
    strategies: StrategiesConfig = StrategiesConfig()
    execution: ExecutionConfig = ExecutionConfig()
    sla: SlaConfig = SlaConfig()
