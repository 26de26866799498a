"""``exchange.order_book`` turns on the websocket feed's book stream, and is refused on REST."""

from __future__ import annotations

from pathlib import Path

import pytest

from prod_core.configs import ConfigError, ConfigLoader, load_settings
from prod_core.feeds.factory import build_feed

REPO = Path(__file__).resolve().parents[2]


def _symbols(order_book: bool):
    symbols = ConfigLoader(REPO / "configs").load_symbols()
    assert symbols.exchange.order_book is False  # off unless asked
    return symbols.model_copy(update={"exchange": symbols.exchange.model_copy(
        update={"api_url": "http://127.0.0.1:9", "ws_url": "ws://127.0.0.1:10", "order_book": order_book})})


@pytest.mark.parametrize("order_book", [False, True])
def test_the_ws_feed_streams_books_only_when_order_book_is_set(tmp_path: Path, order_book: bool) -> None:
    settings = load_settings(flags={"feed": "ccxt_ws"}, environ={}, env_file=tmp_path / "none")
    feed = build_feed(settings, _symbols(order_book), object(), 0.0)  # not started: no network
    assert feed.watch_books is order_book


def test_the_rest_feed_refuses_order_book_naming_the_key_and_the_fix(tmp_path: Path) -> None:
    settings = load_settings(flags={"feed": "ccxt"}, environ={}, env_file=tmp_path / "none")
    with pytest.raises(ConfigError, match=r"exchange\.order_book.*configs/symbols\.yaml.*FEED=ccxt_ws"):
        build_feed(settings, _symbols(True), object(), 0.0)
