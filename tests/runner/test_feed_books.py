"""The feed's streamed book becomes the broker's ``Book`` only when it can price an order honestly."""

from __future__ import annotations

import math

import pytest

from prod_core.runner.books import FeedBooks

NOW_S = 1_700_000_000.0


def _snap(bids, asks, age_s: float | None = 0.5) -> dict:
    return {"bid": bids[0][0] if bids else math.nan, "ask": asks[0][0] if asks else math.nan,
            "bids": bids, "asks": asks, "nonce": 7, "ts_ms": None if age_s is None else int((NOW_S - age_s) * 1000)}


def test_a_fresh_two_sided_book_is_taken_level_by_level() -> None:
    books = FeedBooks({"X": _snap([[99.9, 1.0], [99.8, 2.0]], [[100.1, 3.0]])}.get, clock=lambda: NOW_S)
    book = books("X")
    assert book is not None and book.bids == ((99.9, 1.0), (99.8, 2.0)) and book.asks == ((100.1, 3.0),)
    assert book.mid == pytest.approx(100.0) and books.taken == 1 and not books.skipped


@pytest.mark.parametrize("snap,reason", [
    (_snap([], [[100.1, 1.0]]), "empty"),
    (_snap([[100.2, 1.0]], [[100.1, 1.0]]), "crossed"),
    (_snap([[99.9, 1.0]], [[100.1, 1.0]], age_s=6.0), "stale"),
    (_snap([[99.9, 1.0]], [[100.1, 1.0]], age_s=None), "stale"),
    (_snap([[99.9, 1.0], [99.95, 1.0]], [[100.1, 1.0]]), "invalid"),
])
def test_an_unusable_book_is_skipped_and_counted(snap: dict, reason: str) -> None:
    books = FeedBooks({"X": snap}.get, clock=lambda: NOW_S)
    assert books("X") is None and books("X") is None
    assert books.skipped == {reason: 2}


def test_nothing_streamed_yet_is_not_a_skip() -> None:
    books = FeedBooks({}.get, clock=lambda: NOW_S)
    assert books("X") is None and not books.skipped
