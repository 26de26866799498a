"""The `exchange` section and symbol kinds as the ccxt feeds read them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from prod_core.configs.symbols import ExchangeConfig, SymbolConfig, SymbolsConfig


def test_defaults_read_mainnet_with_ccxt_urls():
    ex = ExchangeConfig()
    assert ex.sandbox is False and ex.api_url is None and ex.ws_url is None


@pytest.mark.parametrize(("key", "value"), [
    ("api_url", "ws://127.0.0.1:1"), ("api_url", "127.0.0.1:1"), ("ws_url", "http://127.0.0.1:1"),
    ("ws_url", "wss://"),
])
def test_url_overrides_need_the_right_scheme(key, value):
    with pytest.raises(ValidationError, match=key):
        ExchangeConfig(**{key: value})


def test_rest_and_ws_hosts_are_set_separately():
    ex = ExchangeConfig(api_url="https://proxy.example/binance", ws_url="wss://proxy.example:9443")
    assert (ex.api_url, ex.ws_url) == ("https://proxy.example/binance", "wss://proxy.example:9443")


@pytest.mark.parametrize(("symbol", "kind", "market"), [
    ("BTC/USDT", "spot", "BTC/USDT"),
    ("BTC/USDT", "perp", "BTC/USDT:USDT"),
    ("ETH/USDC", "perp", "ETH/USDC:USDC"),
    ("BTC/USDT:USDT", "perp", "BTC/USDT:USDT"),
])
def test_perp_maps_to_the_linear_contract(symbol, kind, market):
    assert SymbolConfig(symbol=symbol, kind=kind).market_symbol == market


def test_a_contract_symbol_cannot_be_spot():
    with pytest.raises(ValidationError, match="contract.*kind: perp"):
        SymbolConfig(symbol="BTC/USDT:USDT", kind="spot")


def test_market_symbols_keep_configured_names():
    cfg = SymbolsConfig(symbols=[{"symbol": "BTC/USDT", "kind": "perp"}, {"symbol": "BNB/USDT"}])
    assert cfg.market_symbols == {"BTC/USDT": "BTC/USDT:USDT", "BNB/USDT": "BNB/USDT"}
    assert cfg.names == ("BTC/USDT", "BNB/USDT")
