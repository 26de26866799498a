"""Instruments and market-data configuration (configs/symbols.yaml)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from prod_core.configs.base import Section
from prod_core.domain import Instrument, InstrumentKind, timeframe_to_ms

SCENARIOS = ("crash", "corr_spike", "feed_outage")
# The sim seeds numpy's SeedSequence (any int >= 0); the bound keeps a seed a signed
# 64-bit integer wherever it travels (SQLite, JSON, numpy int64).
SEED_MAX = 2**63 - 1


def _check_timeframe(value: str) -> str:
    timeframe_to_ms(value)
    return value


class ExchangeConfig(Section):
    id: str = Field("binance", min_length=1, description="ccxt exchange id.")
    timeframe: str = Field("1m", description="Candle timeframe for ccxt feeds.")
    sandbox: bool = Field(
        False,
        description="Use the exchange's testnet URLs for market data. Default false: paper decisions use MAINNET "
                    "public market data; set true only to test against a testnet on purpose.",
    )
    api_url: str | None = Field(
        None, pattern=r"^https?://[^/\s]+(/\S*)?$",
        description="Override the scheme and host of every REST URL (paths kept), e.g. a proxy or a test fake. "
                    "Default: ccxt's own URLs for the exchange.",
    )
    ws_url: str | None = Field(
        None, pattern=r"^wss?://[^/\s]+(/\S*)?$",
        description="Override the scheme and host of every websocket URL (ccxt's host label and path are kept "
                    "under it, see docs/EXCHANGES.md). Default: ccxt's own URLs. Independent of api_url.",
    )
    order_book: bool = Field(
        False,
        description="FEED=ccxt_ws: also stream each symbol's order book; paper market orders are then priced by "
                    "walking the book seen execution.latency_ms after they are sent (docs/EXCHANGES.md). "
                    "Refused at start on other feeds.",
    )

    _tf = field_validator("timeframe")(_check_timeframe)


class SimSymbolConfig(Section):
    start_price: float = Field(100.0, gt=0, description="First simulated price.")
    vol_bps: float = Field(15.0, gt=0, le=1000, description="Calm per-bar volatility, basis points.")
    beta: float = Field(1.0, gt=0, le=5, description="Loading on the common market factor.")


class FundingModelConfig(Section):
    """The simulated market's funding rate per interval: a baseline plus a premium term (the
    price above its recent mean pays longs' funding to shorts) and noise, clamped like an exchange's."""

    base_bps: float = Field(1.0, ge=-300, le=300, description="Baseline rate per interval, basis points (exchanges: 1 = 0.01%).")
    premium_weight: float = Field(
        0.002, ge=0, le=10,
        description="Basis points of rate per basis point of the price's premium over its mean of the interval "
                    "(the sim's 8 h premium is often hundreds of bps: 0.002 keeps rates near real ones, 1-2 bps).",
    )
    noise_bps: float = Field(0.5, ge=0, le=100, description="Standard deviation of the rate's noise, basis points.")
    clamp_bps: float = Field(75.0, gt=0, le=300, description="Rates are clamped to +/- this, basis points.")


class SymbolConfig(Section):
    symbol: str = Field(..., pattern=r"^[A-Z0-9]+/[A-Z0-9]+(:[A-Z0-9]+)?$", description="Unified symbol, e.g. BTC/USDT.")
    kind: Literal["spot", "perp"] = Field("spot", description="spot is long-only; perp can short.")
    sim: SimSymbolConfig = SimSymbolConfig()
    leverage: float = Field(
        3.0, ge=1, le=125,
        description="perp: isolated-margin leverage (initial margin = notional / leverage). spot is fully funded "
                    "(leverage is ignored for spot).",
    )
    maint_margin_rate: float = Field(0.005, ge=0, lt=0.5, description="perp: maintenance margin, fraction of the notional.")
    funding_interval_h: float = Field(8.0, gt=0, le=24, description="perp: hours between funding times (UTC, from midnight).")
    funding_rate: float | None = Field(
        None, ge=-0.03, le=0.03,
        description="perp: a fixed funding rate per interval (0.0001 = 0.01%) instead of the feed's rates. "
                    "null = the exchange's history (ccxt), the replay file's funding_rate column or side file, "
                    "or the sim model.",
    )
    tick_size: float | None = Field(None, gt=0, description="Price tick. null = the exchange's (ccxt feeds) or none.")
    lot_step: float | None = Field(None, gt=0, description="Quantity step. null = the exchange's (ccxt feeds) or none.")
    min_qty: float | None = Field(None, gt=0, description="Smallest order quantity. null = the exchange's or none.")
    min_notional_usd: float | None = Field(None, gt=0, description="Smallest order notional, USD. null = the exchange's or none.")

    @property
    def market_symbol(self) -> str:
        """The ccxt market for the feed: a ``perp`` is the linear contract (``BTC/USDT`` -> ``BTC/USDT:USDT``)."""
        if self.kind == "perp" and ":" not in self.symbol:
            return f"{self.symbol}:{self.symbol.split('/')[1]}"
        return self.symbol

    @model_validator(mode="after")
    def _kind_matches_symbol(self) -> "SymbolConfig":
        if self.kind == "spot" and ":" in self.symbol:
            raise ValueError(f"symbol {self.symbol} is a contract (':SETTLE'); set kind: perp or drop the suffix")
        return self

    def instrument(self) -> Instrument:
        """The instrument as configured (rules left unset are 0: none, or the exchange's on a ccxt feed)."""
        perp = self.kind == "perp"
        return Instrument(
            symbol=self.symbol, kind=InstrumentKind(self.kind),
            price_tick=self.tick_size or 0.0, qty_step=self.lot_step or 0.0, min_qty=self.min_qty or 0.0,
            min_notional_usd=self.min_notional_usd or 0.0,
            leverage=self.leverage if perp else 1.0, maint_margin_rate=self.maint_margin_rate if perp else 0.0,
            funding_interval_ms=int(round(self.funding_interval_h * 3_600_000)),
            funding_rate=self.funding_rate if perp else None,
        )  # fmt: skip


class SimConfig(Section):
    timeframe: str = Field("1m", description="Simulated bar length.")
    bar_interval_s: float = Field(0.25, gt=0, le=3600, description="Wall seconds between simulated bars in paper mode.")
    history_bars: int = Field(300, ge=0, le=100_000, description="Bars delivered at start to warm indicators.")
    seed: int = Field(42, ge=0, le=SEED_MAX, description="Random seed: same seed, same bars.")
    scenario: Literal["crash", "corr_spike", "feed_outage"] | None = Field(None, description="Named stress scenario.")
    scenario_start_bar: int = Field(120, ge=0, description="First live bar of the scenario window.")
    scenario_bars: int = Field(60, ge=1, description="Length of the scenario window, bars.")
    funding: FundingModelConfig = FundingModelConfig()

    _tf = field_validator("timeframe")(_check_timeframe)


class SymbolsConfig(Section):
    exchange: ExchangeConfig = ExchangeConfig()
    symbols: tuple[SymbolConfig, ...] = Field(..., min_length=1, strict=False, description="Instruments to trade.")
    sim: SimConfig = SimConfig()

    @model_validator(mode="after")
    def _unique(self) -> "SymbolsConfig":
        seen: set[str] = set()
        for item in self.symbols:
            if item.symbol in seen:
                raise ValueError(f"symbol {item.symbol} is listed twice")
            seen.add(item.symbol)
        return self

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.symbol for s in self.symbols)

    @property
    def market_symbols(self) -> dict[str, str]:
        """Configured name -> ccxt market symbol (what a ccxt feed asks the exchange for)."""
        return {s.symbol: s.market_symbol for s in self.symbols}
