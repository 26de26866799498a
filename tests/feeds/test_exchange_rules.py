"""Market rules: the real ccxt client's load_markets against the fakes, the feed's instruments(), merge_rules."""

from __future__ import annotations

import dataclasses

import asyncio

import pytest

from prod_core.domain import Instrument, InstrumentKind
from prod_core.feeds.ccxt_rest import CcxtRestFeed
from prod_core.feeds.exchanges.client import make_exchange
from prod_core.feeds.exchanges.rules import merge_rules
from prod_core.testing.fake_base import MarketRules
from prod_core.testing.fake_bybit import FakeBybit
from prod_core.testing.fake_exchange import FakeBinance

FAKES = {"binance": FakeBinance, "bybit": FakeBybit}
SPOT, PERP = InstrumentKind.SPOT, InstrumentKind.PERP


def load_markets(fake, symbols):
    async def go():
        ex = make_exchange(fake.name, symbols=symbols, api_url=fake.url, enable_rate_limit=False, timeout_ms=3000)
        try:
            return await ex.load_markets()
        finally:
            await ex.close()

    return asyncio.run(go())


def rules_of(market) -> tuple:
    return (market["precision"]["price"], market["precision"]["amount"], market["limits"]["amount"]["min"],
            market["limits"]["cost"]["min"])


@pytest.mark.parametrize("exchange, symbol, expected", [
    ("binance", "BTC/USDT", (0.01, 0.00001, 0.00001, 5.0)),
    ("binance", "BTC/USDT:USDT", (0.1, 0.001, 0.001, 100.0)),
    ("binance", "ETH/USDT:USDT", (0.01, 0.001, 0.001, 20.0)),
    ("bybit", "BTC/USDT", (0.01, 0.000001, 0.000048, 1.0)),
    ("bybit", "BTC/USDT:USDT", (0.1, 0.001, 0.001, 5.0)),
    ("bybit", "ETH/USDT:USDT", (0.01, 0.01, 0.01, 5.0)),
])
def test_load_markets_through_the_fake_gives_realistic_rules_as_step_sizes(exchange, symbol, expected):
    """ccxt 4.x parses the fake's filters into TICK_SIZE precision (a step, not a digit count) and limits."""
    with FAKES[exchange](max_lifetime_s=30.0) as fake:
        markets = load_markets(fake, (symbol,))
    assert rules_of(markets[symbol]) == expected


@pytest.mark.parametrize("exchange", ["binance", "bybit"])
def test_odd_rules_set_on_the_fake_reach_ccxt(exchange):
    """Rules are constructor arguments of the fake, per (market, symbol)."""
    odd = {("linear", "BTC/USDT"): MarketRules("0.5", "0.002", "0.004", "7"),
           ("spot", "BTC/USDT"): MarketRules("0.05", "0.0003", "0.0006", "11")}
    with FAKES[exchange]({"BTC/USDT": 65000.0}, rules=odd, max_lifetime_s=30.0) as fake:
        markets = load_markets(fake, ("BTC/USDT", "BTC/USDT:USDT"))
    assert rules_of(markets["BTC/USDT:USDT"]) == (0.5, 0.002, 0.004, 7.0)
    assert rules_of(markets["BTC/USDT"]) == (0.05, 0.0003, 0.0006, 11.0)


@pytest.mark.parametrize("exchange", ["binance", "bybit"])
def test_feed_instruments_are_keyed_by_configured_names(exchange):
    """A perp configured as BTC/USDT (market BTC/USDT:USDT) gets its rules under BTC/USDT, kind perp."""
    with FAKES[exchange]({"BTC/USDT": 65000.0, "ETH/USDT": 3400.0}, max_lifetime_s=30.0) as fake:
        feed = CcxtRestFeed(exchange, ("BTC/USDT", "ETH/USDT"), "1m", api_url=fake.url, history_bars=0,
                            market_symbols={"BTC/USDT": "BTC/USDT:USDT"}, start_timeout_s=10.0, timeout_ms=3000)
        feed.start(fake.clock())
        try:
            rules = feed.instrument_rules()
        finally:
            feed.stop()
    assert set(rules) == {"BTC/USDT", "ETH/USDT"}
    btc, eth = rules["BTC/USDT"], rules["ETH/USDT"]
    assert btc.symbol == "BTC/USDT" and btc.kind is PERP and eth.kind is SPOT
    # Bybit publishes each contract's funding interval; Binance's markets do not (0: not published)
    assert btc.funding_interval_ms == (0 if exchange == "binance" else 8 * 3_600_000)
    if exchange == "binance":
        assert (btc.price_tick, btc.qty_step, btc.min_qty, btc.min_notional_usd) == (0.1, 0.001, 0.001, 100.0)
        assert (eth.price_tick, eth.qty_step, eth.min_qty, eth.min_notional_usd) == (0.01, 0.0001, 0.0001, 5.0)
    else:
        assert (btc.price_tick, btc.qty_step, btc.min_qty, btc.min_notional_usd) == (0.1, 0.001, 0.001, 5.0)
        assert (eth.price_tick, eth.qty_step, eth.min_qty, eth.min_notional_usd) == (0.01, 0.00001, 0.00062, 1.0)


