"""Governance configuration (configs/governance.yaml)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, RootModel, model_validator

from prod_core.configs.base import Section

Pct = Annotated[float, Field(gt=0)]
REGIME_KEYS = ("calm", "trend_up", "trend_down", "volatile")
# Sections of governance.yaml whose every key must be written out: a file truncated
# mid-section, or a deleted key, must not fall back to a default silently. The other
# sections (enable maps, strategies, sla) must be present; keys inside them may default
# (a regime missing from an enable map allows no strategy: the safe direction).
EXPLICIT_SECTIONS = ("account", "risk", "daily_lock", "drawdown", "kill_switch", "portfolio", "execution")
# Sections added after the first release: a file without them gets the defaults, which keep
# what older files meant (R sizing; a replay flattens at its end and does not reset governance).
OPTIONAL_SECTIONS = ("sizing", "replay")


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
    safe_mode_corr_excess: float | None = Field(
        0.165, gt=0, le=2,
        description="Engage safe mode when mean correlation exceeds its baseline by this; null = safe mode off "
                    "(no correlation monitor).")
    safe_mode_release_corr_excess: float = Field(0.08, ge=0, le=2, description="Release safe mode below this excess.")
    safe_mode_min_hold_bars: int = Field(48, ge=0, description="Bars safe mode stays engaged at least.")
    safe_mode_risk_multiplier: float = Field(0.5, gt=0, le=1, description="Risk multiplier in safe mode.")
    firm_max_gross_exposure_usd: float | None = Field(
        None, gt=0,
        description="Firm-wide cap on the gross notional (USD) of every paper account sharing the database "
                    "(positions at marks plus working entries); each entry reserves its notional under the "
                    "write lock or is vetoed_firm_gross; null = off.")

    @model_validator(mode="after")
    def _hysteresis(self) -> "PortfolioConfig":
        if self.safe_mode_corr_excess is not None and self.safe_mode_release_corr_excess >= self.safe_mode_corr_excess:
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
    always: tuple[str, ...] = Field(
        (), strict=False,
        description="Strategies allowed in every regime, warm-up included (the regime does not gate them).")
    calm: tuple[str, ...] = Field((), strict=False, description="Strategies allowed in a calm regime.")
    trend_up: tuple[str, ...] = Field((), strict=False, description="Strategies allowed in an up-trend.")
    trend_down: tuple[str, ...] = Field((), strict=False, description="Strategies allowed in a down-trend.")
    volatile: tuple[str, ...] = Field((), strict=False, description="Strategies allowed in a volatile regime.")

    def allowed(self, regime_key: str) -> tuple[str, ...]:
        """Strategies allowed in a regime (``always`` first, then the regime's own list)."""
        own = getattr(self, regime_key, ()) if regime_key != "warmup" else ()
        return tuple(dict.fromkeys((*self.always, *own)))

    def names(self) -> set[str]:
        return {name for key in ("always", *REGIME_KEYS) for name in getattr(self, key)}


class StrategySpec(Section):
    """One strategy of governance.yaml: its class and parameters."""

    model_config = ConfigDict(populate_by_name=True)

    cls: str | None = Field(
        None, alias="class",
        description="`package.module:ClassName`, or the name of an entry point of group crupto.strategies; "
                    "default: the built-in strategy or entry point named like the key.")
    params: dict[str, Any] = Field(default_factory=dict, description="The strategy's parameters (its Params model).")


class StrategiesConfig(RootModel[dict[str, StrategySpec]]):
    """``strategies:`` name -> spec. A spec without ``class`` and ``params`` keys is the parameters
    themselves (the short form of the built-in strategies)."""

    model_config = ConfigDict(frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        out = {}
        for name, spec in data.items():
            if spec is None:
                spec = {}
            if isinstance(spec, dict) and not ({"class", "params", "cls"} & set(spec)):
                spec = {"params": spec}
            out[name] = spec
        return out

    def items(self):
        return self.root.items()

    def __getitem__(self, name: str) -> StrategySpec:
        return self.root[name]

    def __contains__(self, name: object) -> bool:
        return name in self.root

    def __iter__(self):  # type: ignore[override]
        return iter(self.root)

    def __len__(self) -> int:
        return len(self.root)


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


class SizingConfig(Section):
    """How an approved plan becomes a quantity. R sizing is the default; the fixed modes still report R
    against ``nominal_r_usd``."""

    mode: Literal["r", "fixed_qty", "fixed_notional"] = Field(
        "r", description="r: risk 1R (risk_per_trade_pct of equity) to the plan's stop; fixed_qty: `qty` units of "
                         "the symbol; fixed_notional: `notional_usd` at the plan's entry price.")
    qty: dict[str, Annotated[float, Field(gt=0)]] = Field(
        default_factory=dict, description="fixed_qty: symbol -> quantity in base units; key '*' = any other symbol.")
    notional_usd: dict[str, Annotated[float, Field(gt=0)]] = Field(
        default_factory=dict, description="fixed_notional: symbol -> USD notional; key '*' = any other symbol.")
    nominal_r_usd: float | None = Field(
        None, gt=0, description="1R in USD for the fixed modes' R figures; null = risk_per_trade_pct of equity.")

    @model_validator(mode="after")
    def _sizes_given(self) -> "SizingConfig":
        if self.mode == "fixed_qty" and not self.qty:
            raise ValueError("mode fixed_qty needs `qty: {SYMBOL: quantity}` (or '*': quantity for every symbol)")
        if self.mode == "fixed_notional" and not self.notional_usd:
            raise ValueError("mode fixed_notional needs `notional_usd: {SYMBOL: usd}` (or '*': usd for every symbol)")
        return self

    def size_of(self, table: dict[str, float], symbol: str) -> float | None:
        value = table.get(symbol)
        if value is None:
            value = table.get(symbol.replace("/", "").split(":")[0], table.get("*"))
        return value


class ReplayConfig(Section):
    """What a replay does at day boundaries and at the end of its data."""

    flatten_at_end: bool = Field(True, description="Close what is still open at its last close when the data ends.")
    daily_reset: bool = Field(
        False,
        description="At each UTC day of the data: reset the drawdown stop and lift the daily lock, as an operator "
                    "would (`cli reset-dd`, `cli unlock`); each is journaled and listed in the run's summary, so a "
                    "long replay evaluates every day rather than stopping at the first stop.")


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
    strategies: StrategiesConfig = StrategiesConfig({"trend_following": {}, "mean_reversion": {}})
    execution: ExecutionConfig = ExecutionConfig()
    sla: SlaConfig = SlaConfig()
    sizing: SizingConfig = SizingConfig()
    replay: ReplayConfig = ReplayConfig()

    @model_validator(mode="after")
    def _strategies_usable(self) -> "GovernanceConfig":
        """Every strategy imports and its parameters validate; the enable maps name configured strategies."""
        from prod_core.strategies.base import StrategyConfigError, build_kinds

        try:
            build_kinds(self.strategies)
        except StrategyConfigError as exc:
            raise ValueError(str(exc)) from None
        for section in ("enable_map", "safe_mode_enable_map"):
            unknown = sorted(getattr(self, section).names() - set(self.strategies))
            if unknown:
                raise ValueError(
                    f"{section}: unknown strategy {unknown[0]!r}; configured under strategies: "
                    f"{', '.join(self.strategies) or 'none'}"
                )
        return self
