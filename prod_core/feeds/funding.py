"""Funding rates of linear perpetuals: the contract between feeds and the paper broker.

A funding time is a UTC instant that is a whole multiple of the instrument's interval
(8 h: 00:00, 08:00, 16:00). At each one, every perp position open at that instant pays
``qty * mark * rate`` when the rate is positive and it is long (shorts receive it), and the
opposite when the rate is negative. The broker asks the feed's ``FundingRates`` for the rate
SETTLED at that time; ``None`` means "not known yet" (a live feed that has not fetched it):
the broker asks again on the symbol's next bar and settles then, at the mark of the funding time.

Sources: the exchange's history (ccxt ``fetchFundingRateHistory``) on live feeds, a
``funding_rate`` column or side file in replay, the sim's own model, or a fixed per-symbol
rate from ``symbols.yaml`` (``funding_rate``), which overrides the feed.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from typing import Protocol, runtime_checkable


@runtime_checkable
class FundingRates(Protocol):
    def rate(self, symbol: str, funding_ts_ms: int) -> float | None:
        """The rate settled at ``funding_ts_ms`` for ``symbol`` (0.0001 = 0.01%), or None if not known yet."""
        ...


def funding_times(after_ms: int, upto_ms: int, interval_ms: int) -> range:
    """Funding instants T with ``after_ms < T <= upto_ms`` (multiples of ``interval_ms`` from the epoch)."""
    first = (after_ms // interval_ms + 1) * interval_ms
    return range(first, upto_ms + 1, interval_ms)


class ConstantFunding:
    """The same rate at every funding time (``symbols.yaml`` ``funding_rate``, tests)."""

    def __init__(self, rate: float) -> None:
        self._rate = float(rate)

    def rate(self, symbol: str, funding_ts_ms: int) -> float | None:
        return self._rate


class FundingTable:
    """Settled rates per symbol, as exchanges publish them: ``{symbol: [(funding_ts_ms, rate), ...]}``.

    ``rate`` answers the entry at exactly ``funding_ts_ms``; exchanges stamp settlements a few
    milliseconds to a second late (Binance ``fundingTime`` ...000 or ...001), so a settlement
    within ``tolerance_ms`` after the instant counts as that instant's. A time the table does not
    cover yet (after its last entry) is None (not known yet); a time inside the covered span
    with no entry is None too (the caller decides; the broker retries).
    """

    def __init__(self, rates: Mapping[str, Iterable[tuple[int, float]]], tolerance_ms: int = 60_000) -> None:
        self._ts: dict[str, list[int]] = {}
        self._rates: dict[str, list[float]] = {}
        self._tol = int(tolerance_ms)
        for symbol, rows in rates.items():
            self.extend(symbol, rows)

    def extend(self, symbol: str, rows: Iterable[tuple[int, float]]) -> None:
        """Add settlements (any order; a repeated time keeps the latest value given)."""
        merged = dict(zip(self._ts.get(symbol, ()), self._rates.get(symbol, ()), strict=True))
        for ts, rate in rows:
            merged[int(ts)] = float(rate)
        keys = sorted(merged)
        self._ts[symbol] = keys
        self._rates[symbol] = [merged[k] for k in keys]

    def last_ts(self, symbol: str) -> int | None:
        ts = self._ts.get(symbol)
        return ts[-1] if ts else None

    def rate(self, symbol: str, funding_ts_ms: int) -> float | None:
        ts = self._ts.get(symbol)
        if not ts:
            return None
        i = bisect.bisect_left(ts, funding_ts_ms)
        if i < len(ts) and ts[i] - funding_ts_ms <= self._tol:
            return self._rates[symbol][i]
        return None


class Overrides:
    """Per-symbol fixed rates in front of a feed's source (``symbols.yaml`` ``funding_rate``)."""

    def __init__(self, fixed: Mapping[str, float], source: FundingRates | None) -> None:
        self._fixed = dict(fixed)
        self._source = source

    def rate(self, symbol: str, funding_ts_ms: int) -> float | None:
        fixed = self._fixed.get(symbol)
        if fixed is not None:
            return fixed
        if self._source is None:
            return None
        return self._source.rate(symbol, funding_ts_ms)


DEFAULT_INTERVAL_MS = 8 * 3_600_000
HOUR_MS = 3_600_000


def funding_instant(stamp_ms: int, interval_ms: int = DEFAULT_INTERVAL_MS, tolerance_ms: int = 60_000) -> int:
    """The funding instant an exchange's settlement stamp belongs to.

    Exchanges stamp a settlement a few ms late (Binance ``fundingTime`` ...001): a stamp at most
    ``tolerance_ms`` after a multiple of ``interval_ms`` is rounded down to it. A stamp off that
    grid (a symbol whose interval changed, e.g. to 4 h) is rounded down to the whole hour when
    within the tolerance of one, and otherwise kept as it is.
    """
    stamp = int(stamp_ms)
    for grid in (int(interval_ms), HOUR_MS):
        instant = stamp // grid * grid
        if stamp - instant <= tolerance_ms:
            return instant
    return stamp


class LiveFunding:
    """A ``FundingRates`` one thread refreshes while others read (a live feed's table).

    Each ``update`` builds a new ``FundingTable`` and swaps it in, so a reader never sees a
    half-updated table (``FundingTable.extend`` is not atomic).
    """

    def __init__(self, tolerance_ms: int = 60_000) -> None:
        self._rows: dict[str, dict[int, float]] = {}
        self._tol = int(tolerance_ms)
        self._table = FundingTable({}, tolerance_ms=self._tol)

    def update(self, symbol: str, rows: Iterable[tuple[int, float]]) -> int:
        """Add settlements (a repeated time keeps the latest value); returns how many times were new."""
        known = dict(self._rows.get(symbol, {}))
        before = len(known)
        for ts, rate in rows:
            known[int(ts)] = float(rate)
        self._rows = {**self._rows, symbol: known}
        self._table = FundingTable({s: r.items() for s, r in self._rows.items()}, tolerance_ms=self._tol)
        return len(known) - before

    def rows(self, symbol: str) -> list[tuple[int, float]]:
        """The settlements known for ``symbol``, oldest first."""
        return sorted(self._rows.get(symbol, {}).items())

    def last_ts(self, symbol: str) -> int | None:
        return self._table.last_ts(symbol)

    def rate(self, symbol: str, funding_ts_ms: int) -> float | None:
        return self._table.rate(symbol, funding_ts_ms)