# ------------------------------------------------------------------ merge_rules
EX = {"BTC/USDT": Instrument("BTC/USDT", PERP, price_tick=0.1, qty_step=0.001, min_qty=0.001, min_notional_usd=100.0,
                             funding_interval_ms=0)}  # the interval not published (Binance)


def perp(**kw) -> Instrument:
    kw.setdefault("leverage", 3.0)
    kw.setdefault("maint_margin_rate", 0.005)
    kw.setdefault("funding_rate", 0.0002)
    kw.setdefault("funding_interval_ms", 4 * 3_600_000)
    return Instrument("BTC/USDT", PERP, **kw)


def test_merge_rules_fills_unset_rules_from_the_exchange_and_keeps_config_fields():
    """Rules left 0 come from the exchange; kind, leverage, margin and funding stay the config's."""
    merged, warnings = merge_rules({"BTC/USDT": perp()}, EX)
    assert warnings == []
    m = merged["BTC/USDT"]
    assert (m.price_tick, m.qty_step, m.min_qty, m.min_notional_usd) == (0.1, 0.001, 0.001, 100.0)
    assert (m.kind, m.leverage, m.maint_margin_rate, m.funding_rate, m.funding_interval_ms) == (
        PERP, 3.0, 0.005, 0.0002, 4 * 3_600_000)


def test_merge_rules_takes_the_funding_schedule_the_exchange_publishes_with_a_warning():
    """Bybit publishes a contract's funding interval: funding is settled on the exchange's schedule."""
    ex = {"BTC/USDT": dataclasses.replace(EX["BTC/USDT"], funding_interval_ms=4 * 3_600_000)}
    merged, warnings = merge_rules({"BTC/USDT": perp(funding_interval_ms=8 * 3_600_000)}, ex)
    assert merged["BTC/USDT"].funding_interval_ms == 4 * 3_600_000
    assert warnings == ["BTC/USDT: the exchange settles funding every 4 h, not 8 h as configured; using the "
                        "exchange's schedule (funding_interval_h in configs/symbols.yaml)"]
    merged, warnings = merge_rules({"BTC/USDT": perp(funding_interval_ms=4 * 3_600_000)}, ex)
    assert warnings == [] and merged["BTC/USDT"].funding_interval_ms == 4 * 3_600_000


def test_merge_rules_config_wins_when_set_and_stricter_without_warning():
    merged, warnings = merge_rules({"BTC/USDT": perp(price_tick=0.5, qty_step=0.01, min_qty=0.002,
                                                     min_notional_usd=150.0)}, EX)
    assert warnings == []
    m = merged["BTC/USDT"]
    assert (m.price_tick, m.qty_step, m.min_qty, m.min_notional_usd) == (0.5, 0.01, 0.002, 150.0)


@pytest.mark.parametrize("field, value, pattern", [
    ("min_notional_usd", 5.0, r"minimum notional 5 is below the exchange's 100"),
    ("min_qty", 0.0001, r"minimum quantity 0.0001 is below the exchange's 0.001"),
    ("price_tick", 0.01, r"price tick 0.01 is not a multiple of the exchange's 0.1"),
    ("qty_step", 0.0015, r"quantity step 0.0015 is not a multiple of the exchange's 0.001"),
])
def test_merge_rules_config_looser_than_the_exchange_is_kept_with_a_warning(field, value, pattern):
    import re

    merged, warnings = merge_rules({"BTC/USDT": perp(**{field: value})}, EX)
    assert getattr(merged["BTC/USDT"], field) == value
    assert len(warnings) == 1 and re.search(pattern, warnings[0]), warnings
    assert warnings[0].startswith("BTC/USDT: ")


def test_merge_rules_symbol_without_exchange_rules_keeps_config_and_warns():
    cfg = {"SOL/USDT": Instrument("SOL/USDT", SPOT, price_tick=0.01)}
    merged, warnings = merge_rules(cfg, EX)
    assert merged == cfg
    assert warnings == ["SOL/USDT: the exchange gave no market rules; keeping the configured ones"]


def test_merge_rules_kind_mismatch_warns_and_keeps_the_config_kind():
    merged, warnings = merge_rules({"BTC/USDT": Instrument("BTC/USDT", SPOT)}, EX)
    assert merged["BTC/USDT"].kind is SPOT and merged["BTC/USDT"].price_tick == 0.1
    assert warnings == ["BTC/USDT: configured as spot but the exchange market is perp"]


def test_merge_rules_exact_multiples_of_float_steps_do_not_warn():
    """0.3 is 3 x 0.1 even though 0.3 / 0.1 is not exactly 3.0 in binary floats."""
    merged, warnings = merge_rules({"BTC/USDT": perp(price_tick=0.3, qty_step=0.003)}, EX)
    assert warnings == []


@pytest.mark.parametrize("mode, precision, step", [("tick", 0.001, 0.001), ("decimals", 3, 0.001), ("tick", None, 0.0)])
def test_precision_is_read_as_a_step_in_either_ccxt_precision_mode(mode, precision, step):
    """TICK_SIZE (Binance, Bybit): the step itself; DECIMAL_PLACES (other exchanges): 10**-digits."""
    import ccxt

    feed = CcxtRestFeed("binance", ("BTC/USDT",))
    feed._precision_mode = ccxt.TICK_SIZE if mode == "tick" else ccxt.DECIMAL_PLACES
    assert feed._step(precision) == pytest.approx(step)
