"""The pure fold of an account journal (prod_core.account.journal): cash, positions, R, counters, compare."""

from __future__ import annotations

import json
import marshal
import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from prod_core.account import FillBodies, carried_lot, cash_delta, close_pnl, compare, fold, lot_body, state_body
from prod_core.domain import Fill, FillReason, Position, Side
from prod_core.risk.ledger import GovernanceState
from prod_core.storage import journal_fill_row, journal_row
from prod_core.storage.batch import fill_body_json

START = 10_000.0
DAY1, DAY2 = "2025-01-01", "2025-01-02"
_COLUMNS = ("ts_ms", "kind", "event", "fill_id", "position_id", "symbol", "side", "qty", "price", "fee_usd", "reason")


def _entry(seq: int, row: tuple[Any, ...]) -> dict[str, Any]:
    """A journal row as ``Storage.journal`` returns it (columns, ``body`` decoded from JSON)."""
    entry = dict(zip(_COLUMNS, row[:-1], strict=True))
    entry["seq"] = seq
    entry["body"] = json.loads(row[-1])
    return entry


class Journal:
    """Builds a journal the way the pipeline writes it (same row builders, same JSON round trip)."""

    def __init__(self, cash: float = START, *, lots: list[dict] | None = None, state: dict | None = None) -> None:
        body = {"cash_usd": cash, "lots": lots or [], "state": {"closed_r": 0.0, **(state or {})}}
        self.entries: list[dict[str, Any]] = [_entry(1, journal_row(0, "open", "opened", body))]
        self.positions: dict[str, Position] = {}
        self._n = 0

    def _add(self, row: tuple[Any, ...]) -> dict[str, Any]:
        entry = _entry(len(self.entries) + 1, row)
        self.entries.append(entry)
        return entry

    def open(self, position_id: str, side: Side = Side.BUY, qty: float = 1.0, price: float = 100.0, fee: float = 0.1,
             *, nominal: float = 50.0, symbol: str = "BTC/USDT", day: str = DAY1,
             state: dict | None = None) -> dict[str, Any]:
        self._n += 1
        fill = Fill(f"f{self._n}", f"o{self._n}", self._n, symbol, side, qty, price, fee, FillReason.ENTRY)
        position = Position(position_id=position_id, plan_id=f"plan-{position_id}", strategy="trend_following",
                            symbol=symbol, side=side, qty=qty, entry_price=price, stop=price * (1 - 0.02 * side.sign),
                            target=price * (1 + 0.04 * side.sign), ts_open_ms=self._n, nominal_r_usd=nominal,
                            entry_fee_usd=fee, last_price=price)
        self.positions[position_id] = position
        body = {"day": day, "lot": lot_body(position), "state": state or {}}
        return self._add(journal_fill_row(fill, "open", position_id, body))

    def close(self, position_id: str, price: float = 100.0, fee: float = 0.1, *, day: str = DAY1,
              side: Side | None = None, qty: float | None = None, state: dict | None = None) -> dict[str, Any]:
        self._n += 1
        p = self.positions.get(position_id)
        side = side or (p.side.opposite if p else Side.SELL)
        qty = qty if qty is not None else (p.qty if p else 1.0)
        fill = Fill(f"f{self._n}", f"o{self._n}", self._n, p.symbol if p else "BTC/USDT", side, qty, price, fee,
                    FillReason.EXIT_SIGNAL)
        return self._add(journal_fill_row(fill, "close", position_id, {"day": day, "state": state or {}}))

    def governance(self, event: str, state: dict[str, Any]) -> dict[str, Any]:
        return self._add(journal_row(self._n, "governance", event, {"state": state, "details": {}}))

    def fold(self):
        return fold("paper", self.entries)


def _flow(entry: dict[str, Any]) -> float:
    """A fill's cash flow, written out independently of ``cash_delta``."""
    notional = entry["qty"] * entry["price"]
    return (-notional if entry["side"] == "buy" else notional) - entry["fee_usd"]


def _rows(book) -> list[dict[str, Any]]:
    """Open position rows as the storage would hold them for ``book``."""
    return [{"position_id": pid, "symbol": p.symbol, "side": p.side.value, "qty": p.qty, "entry_price": p.entry_price,
             "entry_fee_usd": p.entry_fee_usd, "nominal_r_usd": p.nominal_r_usd, "stop": p.stop, "target": p.target}
            for pid, p in book.positions.items()]


def _snapshot(book) -> dict[str, Any]:
    data = book.state.to_dict()
    data["cash_usd"] = book.cash_usd
    return data


# ----------------------------------------------------------------------------- cash and R


