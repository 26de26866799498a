"""The account's journal fold and the comparison with a saved snapshot.

Journal entries are dicts as the storage returns them (plain SQL columns, ``body`` decoded
from JSON), in sequence order:

- ``kind="open"``: the account is opened with ``body.cash_usd``, ``body.lots`` (open
  positions carried from a database that predates the journal) and ``body.state``.
- ``kind="fill"``, ``event="open"|"close"``: one fill with its consequences. The fill's
  columns (symbol, side, qty, price, fee_usd) move cash; ``open`` adds the position
  described by ``body.lot``, ``close`` removes ``position_id`` and books its trade R.
  ``body.state`` holds the transition fields after the fill (a lock the fill engaged, the
  peak it set), ``body.day`` the accounting day it was booked on.
- ``kind="governance"``: a transition that is not a fill (lock engaged or lifted, drawdown
  stop, peak, kill-switch, holds, day roll, config in force); ``body.state`` holds the
  transition fields and the daily counters at that moment.

What comes from where:
- cash, open positions, closed R: the fills alone (and the opening entry);
- daily counters (day, trades today, losses in a row): the last checkpoint (opening or
  governance entry), advanced by the fills after it;
- peak, drawdown, locks and switches: the last entry that carries them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

from prod_core.account.margin import cash_delta, close_pnl, exit_cash, funded, increased, open_cash, reduced
from prod_core.domain import Position, Side
from prod_core.domain.encoding import json_encoder
from prod_core.risk.ledger import GovernanceState, roll_day

# Set by transitions (fills may move them too); taken from the last entry that carries them.
TRANSITION_FIELDS: tuple[str, ...] = (
    "peak_r", "max_dd_r", "dd_epoch", "dd_stopped", "throttled", "lock_reason", "kill_switch", "holds", "config_hash",
)
# Checkpointed by governance entries, advanced by fills.
COUNTER_FIELDS: tuple[str, ...] = ("day", "day_start_closed_r", "trades_today", "consecutive_losses")

_LOT_FIELDS = ("plan_id", "strategy", "stop", "target", "nominal_r_usd", "ts_open_ms", "leverage", "maint_margin_rate")
_POSITION_FIELDS = ("symbol", "side", "qty", "entry_price", "entry_fee_usd", "nominal_r_usd", "stop", "target",
                    "leverage", "funding_usd", "funding_ts_ms", "realized_usd")

_NEW_POSITION_FIELDS = {"leverage": 0.0, "funding_usd": 0.0, "funding_ts_ms": 0, "realized_usd": 0.0}
_REL_TOL = 1e-9


def state_body(state: GovernanceState, *, counters: bool) -> dict[str, Any]:
    """The journaled part of the governance state (transitions, and the counters for a checkpoint)."""
    names = TRANSITION_FIELDS + COUNTER_FIELDS if counters else TRANSITION_FIELDS
    body = {name: getattr(state, name) for name in names}
    body["holds"] = list(state.holds)
    return body


def lot_body(position: Position) -> dict[str, Any]:
    """What an opening fill records of the position it opens (the rest is in the fill's columns)."""
    return {name: getattr(position, name) for name in _LOT_FIELDS}


# ``json.dumps(body, sort_keys=True, default=str)``, the encoding of every journal body, with its C
# encoder built once (prod_core/domain/encoding.py)
_encode: Callable[[Any], str] = json_encoder(sort_keys=True, default=str)
_TRANSITION_VALUES = attrgetter(*(name for name in TRANSITION_FIELDS if name != "holds"))
_LOT_VALUES = attrgetter(*_LOT_FIELDS)
# The names of a fill body's values (``FillBodies.opened_values``): the lot's, then the state's
# without ``holds``, which comes last on its own (``storage.batch.fill_body_json`` reads this layout).
FILL_BODY_LAYOUT: tuple[str, tuple[str, ...], tuple[str, ...]] = (
    "fill", _LOT_FIELDS, tuple(name for name in TRANSITION_FIELDS if name != "holds"))


class FillBodies:
    """The JSON bodies of fill entries, byte for byte ``json.dumps(body, sort_keys=True, default=str)``
    of ``{"day": ..., "lot": lot_body(position), "state": state_body(state, counters=False)}``
    (``lot`` on an opening fill only), built per fill without re-encoding what did not change.

    The ``state`` part changes only with a transition, and most fills in a row leave it as it
    was: its JSON is kept with the very objects it was encoded from and reused while the state
    still holds the same objects (a value changes by assignment of a new object, and an identical
    object encodes identically; ``==`` would not do: ``0.0 == -0.0`` and ``1 == True``).
    """

    __slots__ = ("_values", "_ids", "_holds", "_state_json")

    def __init__(self) -> None:
        self._values: tuple[Any, ...] = ()  # kept alive: their ids cannot be reused meanwhile
        self._ids: tuple[int, ...] = ()
        self._holds: tuple[str, ...] = ()
        self._state_json = ""

    def state(self, state: GovernanceState) -> str:
        """The JSON of ``state_body(state, counters=False)``."""
        values = _TRANSITION_VALUES(state)
        ids = tuple(map(id, values))
        holds = tuple(state.holds)
        if ids != self._ids or holds != self._holds or not self._state_json:
            self._state_json = _encode(state_body(state, counters=False))
            self._values, self._ids, self._holds = values, ids, holds
        return self._state_json

    def opened(self, state: GovernanceState, position: Position) -> str:
        """The body of the fill that opens ``position``: day, lot and state."""
        return f'{{"day": {_encode(state.day)}, "lot": {_encode(lot_body(position))}, "state": {self.state(state)}}}'

    def changed(self, state: GovernanceState) -> str:
        """The body of a fill that changes or closes a position: day and state."""
        return f'{{"day": {_encode(state.day)}, "state": {self.state(state)}}}'

    # A replay's batched commits hand the flush the body's values instead of its JSON, and the flush
    # encodes them (``storage.batch.fill_body_json``: the same bytes as ``opened``/``changed``); with
    # the write-behind that is the writer process, off the loop's thread. The values are taken now:
    # the state changes in place after the fill, the values themselves never do.
    @staticmethod
    def opened_values(state: GovernanceState, position: Position) -> tuple:
        """What ``opened`` encodes, as ``(FILL_BODY_LAYOUT, day, lot values, state values, holds)``."""
        return FILL_BODY_LAYOUT, state.day, _LOT_VALUES(position), _TRANSITION_VALUES(state), tuple(state.holds)

    @staticmethod
    def changed_values(state: GovernanceState) -> tuple:
        """What ``changed`` encodes, as ``(FILL_BODY_LAYOUT, day, None, state values, holds)``."""
        return FILL_BODY_LAYOUT, state.day, None, _TRANSITION_VALUES(state), tuple(state.holds)


@dataclass(slots=True)
class Book:
    """The account as its journal says it is."""

    account: str
    cash_usd: float = 0.0
    positions: dict[str, Position] = field(default_factory=dict)  # by position_id
    state: GovernanceState = field(default_factory=GovernanceState)
    last_seq: int = 0
    entries: int = 0
    fills: int = 0
    fundings: int = 0
    opened: bool = False
    problems: list[str] = field(default_factory=list)  # the journal contradicts itself

    @property
    def closed_r(self) -> float:
        return self.state.closed_r


def _apply_state(state: GovernanceState, values: dict[str, Any], names: tuple[str, ...]) -> None:
    for name in names:
        if name in values:
            value = values[name]
            setattr(state, name, list(value) if name == "holds" else value)


def _position(position_id: str, row: dict[str, Any], lot: dict[str, Any]) -> Position:
    return Position(
        position_id=position_id, plan_id=str(lot["plan_id"]), strategy=str(lot["strategy"]), symbol=row["symbol"],
        side=Side(row["side"]), qty=float(row["qty"]), entry_price=float(row["price"]), stop=float(lot["stop"]),
        target=float(lot["target"]), ts_open_ms=int(lot["ts_open_ms"]), nominal_r_usd=float(lot["nominal_r_usd"]),
        entry_fee_usd=float(row["fee_usd"]), last_price=float(row["price"]), leverage=float(lot.get("leverage", 0.0)),
        maint_margin_rate=float(lot.get("maint_margin_rate", 0.0)),
    )  # fmt: skip


def _carried(lot: dict[str, Any]) -> Position:
    return Position(
        position_id=str(lot["position_id"]), plan_id=str(lot["plan_id"]), strategy=str(lot["strategy"]),
        symbol=str(lot["symbol"]), side=Side(lot["side"]), qty=float(lot["qty"]), entry_price=float(lot["entry_price"]),
        stop=float(lot["stop"]), target=float(lot["target"]), ts_open_ms=int(lot["ts_open_ms"]),
        nominal_r_usd=float(lot["nominal_r_usd"]), entry_fee_usd=float(lot["entry_fee_usd"]),
        last_price=float(lot.get("last_price", lot["entry_price"])), leverage=float(lot.get("leverage", 0.0)),
        maint_margin_rate=float(lot.get("maint_margin_rate", 0.0)), funding_usd=float(lot.get("funding_usd", 0.0)),
        funding_ts_ms=int(lot.get("funding_ts_ms", 0)), realized_usd=float(lot.get("realized_usd", 0.0)),
    )  # fmt: skip


def carried_lot(position: Position) -> dict[str, Any]:
    """A position as the opening entry of a journal records it."""
    return {
        "position_id": position.position_id, "plan_id": position.plan_id, "strategy": position.strategy,
        "symbol": position.symbol, "side": position.side.value, "qty": position.qty,
        "entry_price": position.entry_price, "stop": position.stop, "target": position.target,
        "ts_open_ms": position.ts_open_ms, "nominal_r_usd": position.nominal_r_usd,
        "entry_fee_usd": position.entry_fee_usd, "last_price": position.last_price, "leverage": position.leverage,
        "maint_margin_rate": position.maint_margin_rate, "funding_usd": position.funding_usd,
        "funding_ts_ms": position.funding_ts_ms, "realized_usd": position.realized_usd,
    }  # fmt: skip


def apply(book: Book, entry: dict[str, Any]) -> None:
    """Fold one journal entry into ``book``."""
    kind = entry["kind"]
    body = entry.get("body") or {}
    state = book.state
    seq = int(entry["seq"])
    book.last_seq = seq
    book.entries += 1
    if kind == "open":
        if book.opened:
            book.problems.append(f"seq {seq}: the account is opened a second time")
        book.opened = True
        book.cash_usd = float(body["cash_usd"])
        book.positions = {p.position_id: p for p in (_carried(lot) for lot in body.get("lots", ()))}
        values = body.get("state") or {}
        _apply_state(state, values, TRANSITION_FIELDS + COUNTER_FIELDS)
        state.closed_r = float(values.get("closed_r", 0.0))
        return
    if not book.opened:
        book.problems.append(f"seq {seq}: {kind} entry before the account was opened")
        book.opened = True
    if kind == "governance":
        _apply_state(state, body.get("state") or {}, TRANSITION_FIELDS + COUNTER_FIELDS)
        return
    if kind == "funding":
        _funding(book, entry, seq)
        return
    if kind != "fill":
        book.problems.append(f"seq {seq}: unknown entry kind {kind!r}")
        return
    book.fills += 1
    day = body.get("day")
    if day:
        roll_day(state, str(day))
    side = Side(entry["side"])
    qty, price, fee = float(entry["qty"]), float(entry["price"]), float(entry["fee_usd"])
    position_id = str(entry["position_id"])
    event = entry["event"]
    if event == "open":
        if position_id in book.positions:
            book.problems.append(f"seq {seq}: fill {entry['fill_id']} opens {position_id}, which is already open")
        position = _position(position_id, entry, body["lot"])
        book.cash_usd += open_cash(position.leverage, side, qty, price, fee)
        book.positions[position_id] = position
        state.trades_today += 1
    elif event in ("increase", "reduce", "close"):
        position = book.positions.get(position_id)
        if position is None:
            book.problems.append(f"seq {seq}: fill {entry['fill_id']} {event}s {position_id}, which is not open")
            book.cash_usd += cash_delta(side, qty, price, fee)
        elif event == "increase":
            if side is not position.side:
                book.problems.append(f"seq {seq}: fill {entry['fill_id']} ({side.value}) cannot add to {position_id} "
                                     f"({position.side.value})")
            book.cash_usd += open_cash(position.leverage, side, qty, price, fee)
            book.positions[position_id] = increased(position, qty, price, fee)
        else:
            closing = event == "close"
            if side is position.side or (closing and not math.isclose(qty, position.qty, rel_tol=_REL_TOL)) or (
                not closing and not qty < position.qty
            ):
                book.problems.append(
                    f"seq {seq}: fill {entry['fill_id']} ({side.value} {qty}) does not {event} {position_id} "
                    f"({position.side.value} {position.qty})"
                )
            book.cash_usd += exit_cash(position, qty, price, fee)
            if closing:
                del book.positions[position_id]
                trade_r = close_pnl(position, price, fee) / position.nominal_r_usd
                state.closed_r += trade_r
                state.consecutive_losses = state.consecutive_losses + 1 if trade_r < 0 else 0
            else:
                book.positions[position_id] = reduced(position, qty, price, fee)
    else:
        book.problems.append(f"seq {seq}: fill event must be open, increase, reduce or close, was {event!r}")
    _apply_state(state, body.get("state") or {}, TRANSITION_FIELDS)


def _funding(book: Book, entry: dict[str, Any], seq: int) -> None:
    """A funding payment: the wallet pays ``fee_usd`` (receives when negative); the open
    position carries it into its trade R (a payment settled after the close only moves cash)."""
    amount = float(entry["fee_usd"])
    book.cash_usd -= amount
    book.fundings += 1
    position_id = str(entry["position_id"])
    position = book.positions.get(position_id)
    if position is not None:
        book.positions[position_id] = funded(position, amount, int(entry["ts_ms"]))


def fold(account: str, entries: Iterable[dict[str, Any]]) -> Book:
    """The account rebuilt from its journal entries (in sequence order)."""
    book = Book(account=account)
    for entry in entries:
        apply(book, entry)
    return book


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            x, y = float(a), float(b)
        except (TypeError, ValueError):
            return False
        return x == y or abs(x - y) <= _REL_TOL * max(1.0, abs(x), abs(y))
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return sorted(a or ()) == sorted(b or ())
    return a == b


def compare(book: Book, saved: dict[str, Any] | None, saved_positions: list[dict[str, Any]]) -> list[str]:
    """How the saved snapshot (governance_state row, open position rows) differs from the journal.

    Each item is one line: ``field: saved <value> != journal <value>``. Empty when they agree.
    """
    diffs = list(book.problems)
    saved = saved or {}
    state = book.state
    pairs: list[tuple[str, Any, Any]] = [("cash_usd", saved.get("cash_usd"), book.cash_usd),
                                         ("closed_r", saved.get("closed_r", 0.0), state.closed_r)]
    for name in COUNTER_FIELDS + TRANSITION_FIELDS:
        default = getattr(GovernanceState(), name)
        pairs.append((name, saved.get(name, default), getattr(state, name)))
    for name, have, want in pairs:
        if have is None and want is not None:
            diffs.append(f"{name}: saved missing != journal {want!r}")
        elif not _same(have, want):
            diffs.append(f"{name}: saved {have!r} != journal {want!r}")
    rows = {str(r["position_id"]): r for r in saved_positions}
    for position_id in sorted(set(rows) - set(book.positions)):
        r = rows[position_id]
        diffs.append(f"position {position_id}: saved open ({r['side']} {r['qty']} {r['symbol']}) but not in the journal")
    for position_id, p in sorted(book.positions.items()):
        r = rows.get(position_id)
        if r is None:
            diffs.append(f"position {position_id}: open in the journal ({p.side.value} {p.qty} {p.symbol}) but not saved")
            continue
        for name in _POSITION_FIELDS:
            want = getattr(p, name)
            want = want.value if name == "side" else want
            have = r.get(name, _NEW_POSITION_FIELDS.get(name))  # rows written before v6 lack the margin columns
            if not _same(have, want):
                diffs.append(f"position {position_id}.{name}: saved {have!r} != journal {want!r}")
    return diffs
