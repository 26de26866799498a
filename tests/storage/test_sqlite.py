"""The storage DAO: round-trips, buffering, durability, governance, commands and errors.

Every test taking ``db_path`` runs twice: on a SQLite file and on a fresh database of the
session's throwaway PostgreSQL server (tests/conftest.py ``db_target``)."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from prod_core.domain.types import Fill, FillReason, Order, OrderStatus, Position, Side
from prod_core.storage import Storage, StorageError
from prod_core.storage.sqlite import BUSY_TIMEOUT_MS
from prod_core.testing.builders import close_write, open_write

RUN = "run-1"


@pytest.fixture
def db_path(db_target: str) -> str:
    return db_target


@pytest.fixture
def sqlite_path(tmp_path: Path) -> str:
    return str(tmp_path / "storage" / "crupto.db")


@pytest.fixture
def st(db_path: str) -> Iterator[Storage]:
    storage = Storage(db_path, flush_rows=1_000_000, flush_interval_s=3600)
    storage.start_run(RUN, mode="paper", feed="sim", config_hash="cfg", code_version="abc", ts=1000.0)
    yield storage
    storage.close()


@pytest.fixture
def other(db_path: str, st: Storage) -> Iterator[Storage]:
    """A second Storage on the same file, as the CLI would open it."""
    storage = Storage(db_path)
    yield storage
    storage.close()


def _plan(st: Storage, plan_id: str = "p1", status: str = "pending", run_id: str = RUN) -> None:
    st.add_plan(
        run_id, plan_id=plan_id, ts_ms=1_000, strategy="breakout", symbol="BTC/USDT", side=Side.BUY,
        entry=100.0, stop=95.0, target=110.0, reason="test", regime=2, decision="approved", qty=1.5,
        risk_usd=7.5, nominal_r_usd=7.5, status=status,
    )  # fmt: skip


def _order(order_id: str = "o1", status: OrderStatus = OrderStatus.SUBMITTED) -> Order:
    return Order(order_id, "p1", 2_000, "BTC/USDT", Side.BUY, 1.5, "market", FillReason.ENTRY, status)


def _fill(fill_id: str = "f1") -> Fill:
    return Fill(fill_id, "o1", 2_000, "BTC/USDT", Side.BUY, 1.5, 100.5, 0.09, FillReason.ENTRY)


def _pos(position_id: str = "pos1", last_price: float = 101.0) -> Position:
    return Position(position_id, "p1", "breakout", "BTC/USDT", Side.BUY, 1.5, 100.5, 95.0, 110.0, 2_000, 7.5, 0.09, last_price)


def _equity(st: Storage, ts_ms: int, run_id: str = RUN) -> None:
    st.add_equity(
        run_id, ts_ms=ts_ms, equity_usd=10_000.0 + ts_ms, cash_usd=9_000.0, pnl_cum_r=0.5, dd_state=-0.2,
        max_dd_r=0.3, exposure_gross_pct=12.0, exposure_net_pct=-3.0,
    )  # fmt: skip


# ---------------------------------------------------------------- opening


def test_creates_parent_dir_and_uses_wal(sqlite_path: str) -> None:
    """Opening creates the parent directory, enables WAL and sets the pragmas."""
    db_path = sqlite_path
    with Storage(db_path) as st:
        conn = st._conn
        assert Path(db_path).is_file()
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == BUSY_TIMEOUT_MS  # then retried with backoff
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def _open_at(path: str, start: float, results) -> None:
    while time.time() < start:  # every process opens at the same moment
        time.sleep(0.001)
    try:
        Storage(path).close()
        results.put("ok")
    except StorageError as exc:
        results.put(str(exc))


def test_processes_opening_one_new_file_together_all_open_it(tmp_path: Path) -> None:
    """Runners started together on a new SQLite file (the firm-cap and many-account setups): SQLite may
    answer one of them "database is locked" at the switch to WAL without waiting on the busy
    timeout; that open is tried again, so every process opens the file (real processes, 4 at a
    time, a new file each round: the race showed in about 1 round of 40 with 3 processes)."""
    ctx = multiprocessing.get_context("fork")
    for k in range(25):
        path = str(tmp_path / f"race{k}.db")
        results = ctx.Queue()
        start = time.time() + 0.2
        procs = [ctx.Process(target=_open_at, args=(path, start, results)) for _ in range(4)]
        for p in procs:
            p.start()
        got = [results.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(timeout=60)
        assert got == ["ok"] * 4, (k, got)
        with Storage(path, create=False) as st:
            assert st.query("PRAGMA journal_mode")[0]["journal_mode"] == "wal"


def test_sqlite_url_is_accepted(tmp_path: Path) -> None:
    """A sqlite:/// URL opens the file it names."""
    target = tmp_path / "via_url.db"
    with Storage(f"sqlite:///{target}") as st:
        assert st.path == str(target)
    assert target.is_file()