def test_opening_entry_sets_cash_positions_and_state() -> None:
    """The opening entry sets cash, carried positions and the saved state, and the fold has no problems."""
    carried = Position(position_id="old-1", plan_id="p", strategy="mean_reversion", symbol="ETH/USDT", side=Side.SELL,
                       qty=2.0, entry_price=3000.0, stop=3100.0, target=2900.0, ts_open_ms=5, nominal_r_usd=40.0,
                       entry_fee_usd=1.5, last_price=2990.0)
    j = Journal(1234.5, lots=[carried_lot(carried)], state={"closed_r": 2.5, "peak_r": 3.0, "day": DAY1,
                                                           "trades_today": 4, "lock_reason": "max_trades"})
    book = j.fold()
    assert book.problems == [] and book.opened
    assert book.cash_usd == 1234.5
    assert book.positions == {"old-1": carried}
    assert book.closed_r == 2.5
    assert (book.state.peak_r, book.state.day, book.state.trades_today, book.state.lock_reason) == (
        3.0, DAY1, 4, "max_trades")
    assert (book.entries, book.fills, book.last_seq) == (1, 0, 1)


def test_open_then_close_books_cash_exactly_and_the_trade_r() -> None:
    """A long opened and closed moves cash by exactly the two fills' flows and books close_pnl / nominal as R."""
    j = Journal()
    opened = j.open("p1", Side.BUY, qty=0.5, price=200.0, fee=0.075, nominal=40.0)
    book = j.fold()
    assert book.cash_usd == START + cash_delta(Side.BUY, 0.5, 200.0, 0.075) == START - 100.075
    assert list(book.positions) == ["p1"] and book.positions["p1"].entry_fee_usd == 0.075
    assert book.state.trades_today == 1
    closed = j.close("p1", price=210.0, fee=0.0525)
    book = j.fold()
    assert book.problems == []
    assert book.cash_usd == START + sum(cash_delta(Side(e["side"]), e["qty"], e["price"], e["fee_usd"])
                                        for e in (opened, closed))
    assert book.cash_usd == START + _flow(opened) + _flow(closed)
    assert book.positions == {}
    pnl = close_pnl(j.positions["p1"], 210.0, 0.0525)
    assert pnl == 0.5 * 10.0 - 0.075 - 0.0525
    assert book.closed_r == pnl / 40.0
    assert book.state.consecutive_losses == 0 and book.state.trades_today == 1


def test_short_close_books_the_price_drop_as_profit() -> None:
    """A short (perp) gains cash on entry, pays it back on exit, and books a positive R when the price fell."""
    j = Journal()
    j.open("s1", Side.SELL, qty=2.0, price=50.0, fee=0.1, nominal=10.0)
    assert j.fold().cash_usd == START + 100.0 - 0.1
    j.close("s1", price=45.0, fee=0.09)
    book = j.fold()
    assert book.cash_usd == START + 100.0 - 0.1 - 90.0 - 0.09
    assert math.isclose(book.closed_r, (2.0 * 5.0 - 0.1 - 0.09) / 10.0, rel_tol=1e-12)


def test_consecutive_losses_count_losing_trades_in_a_row_and_a_win_resets_them() -> None:
    """Each losing close adds one to consecutive_losses; a winning close resets it to zero."""
    j = Journal()
    expected = []
    for i, exit_price in enumerate((99.0, 98.0, 101.0, 97.0)):
        j.open(f"p{i}", price=100.0, fee=0.0)
        j.close(f"p{i}", price=exit_price, fee=0.0)
        expected.append(j.fold().state.consecutive_losses)
    assert expected == [1, 2, 0, 1]
    assert j.fold().state.trades_today == 4


def test_a_day_change_in_a_fill_body_rolls_the_daily_counters() -> None:
    """A fill booked on a new day resets trades_today and starts the day at the closed R so far."""
    j = Journal()
    j.open("p1", day=DAY1, price=100.0, fee=0.0, nominal=10.0)
    j.open("p2", symbol="ETH/USDT", day=DAY1, price=100.0, fee=0.0, nominal=10.0)
    j.close("p1", price=98.0, fee=0.0, day=DAY1)  # -0.2 R
    book = j.fold()
    assert (book.state.day, book.state.trades_today, book.state.day_start_closed_r) == (DAY1, 2, 0.0)
    j.open("p3", symbol="SOL/USDT", day=DAY2, price=100.0, fee=0.0, nominal=10.0)
    book = j.fold()
    assert book.state.day == DAY2
    assert book.state.trades_today == 1
    assert math.isclose(book.state.day_start_closed_r, -0.2, rel_tol=1e-12)
    assert book.state.consecutive_losses == 1  # losses in a row survive the day roll
    j.close("p2", price=99.0, fee=0.0, day=DAY2)  # a close on the same new day does not roll again
    book = j.fold()
    assert (book.state.day, book.state.trades_today) == (DAY2, 1)
    assert math.isclose(book.state.day_start_closed_r, -0.2, rel_tol=1e-12)


