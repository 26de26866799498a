"""A replay's write-behind (storage/writer.py): flushes applied by a writer process on the real
SQLite file, in order, one transaction each; read-your-writes; a failed flush kept and retried;
a killed writer or a killed runner leaves whole flushes only."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from prod_core.domain.types import Fill, FillReason, Order, OrderStatus, Position, Side
from prod_core.storage import LeaseLost, Storage, StorageError, WriterLost
from prod_core.testing.builders import close_write, open_write
from prod_core.testing.waiting import wait_until

RUN = "run-wb"
REPO = Path(__file__).resolve().parents[2]


def _fill(fill_id: str, side: Side = Side.BUY, reason: FillReason = FillReason.ENTRY) -> Fill:
    return Fill(fill_id, "o-" + fill_id, 2_000, "BTC/USDT", side, 1.5, 100.5, 0.09, reason)


def _pos(position_id: str, last_price: float = 101.0) -> Position:
    return Position(position_id, "p1", "breakout", "BTC/USDT", Side.BUY, 1.5, 100.5, 95.0, 110.0, 2_000, 7.5, 0.09,
                    last_price)


def _equity(st: Storage, ts_ms: int) -> None:
    st.add_equity(RUN, ts_ms=ts_ms, equity_usd=10_000.0 + ts_ms, cash_usd=9_000.0, pnl_cum_r=0.0, dd_state=0.0,
                  max_dd_r=0.0, exposure_gross_pct=0.0, exposure_net_pct=0.0)


def _count(db: Path, sql: str) -> int:
    with sqlite3.connect(db, timeout=30) as conn:
        return int(conn.execute(sql).fetchone()[0])


def _exited(pid: int) -> bool:
    try:
        return "zombie" in Path(f"/proc/{pid}/status").read_text().lower()  # exited, not yet reaped
    except FileNotFoundError:
        return True


def _writer_pid(st: Storage) -> int:
    assert st._writer is not None, "the write-behind did not start"
    return st._writer._proc.pid


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "crupto.db"


@pytest.fixture
def st(db: Path) -> Iterator[Storage]:
    storage = Storage(str(db), flush_rows=1_000_000, flush_interval_s=3600)
    storage.start_run(RUN, mode="replay", feed="replay", config_hash="", code_version="", ts=1.0)
    assert storage.write_behind() is True
    yield storage
    storage.close_quietly()


def test_flushes_land_in_order_and_reads_see_them(st: Storage, db: Path) -> None:
    """Rows flushed to the writer are read back by the same Storage at once (it waits for the writer),
    and the journal, positions and orders are what an in-process flush writes."""
    st.add_order(RUN, Order("o-f1", "p1", 1_000, "BTC/USDT", Side.BUY, 1.5, "market", FillReason.ENTRY,
                            OrderStatus.FILLED))
    st.commit_account(open_write(_fill("f1"), _pos("pos1"), run_id=RUN, account=f"replay:{RUN}"), immediate=False)
    for ts in range(100):
        _equity(st, ts)
    st.flush()  # handed to the writer: the loop does not wait for it
    st.mark_positions(RUN, [_pos("pos1", 104.0)])
    st.commit_account(close_write(_fill("f2", Side.SELL, FillReason.TARGET), "pos1", run_id=RUN,
                                  account=f"replay:{RUN}", pnl_usd=5.0, trade_r=0.6), immediate=False)
    st.flush()
    assert [j["fill_id"] for j in st.journal(f"replay:{RUN}")] == ["f1", "f2"]
    assert len(st.equity_curve(RUN)) == 100 and [o["status"] for o in st.orders(RUN)] == ["filled"]
    (trade,) = st.closed_trades(RUN)
    assert (trade["exit_price"], trade["pnl_usd"], trade["last_price"]) == (100.5, 5.0, 100.5)
    assert st._writer is not None and st._writer.frames == 2 and st._writer.pending == 0
    st.heartbeat(RUN, 5.0)  # a replay's heartbeat is one more flush for the writer: the loop does not wait
    assert st._writer.frames == 3 and st.get_run(RUN)["heartbeat_at"] == 5.0


def test_a_mark_that_hits_no_row_is_reported_through_the_writer(st: Storage) -> None:
    st.mark_positions(RUN, [_pos("nowhere", 1.0)])
    st.flush()
    st.equity_curve(RUN)  # any read waits for the writer's answer
    assert st.mark_misses == ["nowhere"]


def test_a_flush_that_fails_is_kept_and_written_once_when_the_database_is_free(db: Path, st: Storage) -> None:
    """Another process holds the write lock past the retry window: the flush is retried (counted, as
    in-process), then fails with StorageError at the next read, nothing of it written; the rows
    buffered meanwhile follow it; once the lock is gone every row lands exactly once, in order."""
    st.close_quietly()
    st2 = Storage(str(db), flush_rows=1_000_000, flush_interval_s=3600)
    st2.retry_window_s = 1.5
    retries: list[int] = []
    st2.on_retry = lambda attempt, waited, error: retries.append(attempt)
    st2.write_behind()
    holder = sqlite3.connect(db, timeout=30, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        for ts in range(50):
            _equity(st2, ts)
        st2.flush()  # sent: the writer waits for the lock, then gives up
        with pytest.raises(StorageError, match="cannot start a write transaction after"):
            st2.equity_curve(RUN)
        for ts in range(50, 80):
            _equity(st2, ts)
        st2.flush()  # the failed flush again, then these
        assert _count(db, "SELECT COUNT(*) FROM equity") == 0
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert [r["ts_ms"] for r in st2.equity_curve(RUN)] == list(range(80))
    assert retries and st2.retries == len(retries)
    st2.close()
    assert _count(db, "SELECT COUNT(*) FROM equity") == 80


def test_a_lease_taken_over_is_lease_lost_through_the_writer(db: Path, st: Storage) -> None:
    """A replay's buffered commit checks the lease in the writer's transaction: taken over, the
    runner gets LeaseLost and nothing of that flush is written."""
    account = f"replay:{RUN}"
    ok, _, _ = st.acquire_lease(account, RUN, pid=os.getpid(), host="h", now=time.time(), takeover=lambda h: None)
    assert ok
    with sqlite3.connect(db, timeout=30) as conn:
        conn.execute("UPDATE leases SET run_id = 'thief' WHERE account = ?", (account,))
    st.commit_account(open_write(_fill("f1"), _pos("pos1"), run_id=RUN, account=account), immediate=False)
    st.flush()
    with pytest.raises(LeaseLost, match="thief"):
        st.journal(account)
    assert _count(db, "SELECT COUNT(*) FROM journal WHERE fill_id IS NOT NULL") == 0


def test_a_killed_writer_stops_the_replay_and_leaves_whole_flushes(db: Path, st: Storage) -> None:
    """SIGKILL to the writer: the next flush or read raises WriterLost naming what happened; the
    database holds whole flushes only; rows buffered after it are never written (a gap in the
    journal would be worse than a shorter one); the Storage still reads and writes immediately."""
    account = f"replay:{RUN}"
    st.commit_account(open_write(_fill("f1"), _pos("pos1"), run_id=RUN, account=account), immediate=False)
    st.flush()
    st.journal(account)  # the first flush is confirmed
    pid = _writer_pid(st)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: st._writer._proc.poll() is not None, 60, "the writer's exit")  # type: ignore[union-attr]
    st.commit_account(close_write(_fill("f2", Side.SELL, FillReason.TARGET), "pos1", run_id=RUN, account=account),
                      immediate=False)
    with pytest.raises(WriterLost, match=r"signal 9.*prefix.*run it again"):
        st.flush()
        st.journal(account)
    st.commit_account(open_write(_fill("f3"), _pos("pos3"), run_id=RUN, account=account), immediate=False)
    st.flush()  # dropped: it would follow a flush that is not in the database
    assert [j["fill_id"] for j in st.journal(account)] == ["f1"] and st.dropped_rows >= 1
    st.end_run(RUN, status="failed", ts=2.0)
    assert st.get_run(RUN)["status"] == "failed"


def test_a_killed_runner_leaves_whole_flushes_and_no_writer_behind(db: Path, tmp_path: Path) -> None:
    """SIGKILL to the process that owns the Storage while flushes are in flight: the writer commits
    the flushes it received whole, exits by itself, and every flush is all or nothing."""
    script = tmp_path / "owner.py"
    script.write_text(textwrap.dedent(f"""
        import os, sys, time
        sys.path.insert(0, {str(REPO)!r})
        from prod_core.storage import Storage
        st = Storage({str(db)!r}, flush_rows=10**9, flush_interval_s=3600)
        st.start_run("r", mode="replay", feed="replay", config_hash="", code_version="", ts=1.0)
        st.write_behind()
        print("writer", st._writer._proc.pid, flush=True)
        n = 0
        while True:  # flushes of 500 rows each, one equity row per ts: a flush is whole when its rows are
            for _ in range(500):
                st.add_equity("r", ts_ms=n, equity_usd=1.0, cash_usd=1.0, pnl_cum_r=0.0, dd_state=0.0,
                              max_dd_r=0.0, exposure_gross_pct=0.0, exposure_net_pct=0.0)
                n += 1
            st.flush()
    """))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith("writer "), line
        writer = int(line.split()[1])
        wait_until(lambda: _count(db, "SELECT COUNT(*) FROM equity") >= 5_000, 120, "5,000 rows written", proc=proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    wait_until(lambda: _exited(writer), 60, "the writer's exit after its runner's death")
    rows = _count(db, "SELECT COUNT(*) FROM equity")
    assert rows % 500 == 0 and rows >= 5_000
    assert _count(db, "SELECT MAX(ts_ms) FROM equity") == rows - 1


def test_writer_that_cannot_open_the_database_is_refused_at_start(tmp_path: Path) -> None:
    """The writer opens the database read-write without creating it: a file moved away is a clear
    StorageError at ``write_behind`` and the Storage keeps writing itself."""
    db = tmp_path / "gone.db"
    st = Storage(str(db))
    st.start_run(RUN, mode="replay", feed="replay", config_hash="", code_version="", ts=1.0)
    try:
        db.rename(tmp_path / "moved.db")
        with pytest.raises(StorageError, match="writer process cannot open the database"):
            st.write_behind()
        assert st._writer is None
        _equity(st, 1)
        st.flush()  # written by this process, into the file it has open
        assert [r["ts_ms"] for r in st.equity_curve(RUN)] == [1]
    finally:
        st.close_quietly()


def _parity_replay(tmp: Path, name: str, **env_extra: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    from tests.conftest import shared_data_dir

    data = shared_data_dir()
    db = tmp / f"{name}.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALERT_TEST_", "CRUPTO_CRASH_AT"))}
    env.update(ENV_FILE=str(tmp / "none"), DB_PATH=str(db), REPORTS_DIR=str(tmp / f"reports-{name}"),
               LOGS_DIR=str(tmp / f"logs-{name}"), **env_extra)
    result = subprocess.run(
        [sys.executable, "-m", "prod_core.runner", "--feed", "replay", "--config-dir",
         str(REPO / "configs" / "scenarios" / "sma_parity"), "--port", "0", "--linger", "0", "--data",
         *(str(data / f"BYBIT_{s}USDT_5m.csv") for s in ("BTC", "ETH", "SOL", "BNB", "XRP"))],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    return result, db


def _journal(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT kind, event, symbol, side, qty, price, fee_usd FROM journal ORDER BY seq").fetchall()


def test_replay_whose_writer_dies_stops_failed_with_a_prefix_of_the_journal(tmp_path: Path) -> None:
    """The parity replay's writer process is SIGKILLed inside its fifth flush (test crash point): the
    runner stops with an error naming it, the run is `failed`, and the database holds whole flushes:
    its journal, fills and positions are a prefix of a full replay's, consistent with each other."""
    crashed, db = _parity_replay(tmp_path, "crashed", CRUPTO_CRASH_AT="mid_flush:5")
    out = crashed.stdout + crashed.stderr
    assert crashed.returncode != 0, out[-3000:]
    assert "storage writer process" in out and "signal 9" in out and "run it again" in out, out[-3000:]
    assert "replay: bars=" not in crashed.stdout
    full, full_db = _parity_replay(tmp_path, "full")
    assert full.returncode == 0, full.stdout[-3000:] + full.stderr[-3000:]
    part, whole = _journal(db), _journal(full_db)
    assert 0 < sum(1 for j in part if j[0] == "fill") < 5_009 and part == whole[:len(part)]
    with sqlite3.connect(db) as conn:
        fills = conn.execute("SELECT COUNT(*) FROM fills").fetchone()[0]
        opened = conn.execute("SELECT COUNT(*) FROM positions").fetchone()[0]
        (status,) = conn.execute("SELECT status FROM runs").fetchone()
    assert fills == sum(1 for j in part if j[0] == "fill")
    assert opened == sum(1 for j in part if j[:2] == ("fill", "open")) and status == "failed"
