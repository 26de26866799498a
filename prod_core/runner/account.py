"""Start-up of the paper account: the writer lease, the journal fold and reconciliation.

Every start folds the account's journal (``prod_core.account.fold``), compares the fold with
the saved snapshot (governance_state row + open position rows), and on any difference logs
it, audits it and proceeds from the journal (the saved rows are rewritten to match).
``python -m prod_core.cli reconcile`` runs the same fold and comparison without repairing.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any

from msgspec.structs import replace

from prod_core.account import Book, carried_lot, compare, fold, state_body
from prod_core.domain import Position, Side
from prod_core.risk.ledger import GovernanceState
from prod_core.storage import AccountWrite, Storage, journal_row
from prod_core.storage.sqlite import RETRY_WINDOW_S

log = logging.getLogger("prod_core.runner")

# A lease whose owner has not heartbeated for this long is taken over (with a warning). It is
# well past the storage retry window, so a runner waiting out a busy database keeps its lease.
LEASE_STALE_S = max(60.0, 3 * RETRY_WINDOW_S)


def host_name() -> str:
    return socket.gethostname()


def pid_alive(pid: int) -> bool:
    """Whether a process with ``pid`` exists on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def takeover_reason(holder: dict[str, Any], *, host: str, now: float, stale_s: float = LEASE_STALE_S) -> str | None:
    """Why a lease held by another run may be taken over, or None when its owner is alive."""
    age = now - float(holder["heartbeat_at"])
    if holder["host"] == host and not pid_alive(int(holder["pid"])):
        return f"its owner run {holder['run_id']} (pid {holder['pid']}) is no longer running on this host"
    if age > stale_s:
        return (f"its owner run {holder['run_id']} (pid {holder['pid']} on {holder['host']}) has not "
                f"heartbeated for {age:.0f} s (> {stale_s:.0f} s)")
    return None


def owner_message(account: str, holder: dict[str, Any], now: float) -> str:
    age = now - float(holder["heartbeat_at"])
    return (f"account {account} is already traded by run {holder['run_id']} (pid {holder['pid']} on "
            f"{holder['host']}, heartbeat {age:.1f} s ago): one runner writes an account at a time; stop that "
            f"runner first (Ctrl+C in its terminal or `kill -INT {holder['pid']}`), or give this one another --db")


def _opening_body(storage: Storage, account: str, starting_cash: float) -> tuple[dict[str, Any], str]:
    """The opening entry: a fresh account, or the saved state of a database older than the journal."""
    saved = storage.load_governance_state(account)
    rows = storage.open_positions(account)
    if not saved and not rows:
        state = GovernanceState()
        body = {"cash_usd": starting_cash, "lots": [], "state": {**state_body(state, counters=True), "closed_r": 0.0}}
        return body, "opened"
    saved = saved or {}
    state = GovernanceState.from_dict(saved)
    lots = [carried_lot(_row_position(r)) for r in rows]
    cash = saved.get("cash_usd")
    body = {"cash_usd": float(cash) if cash is not None else starting_cash, "lots": lots,
            "state": {**state_body(state, counters=True), "closed_r": state.closed_r},
            "details": {"from": "saved state of a database that predates the journal"}}
    return body, "adopted"


def _row_position(r: dict[str, Any]) -> Position:
    return Position(
        position_id=r["position_id"], plan_id=r["plan_id"], strategy=r["strategy"], symbol=r["symbol"],
        side=Side(r["side"]), qty=r["qty"], entry_price=r["entry_price"], stop=r["stop"], target=r["target"],
        ts_open_ms=r["ts_open_ms"], nominal_r_usd=r["nominal_r_usd"], entry_fee_usd=r["entry_fee_usd"],
        last_price=r["last_price"], leverage=float(r.get("leverage") or 0.0),
        maint_margin_rate=float(r.get("maint_margin_rate") or 0.0), funding_usd=float(r.get("funding_usd") or 0.0),
        funding_ts_ms=int(r.get("funding_ts_ms") or 0), realized_usd=float(r.get("realized_usd") or 0.0),
    )  # fmt: skip


def snapshot_of(book: Book) -> dict[str, Any]:
    data = book.state.to_dict()
    data["cash_usd"] = book.cash_usd
    return data


def open_book(
    storage: Storage, account: str, run_id: str, *, starting_cash: float, actor: str, opening: dict | None = None
) -> Book:
    """Fold the account's journal; open the journal first if the account has none (``opening``:
    the body of the opening entry, e.g. a recorded session's start state)."""
    entries = storage.journal(account)
    if not entries:
        if opening is not None:  # positions get ids of this account (ids are unique for the life of the DB)
            lots = [{**lot, "position_id": f"{run_id}~{lot['position_id']}"} for lot in opening.get("lots", ())]
            state = {k: v for k, v in opening["state"].items() if k != "cash_usd"}
            body, event = {**opening, "lots": lots, "state": state}, "opened"
        else:
            body, event = _opening_body(storage, account, starting_cash)
        now = time.time()
        book = fold(account, [{"seq": 0, "kind": "open", "body": body}])
        storage.commit_account(AccountWrite(account=account, run_id=run_id, ts=now,
                                            entries=(journal_row(int(now * 1000), "open", event, body),),
                                            snapshot=snapshot_of(book)))
        if opening is not None and book.positions:
            storage.repair_positions(account, run_id, void=[], insert=list(book.positions.values()), ts=now)
        if event == "adopted":
            storage.add_audit(ts=now, actor=actor, action="journal_opened", comment="", run_id=run_id, account=account,
                              details={"cash_usd": body["cash_usd"], "positions": len(body["lots"])})
            log.warning("Счёт %s: журнал открыт по сохранённому состоянию (база старше журнала): cash=%.2f, "
                        "позиций %d", account, body["cash_usd"], len(body["lots"]))
        entries = storage.journal(account)
    return fold(account, entries)


def reconcile_at_start(storage: Storage, book: Book, run_id: str, *, actor: str) -> list[str]:
    """Compare the saved snapshot with the journal; on a difference log, audit and repair from the journal."""
    account = book.account
    rows = storage.open_positions(account)
    diffs = compare(book, storage.load_governance_state(account), rows)
    now = time.time()
    if diffs:
        log.warning("Сверка счёта %s: сохранённое состояние расходится с журналом (%d), продолжаю по журналу: %s",
                    account, len(diffs), "; ".join(diffs[:10]))
        storage.add_audit(ts=now, actor=actor, action="reconcile", comment="saved state differs from the journal",
                          run_id=run_id, account=account, details={"differences": diffs, "journal_seq": book.last_seq})
    saved_ids = {r["position_id"] for r in rows}
    void = sorted(saved_ids - set(book.positions))
    insert = [p for pid, p in book.positions.items() if pid not in saved_ids]
    storage.repair_positions(account, run_id, void=void, insert=insert, ts=now)
    if diffs:
        storage.commit_account(AccountWrite(account=account, run_id=run_id, ts=now, entries=(),
                                            snapshot=snapshot_of(book)))
    return diffs


def restored_positions(storage: Storage, book: Book) -> list[Position]:
    """The journal's open positions, marked at the last saved price where one exists."""
    marks = {r["position_id"]: r["last_price"] for r in storage.open_positions(book.account)}
    return [replace(p, last_price=float(marks.get(pid, p.last_price))) for pid, p in book.positions.items()]