def test_governance_entries_override_transition_fields_and_checkpoint_counters() -> None:
    """A governance entry sets locks, switches, peak and the counters; later fills advance from that checkpoint."""
    j = Journal()
    j.open("p1", day=DAY1)
    j.governance("lock_engaged", {"peak_r": 2.0, "max_dd_r": 0.5, "dd_epoch": 1, "dd_stopped": True, "throttled": True,
                                  "lock_reason": "max_daily_loss", "kill_switch": True, "holds": ["mean_reversion"],
                                  "config_hash": "abc", "day": DAY1, "day_start_closed_r": 1.25, "trades_today": 7,
                                  "consecutive_losses": 3})
    s = j.fold().state
    assert (s.peak_r, s.max_dd_r, s.dd_epoch, s.dd_stopped, s.throttled) == (2.0, 0.5, 1, True, True)
    assert (s.lock_reason, s.kill_switch, s.holds, s.config_hash) == ("max_daily_loss", True, ["mean_reversion"], "abc")
    assert (s.day, s.day_start_closed_r, s.trades_today, s.consecutive_losses) == (DAY1, 1.25, 7, 3)
    j.open("p2", symbol="ETH/USDT", day=DAY1, state={"peak_r": 2.5, "lock_reason": "max_trades"})
    j.close("p1", price=90.0, day=DAY1)
    s = j.fold().state
    assert (s.trades_today, s.consecutive_losses) == (8, 4)  # advanced from the checkpoint
    assert (s.peak_r, s.lock_reason, s.kill_switch) == (2.5, "max_trades", True)  # a fill's transition fields win
    j.governance("lock_reset", {"lock_reason": "limits_ok", "kill_switch": False, "holds": [], "trades_today": 0})
    s = j.fold().state
    assert (s.lock_reason, s.kill_switch, s.holds, s.trades_today, s.peak_r) == ("limits_ok", False, [], 0, 2.5)
    assert j.fold().problems == []


def test_state_body_carries_counters_only_for_a_checkpoint() -> None:
    """state_body holds the transition fields, plus the daily counters only when asked for a checkpoint."""
    state = GovernanceState(peak_r=1.0, day=DAY1, trades_today=3, holds=["x"], closed_r=9.0)
    fill_body, checkpoint = state_body(state, counters=False), state_body(state, counters=True)
    assert "trades_today" not in fill_body and "day" not in fill_body and fill_body["peak_r"] == 1.0
    assert checkpoint["trades_today"] == 3 and checkpoint["day"] == DAY1 and checkpoint["holds"] == ["x"]
    assert "closed_r" not in checkpoint and "cash_usd" not in checkpoint  # those come from the fills


# ----------------------------------------------------------------------------- compare and problems


def _two_positions_one_closed() -> Journal:
    j = Journal()
    j.open("p1", Side.BUY, qty=1.5, price=100.0, fee=0.1)
    j.open("p2", Side.SELL, qty=3.0, price=20.0, fee=0.05, symbol="ETH/USDT")
    j.close("p1", price=104.0, fee=0.1)
    return j


def test_compare_is_empty_when_the_snapshot_equals_the_fold() -> None:
    """A snapshot and position rows written from the fold itself agree with it: no differences."""
    book = _two_positions_one_closed().fold()
    assert compare(book, _snapshot(book), _rows(book)) == []


def test_compare_reports_a_cash_difference_on_one_line() -> None:
    """Saved cash that differs from the journal's is reported once, naming both values."""
    book = _two_positions_one_closed().fold()
    saved = {**_snapshot(book), "cash_usd": book.cash_usd + 1.0}
    diffs = compare(book, saved, _rows(book))
    assert len(diffs) == 1 and diffs[0].startswith("cash_usd: saved ") and repr(book.cash_usd) in diffs[0]
    missing = {k: v for k, v in _snapshot(book).items() if k != "cash_usd"}
    assert compare(book, missing, _rows(book)) == [f"cash_usd: saved missing != journal {book.cash_usd!r}"]