def test_other_schemes_are_refused_without_leaking_password() -> None:
    """A URL of an unsupported database is refused with the supported forms and no password."""
    with pytest.raises(StorageError, match="mysql is not supported.*postgresql://") as err:
        Storage("mysql://bot:s3cret@db:3306/crupto")
    assert "s3cret" not in str(err.value)


def test_unreachable_postgresql_is_refused_without_leaking_password() -> None:
    """A PostgreSQL URL nobody answers at is one StorageError line naming the URL without its password."""
    with pytest.raises(StorageError, match="cannot open database postgresql://bot:\\*\\*\\*@127.0.0.1:1/crupto") as err:
        Storage("postgresql://bot:s3cret@127.0.0.1:1/crupto")
    assert "s3cret" not in str(err.value) and "DB_URL" in str(err.value)


def test_not_a_database_is_refused(tmp_path: Path) -> None:
    """A file that is not SQLite is refused with its path and the fix."""
    bogus = tmp_path / "notes.db"
    bogus.write_bytes(b"this is definitely not a sqlite database file" * 100)
    with pytest.raises(StorageError, match="not a usable SQLite database") as err:
        Storage(str(bogus))
    assert str(bogus) in str(err.value) and "move it away" in str(err.value)


def test_uncreatable_directory_is_refused(tmp_path: Path) -> None:
    """A parent directory that cannot be created is reported with the path and the fix."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StorageError, match="cannot create the directory") as err:
        Storage(str(blocker / "sub" / "crupto.db"))
    assert "writable location" in str(err.value)


def test_close_is_idempotent_and_flushes(db_path: str) -> None:
    """close() flushes buffered rows, can be called twice, and later use raises StorageError."""
    st = Storage(db_path)
    st.start_run(RUN, mode="paper", feed="sim", config_hash="c", code_version="v", ts=1.0)
    _equity(st, 1)
    st.close()
    st.close()
    with pytest.raises(StorageError, match="closed"):
        st.get_run(RUN)
    with Storage(db_path) as again:
        assert len(again.equity_curve(RUN)) == 1


# ---------------------------------------------------------------- runs and feeds


def test_run_lifecycle(st: Storage) -> None:
    """start_run / heartbeat / end_run / get_run / list_runs round-trip."""
    run = st.get_run(RUN)
    assert run is not None
    assert (run["mode"], run["feed"], run["status"], run["config_hash"], run["code_version"]) == (
        "paper", "sim", "running", "cfg", "abc",
    )  # fmt: skip
    st.heartbeat(RUN, 1010.0)
    assert st.get_run(RUN)["heartbeat_at"] == 1010.0
    st.start_run("run-2", mode="paper", feed="replay", config_hash="c2", code_version="v2", ts=2000.0, args="--x")
    assert [r["run_id"] for r in st.list_runs()] == ["run-2", RUN]
    assert [r["run_id"] for r in st.list_runs(limit=1)] == ["run-2"]
    st.end_run(RUN, status="stopped", ts=1020.0)
    run = st.get_run(RUN)
    assert run["status"] == "stopped" and run["ended_at"] == 1020.0
    assert st.get_run("nope") is None
    with pytest.raises(StorageError):
        st.end_run(RUN, status="running", ts=1.0)


def test_end_run_flushes_buffers(st: Storage, other: Storage) -> None:
    """end_run writes every buffered row before marking the run."""
    _equity(st, 1)
    st.end_run(RUN, status="stopped", ts=1.0)
    assert len(other.equity_curve(RUN)) == 1


def test_mark_stale_runs(st: Storage) -> None:
    """Running runs whose heartbeat is older than max_age become crashed; others stay."""
    st.heartbeat(RUN, 1000.0)
    st.start_run("fresh", mode="paper", feed="sim", config_hash="", code_version="", ts=1090.0)
    st.start_run("done", mode="paper", feed="sim", config_hash="", code_version="", ts=900.0)
    st.end_run("done", status="stopped", ts=950.0)
    assert st.mark_stale_runs(1100.0, 60.0) == [(RUN, 100.0)]
    assert st.get_run(RUN)["status"] == "crashed"
    assert st.get_run(RUN)["ended_at"] == 1000.0
    assert st.get_run("fresh")["status"] == "running"
    assert st.get_run("done")["status"] == "stopped"
    assert st.mark_stale_runs(1100.0, 60.0) == []


def test_feed_state_upsert(st: Storage) -> None:
    """set_feed_state inserts then updates one row per (run, feed)."""
    st.set_feed_state(RUN, "sim", 1, 1.0)
    st.set_feed_state(RUN, "sim", 0, 2.0, detail="stale 5s")
    st.set_feed_state(RUN, "ccxt", -1, 3.0)
    rows = {r["feed"]: r for r in st.feed_states(RUN)}
    assert rows["sim"]["health"] == 0 and rows["sim"]["detail"] == "stale 5s" and rows["sim"]["updated_at"] == 2.0
    assert rows["ccxt"]["health"] == -1


# ---------------------------------------------------------------- plans, orders, fills, positions


def test_plan_round_trip_and_status(st: Storage) -> None:
    """Plans keep every field; status updates apply after the insert in the same flush."""
    _plan(st, "p1")
    _plan(st, "p2")
    st.update_plan_status(RUN, "p2", "filled")
    pending = st.pending_plans(RUN)
    assert [p["plan_id"] for p in pending] == ["p1"]
    p = pending[0]
    assert (p["side"], p["regime"], p["entry"], p["stop"], p["target"], p["qty"], p["decision"]) == (
        "buy", 2, 100.0, 95.0, 110.0, 1.5, "approved",
    )  # fmt: skip
    assert [p["plan_id"] for p in st.pending_plans()] == ["p1"]
    assert [p["status"] for p in st.plans(RUN)] == ["pending", "filled"]
    with pytest.raises(StorageError):
        st.update_plan_status(RUN, "p1", "bogus")


def test_cancel_pending_plans_includes_buffered(st: Storage, other: Storage) -> None:
    """cancel_pending_plans cancels buffered and stored pending plans immediately."""
    _plan(st, "p1")
    st.flush()
    _plan(st, "p2")
    _plan(st, "p3", status="vetoed")
    assert st.cancel_pending_plans(RUN) == 2
    assert other.pending_plans() == []
    assert sorted(p["status"] for p in other.plans(RUN)) == ["cancelled", "cancelled", "vetoed"]


def test_order_round_trip_and_status_update(st: Storage) -> None:
    """Orders store enum values; re-adding an order updates its status."""
    st.add_order(RUN, _order())
    rejected = Order(
        "o2", "p1", 2_001, "BTC/USDT", Side.SELL, 1.0, "market", FillReason.STOP, OrderStatus.REJECTED, "no liquidity"
    )
    st.add_order(RUN, rejected)
    st.flush()
    st.add_order(RUN, _order(status=OrderStatus.FILLED))
    rows = {o["order_id"]: o for o in st.orders(RUN)}
    assert rows["o1"]["status"] == "filled" and rows["o1"]["side"] == "buy" and rows["o1"]["reason"] == "entry"
    assert rows["o2"]["status"] == "rejected" and rows["o2"]["reject_reason"] == "no liquidity"
    assert len(rows) == 2


def _exit_fill(fill_id: str = "f2", price: float = 109.0) -> Fill:
    return Fill(fill_id, "o2", 9_000, "BTC/USDT", Side.SELL, 1.5, price, 0.03, FillReason.TARGET, "maker")


def test_fill_round_trip(st: Storage) -> None:
    """Fills keep every field and store enum values as strings."""
    st.commit_account(open_write(_fill(), _pos(), run_id=RUN))
    (f,) = st.fills(RUN)
    assert (f["fill_id"], f["order_id"], f["ts_ms"], f["side"], f["qty"], f["price"], f["fee_usd"]) == (
        "f1", "o1", 2_000, "buy", 1.5, 100.5, 0.09,
    )  # fmt: skip
    assert f["reason"] == "entry" and f["liquidity"] == "taker"
    assert len(st.fills()) == 1


def test_commit_account_is_durable_immediately(st: Storage, other: Storage) -> None:
    """A second connection sees the fill, its journal entry, its position and the buffered order
    before it as soon as commit_account returns."""
    st.add_order(RUN, _order())
    st.commit_account(open_write(_fill(), _pos(), run_id=RUN))
    assert [f["fill_id"] for f in other.fills(RUN)] == ["f1"]
    assert [o["order_id"] for o in other.orders(RUN)] == ["o1"]
    assert [(j["kind"], j["event"], j["fill_id"]) for j in other.journal("paper")] == [("fill", "open", "f1")]
    assert [p["position_id"] for p in other.open_positions("paper")] == ["pos1"]
    assert st.buffered_rows == 0


def test_duplicate_fill_raises_and_keeps_buffers(st: Storage, other: Storage) -> None:
    """A failing journal write rolls back whole (no journal entry, no position) and keeps the buffers."""
    st.commit_account(open_write(_fill(), _pos(), run_id=RUN))
    _equity(st, 5)
    with pytest.raises(StorageError, match="rolled back"):
        st.commit_account(open_write(_fill(), _pos("pos2"), run_id=RUN))
    assert st.buffered_rows == 1
    assert len(other.journal("paper")) == 1 and len(other.open_positions()) == 1
    st.flush()
    assert len(st.equity_curve(RUN)) == 1


def test_fill_ids_are_unique_for_the_life_of_the_db(st: Storage) -> None:
    """The same fill id in another run is refused by the journal (ids never repeat in one DB)."""
    st.start_run("run-2", mode="paper", feed="sim", config_hash="", code_version="", ts=2.0)
    st.commit_account(open_write(_fill(), _pos(), run_id=RUN))
    with pytest.raises(StorageError, match="UNIQUE"):
        st.commit_account(open_write(_fill(), _pos("pos2"), run_id="run-2"))


def test_duplicate_run_id_is_refused(st: Storage) -> None:
    """start_run with an id already in the DB is a clear error, not a traceback from SQLite."""
    with pytest.raises(StorageError, match="already exists.*another --run-id"):
        st.start_run(RUN, mode="paper", feed="sim", config_hash="", code_version="", ts=5.0)


def test_position_open_mark_close_and_account_view(st: Storage, other: Storage) -> None:
    """Positions are inserted by the opening commit, marked by buffered updates, closed by the closing
    commit, listed per account while open; a write that matches no open row is an error."""
    st.start_run("run-2", mode="paper", feed="sim", config_hash="", code_version="", ts=1.0)
    st.commit_account(open_write(_fill(), _pos("pos1", 101.0), run_id=RUN))
    st.commit_account(open_write(_fill("f9"), _pos("pos2", 50.0), run_id="run-2", account="replay:run-2"))
    st.mark_positions(RUN, [_pos("pos1", 102.0)])
    opened = {p["position_id"]: p for p in st.open_positions()}
    assert set(opened) == {"pos1", "pos2"} and [p["position_id"] for p in st.open_positions("paper")] == ["pos1"]
    assert opened["pos1"]["last_price"] == 102.0 and opened["pos1"]["side"] == "buy"
    assert opened["pos1"]["status"] == "open" and opened["pos1"]["exit_price"] is None

    st.mark_positions(RUN, [_pos("pos1", 103.0)])  # buffered, written together with the close
    st.commit_account(close_write(_exit_fill(), "pos1", run_id=RUN, pnl_usd=12.6, trade_r=1.68))
    assert [p["position_id"] for p in other.open_positions()] == ["pos2"]
    (closed,) = other.closed_trades(RUN)
    assert (closed["exit_reason"], closed["exit_price"], closed["pnl_usd"], closed["trade_r"], closed["ts_close_ms"]) == (
        "target", 109.0, 12.6, 1.68, 9_000,
    )  # fmt: skip
    assert other.closed_trades() == [closed]
    # Closing twice, re-opening the same id, or marking a closed position: errors, nothing written.
    with pytest.raises(StorageError, match="matched no open position"):
        st.commit_account(close_write(_exit_fill("f3"), "pos1", run_id=RUN))
    with pytest.raises(StorageError, match="UNIQUE"):
        st.commit_account(open_write(_fill("f4"), _pos("pos1"), run_id=RUN))
    st.mark_positions(RUN, [_pos("pos1", 1.0)])
    st.flush()
    assert st.mark_misses == ["pos1"] and other.closed_trades(RUN)[0]["last_price"] == 109.0
    assert [j["fill_id"] for j in other.journal("paper")] == ["f1", "f2"]


# ---------------------------------------------------------------- equity, events, buffering


def test_equity_round_trip(st: Storage) -> None:
    """Equity snapshots keep every field in time order."""
    _equity(st, 2)
    _equity(st, 1)
    curve = st.equity_curve(RUN)
    assert [e["ts_ms"] for e in curve] == [1, 2]
    e = curve[0]
    assert (e["equity_usd"], e["cash_usd"], e["pnl_cum_r"], e["dd_state"], e["max_dd_r"]) == (
        10_001.0, 9_000.0, 0.5, -0.2, 0.3,
    )  # fmt: skip
    assert (e["exposure_gross_pct"], e["exposure_net_pct"]) == (12.0, -3.0)


def test_event_round_trip(st: Storage) -> None:
    """Events keep their fields as JSON and decode them on read."""
    st.add_event(RUN, ts=5.0, kind="feed_stale", severity="warning", component="feed", message="stale", fields={"s": 5})
    (ev,) = st.events(RUN)
    assert (ev["kind"], ev["severity"], ev["component"], ev["message"], ev["fields"]) == (
        "feed_stale", "warning", "feed", "stale", {"s": 5},
    )  # fmt: skip


def test_add_equity_does_not_touch_db(st: Storage, other: Storage) -> None:
    """add_equity only buffers: a second connection sees nothing until flush."""
    _equity(st, 1)
    assert other.table_rows("equity", RUN) == []
    assert st.buffered_rows == 1


def test_buffered_rows_invisible_until_flush(st: Storage, other: Storage) -> None:
    """Every buffered write is invisible to a second connection until flush, then visible."""
    _plan(st, "p1")
    st.add_order(RUN, _order())
    _equity(st, 1)
    st.add_event(RUN, ts=1.0, kind="k", severity="info", component="c", message="m", fields={})
    tables = ("plans", "orders", "equity", "events")
    assert all(other.table_rows(t, RUN) == [] for t in tables)
    st.flush()
    assert all(len(other.table_rows(t, RUN)) == 1 for t in tables)


def test_maybe_flush_by_rows_and_interval(db_path: str) -> None:
    """maybe_flush flushes at flush_rows buffered rows or after flush_interval_s."""
    with Storage(db_path, flush_rows=3, flush_interval_s=10.0) as st, Storage(db_path) as other:
        st.start_run(RUN, mode="paper", feed="sim", config_hash="", code_version="", ts=0.0)
        assert not st.maybe_flush(100.0)  # nothing buffered: just starts the interval
        _equity(st, 1)
        _equity(st, 2)
        assert not st.maybe_flush(101.0)
        _equity(st, 3)
        assert st.maybe_flush(102.0)
        assert len(other.equity_curve(RUN)) == 3
        _equity(st, 4)
        assert not st.maybe_flush(105.0)
        assert st.maybe_flush(112.5)
        assert len(other.equity_curve(RUN)) == 4


def test_flush_is_one_fast_transaction(st: Storage, other: Storage) -> None:
    """10k equity rows flush in one transaction, quickly, and all arrive."""
    for i in range(10_000):
        _equity(st, i)
    assert other.table_rows("equity", RUN) == []
    t0 = time.perf_counter()
    st.flush()
    elapsed = time.perf_counter() - t0
    assert len(other.equity_curve(RUN)) == 10_000
    assert elapsed < 2.0, f"flush of 10k rows took {elapsed:.2f}s"


def test_failed_flush_keeps_rows(st: Storage) -> None:
    """A flush that violates a constraint rolls back, keeps the buffers and names the problem; close reports it."""
    _equity(st, 1, run_id="unknown-run")  # foreign key: the run was never started
    with pytest.raises(StorageError, match="FOREIGN KEY"):
        st.flush()
    assert st.buffered_rows == 1
    with pytest.raises(StorageError, match="FOREIGN KEY"):
        st.close()  # close still closes the connection, and reports the rows it could not write
    assert st.closed


# ---------------------------------------------------------------- governance, audit, commands


def test_governance_state_survives_reopen(db_path: str) -> None:
    """Governance state is account-level and survives close/reopen."""
    state = {"daily_lock": {"reason": "max_trades", "day": "2024-01-02"}, "dd_epoch_peak_r": 1.25, "kill": False}
    with Storage(db_path) as st:
        assert st.load_governance_state() is None
        st.save_governance_state({"old": True}, ts=1.0)
        st.save_governance_state(state, ts=2.0)
        st.save_governance_state({"other": 1}, ts=2.0, account="paper-2")
    with Storage(db_path) as st:
        assert st.load_governance_state() == state
        assert st.load_governance_state("paper-2") == {"other": 1}


def test_audit_log_newest_first(st: Storage) -> None:
    """Audit entries round-trip with decoded details, newest first."""
    st.add_audit(ts=1.0, actor="alice", action="unlock", comment="checked", details={"reason": "max_trades"})
    st.add_audit(ts=2.0, actor="bob", action="reset_dd", comment="epoch", details={}, run_id=RUN)
    log = st.audit_log()
    assert [a["action"] for a in log] == ["reset_dd", "unlock"]
    assert log[0]["run_id"] == RUN and log[0]["account"] == "paper"
    assert log[1]["details"] == {"reason": "max_trades"} and log[1]["comment"] == "checked"
    assert len(st.audit_log(limit=1)) == 1


def test_command_queue_lifecycle(st: Storage, other: Storage) -> None:
    """Commands enqueued by the CLI are pending in id order, then applied or refused exactly once."""
    a = other.enqueue_command("unlock", args={"reason": "manual"}, comment="ok", actor="alice", ts=1.0)
    b = other.enqueue_command("kill-switch", args={"on": True}, comment="test", actor="bob", ts=2.0)
    pending = st.pending_commands()
    assert [c["id"] for c in pending] == [a, b] and a < b
    assert pending[0]["args"] == {"reason": "manual"} and pending[0]["status"] == "pending"
    assert st.mark_command(a, status="applied", result="unlocked", ts=3.0, run_id=RUN)
    assert not st.mark_command(a, status="refused", result="again", ts=4.0, run_id=RUN)
    assert st.mark_command(b, status="refused", result="not allowed", ts=4.0, run_id=RUN)
    assert other.pending_commands() == []
    done = other.get_command(a)
    assert (done["status"], done["result"], done["applied_at"], done["run_id"]) == ("applied", "unlocked", 3.0, RUN)
    with pytest.raises(StorageError):
        st.mark_command(b, status="pending", result="", ts=5.0, run_id=RUN)


# ---------------------------------------------------------------- exports


def test_table_rows_whitelist(st: Storage) -> None:
    """table_rows exports known run-scoped tables and refuses anything else."""
    st.commit_account(open_write(_fill(), _pos(), run_id=RUN))
    assert "fills" in st.tables() and "governance_state" not in st.tables()
    assert [r["fill_id"] for r in st.table_rows("fills", RUN)] == ["f1"]
    assert st.table_rows("runs", RUN)[0]["run_id"] == RUN
    with pytest.raises(StorageError, match="cannot be exported"):
        st.table_rows("fills; DROP TABLE runs", RUN)