def test_compare_reports_a_closed_r_difference_on_one_line() -> None:
    """Saved closed R that differs from the journal's is reported once."""
    book = _two_positions_one_closed().fold()
    diffs = compare(book, {**_snapshot(book), "closed_r": book.closed_r + 0.5}, _rows(book))
    assert len(diffs) == 1 and diffs[0].startswith("closed_r: saved ")


def test_compare_tolerates_float_noise_only() -> None:
    """Differences within 1e-9 relative are equal; anything larger is reported."""
    book = _two_positions_one_closed().fold()
    noisy = {**_snapshot(book), "cash_usd": book.cash_usd * (1 + 1e-12)}
    assert compare(book, noisy, _rows(book)) == []
    off = {**_snapshot(book), "cash_usd": book.cash_usd * (1 + 1e-6)}
    assert len(compare(book, off, _rows(book))) == 1


def test_compare_reports_position_differences_one_line_each() -> None:
    """A position field that differs, a journal position not saved and a saved one the journal lacks: one line each."""
    book = _two_positions_one_closed().fold()
    rows = _rows(book)
    assert [r["position_id"] for r in rows] == ["p2"]
    wrong_qty = [{**rows[0], "qty": 2.0}]
    assert compare(book, _snapshot(book), wrong_qty) == ["position p2.qty: saved 2.0 != journal 3.0"]
    missing = compare(book, _snapshot(book), [])
    assert len(missing) == 1 and missing[0].startswith("position p2: open in the journal (sell 3.0 ETH/USDT)")
    extra = {**rows[0], "position_id": "ghost"}
    diffs = compare(book, _snapshot(book), [*rows, extra])
    assert len(diffs) == 1 and diffs[0].startswith("position ghost: saved open (sell 3.0 ETH/USDT) but not in")


def test_compare_reports_a_counter_or_lock_difference() -> None:
    """Counters and transition fields of the snapshot are compared too."""
    book = _two_positions_one_closed().fold()
    diffs = compare(book, {**_snapshot(book), "trades_today": 5, "lock_reason": "max_trades"}, _rows(book))
    assert sorted(d.split(":")[0] for d in diffs) == ["lock_reason", "trades_today"]


def test_a_close_of_an_unknown_position_is_a_problem() -> None:
    """Closing a position that is not open is reported (cash still moves: the fill happened)."""
    j = Journal()
    j.close("nope", price=100.0, fee=0.1, side=Side.SELL, qty=1.0)
    book = j.fold()
    assert len(book.problems) == 1 and "closes nope, which is not open" in book.problems[0]
    assert book.cash_usd == START + 100.0 - 0.1
    assert book.closed_r == 0.0
    assert book.problems[0] in compare(book, _snapshot(book), _rows(book))


def test_a_double_open_is_a_problem() -> None:
    """Opening a position id that is already open is reported."""
    j = Journal()
    j.open("p1")
    j.open("p1")
    book = j.fold()
    assert len(book.problems) == 1 and "opens p1, which is already open" in book.problems[0]
    assert compare(book, _snapshot(book), _rows(book)) == book.problems


def test_a_close_with_the_wrong_side_or_qty_is_a_problem() -> None:
    """A close on the position's own side, or of another quantity, is reported."""
    j = Journal()
    j.open("p1", Side.BUY, qty=1.0)
    j.close("p1", side=Side.BUY)
    j.open("p2", Side.BUY, qty=1.0)
    j.close("p2", qty=0.5)
    problems = j.fold().problems
    assert len(problems) == 2 and all("does not close" in p for p in problems)


def test_entries_before_the_opening_and_a_second_opening_are_problems() -> None:
    """The journal must start with exactly one opening entry."""
    j = Journal()
    entries = [j.entries[0], {**j.entries[0], "seq": 2}]
    assert "opened a second time" in fold("paper", entries).problems[0]
    j.open("p1")
    assert "before the account was opened" in fold("paper", j.entries[1:]).problems[0]


# ----------------------------------------------------------------------------- property

_SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")  # perps: both sides
_price = st.floats(min_value=0.01, max_value=100_000.0, allow_nan=False, allow_infinity=False)
_qty = st.floats(min_value=1e-6, max_value=1_000.0, allow_nan=False, allow_infinity=False)
_fee = st.floats(min_value=0.0, max_value=25.0, allow_nan=False, allow_infinity=False)
_nominal = st.floats(min_value=1.0, max_value=1_000.0, allow_nan=False, allow_infinity=False)


@settings(max_examples=150, deadline=None)
@given(data=st.data(), start=st.floats(min_value=0.0, max_value=1e7), steps=st.integers(min_value=0, max_value=40))
def test_fold_cash_and_closed_r_equal_the_sum_of_the_fills(data, start: float, steps: int) -> None:
    """For any sequence of opens and closes, cash is start plus the fills' flows and closed R the sum of trade R."""
    j = Journal(start)
    open_ids: list[str] = []
    flows: list[float] = []
    trade_rs: list[float] = []
    opens = 0
    for i in range(steps):
        if open_ids and data.draw(st.booleans(), label="close"):
            pid = open_ids.pop(data.draw(st.integers(0, len(open_ids) - 1), label="which"))
            p = j.positions[pid]
            price, fee = data.draw(_price, label="exit"), data.draw(_fee, label="exit fee")
            flows.append(_flow(j.close(pid, price=price, fee=fee)))
            sign = 1.0 if p.side is Side.BUY else -1.0
            trade_rs.append((sign * p.qty * (price - p.entry_price) - p.entry_fee_usd - fee) / p.nominal_r_usd)
        else:
            pid = f"p{i}"
            entry = j.open(pid, data.draw(st.sampled_from((Side.BUY, Side.SELL)), label="side"),
                           qty=data.draw(_qty, label="qty"), price=data.draw(_price, label="price"),
                           fee=data.draw(_fee, label="fee"), nominal=data.draw(_nominal, label="nominal"),
                           symbol=data.draw(st.sampled_from(_SYMBOLS), label="symbol"))
            open_ids.append(pid)
            flows.append(_flow(entry))
            opens += 1
    book = j.fold()
    assert book.problems == []
    expected_cash = start + sum(flows)
    scale = abs(start) + sum(abs(f) for f in flows)
    assert math.isclose(book.cash_usd, expected_cash, rel_tol=1e-9, abs_tol=1e-9 * scale)
    assert math.isclose(book.closed_r, sum(trade_rs), rel_tol=1e-9, abs_tol=1e-9 * sum(abs(r) for r in trade_rs))
    assert sorted(book.positions) == sorted(open_ids)
    losses = 0
    for r in trade_rs:
        losses = losses + 1 if r < 0 else 0
    assert book.state.consecutive_losses == losses
    assert book.state.trades_today == opens and book.fills == len(flows)
    assert compare(book, _snapshot(book), _rows(book)) == []


_any_float = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(10**20), 10**20)


@settings(max_examples=300, deadline=None)
@given(plan_id=st.text(), strategy=st.text(), stop=_any_float, target=_any_float, nominal=_any_float,
       ts_open=st.integers(-(10**15), 10**15) | st.floats(), leverage=_any_float, mmr=_any_float | st.booleans(),
       day=st.text() | st.none(), peak=_any_float, max_dd=_any_float, epoch=st.integers() | st.none(),
       flags=st.lists(st.booleans() | st.integers(0, 1), min_size=3, max_size=3), lock=st.text(),
       holds=st.lists(st.text(), max_size=3) | st.lists(st.integers(), min_size=1, max_size=2), config=st.text())
def test_fill_bodies_are_json_dumps_with_sorted_keys_byte_for_byte(plan_id, strategy, stop, target, nominal, ts_open,
                                                                   leverage, mmr, day, peak, max_dd, epoch, flags, lock,
                                                                   holds, config) -> None:
    """A fill's journal body is exactly ``json.dumps(body, sort_keys=True, default=str)``, whatever the values."""
    position = Position(position_id="p", plan_id=plan_id, strategy=strategy, symbol="BTC/USDT", side=Side.BUY,
                        qty=1.0, entry_price=100.0, stop=stop, target=target, ts_open_ms=ts_open, nominal_r_usd=nominal,
                        entry_fee_usd=0.1, last_price=100.0, leverage=leverage, maint_margin_rate=mmr)
    state = GovernanceState()
    state.day, state.peak_r, state.max_dd_r, state.dd_epoch, state.holds = day, peak, max_dd, epoch, holds
    state.dd_stopped, state.throttled, state.kill_switch = flags
    state.lock_reason, state.config_hash = lock, config
    bodies = FillBodies()
    opened = {"day": day, "lot": lot_body(position), "state": state_body(state, counters=False)}
    assert bodies.opened(state, position) == json.dumps(opened, sort_keys=True, default=str)
    changed = {"day": day, "state": state_body(state, counters=False)}
    assert bodies.changed(state) == json.dumps(changed, sort_keys=True, default=str)
    # a replay's batches hand the flush (the writer process) the values, and it encodes the same bytes
    for values, text in ((FillBodies.opened_values(state, position), bodies.opened(state, position)),
                         (FillBodies.changed_values(state), bodies.changed(state))):
        assert fill_body_json(values) == text
        assert fill_body_json(marshal.loads(marshal.dumps(values))) == text
