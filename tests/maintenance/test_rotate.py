"""prod_core.maintenance.rotate: the plan, the archive, the one-transaction delete, and the refusals.

Database content tests run on both backends (``db_target``: a SQLite file or a fresh PostgreSQL
database); the PostgreSQL-only ones check the read-only session, the password-free output, and a
rotation of a real replay that keeps the account's journal."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from prod_core.maintenance.common import UsageError
from prod_core.maintenance.rotate import (
    archive_runs,
    connect_ro,
    delete_archived,
    main,
    non_negative_days,
    plan_rotation,
)
from prod_core.storage import RUN_TABLES, Storage, StorageError
from prod_core.storage.postgres import PgError
from tests.maintenance.conftest import account_rows, snapshot, with_password
from tests.scripts.conftest import DAY, REPO, add_run

DATA = REPO.parent / "shared" / "data" / "BYBIT_BTCUSDT_5m.csv"


@pytest.fixture
def db(db_target: str) -> str:
    """Six runs, newest first: young, live (started 50 days ago, fresh heartbeat), dead (marked running, no
    heartbeat for 59 days), old_a, old_open (owns an open position), old_b."""
    path = db_target
    with Storage(path) as st:
        add_run(st, "old_b", age_days=90)
        add_run(st, "old_open", age_days=80, open_position=True)
        add_run(st, "old_a", age_days=70)
        add_run(st, "dead", age_days=60, running=True)
        st.heartbeat("dead", time.time() - 59 * DAY)
        add_run(st, "live", age_days=50, running=True)
        add_run(st, "young", age_days=10)
        cid = st.enqueue_command("hold", args={"strategy": "x"}, comment="c", actor="op", ts=time.time() - 70 * DAY)
        st.mark_command(cid, status="applied", result="ok", ts=time.time() - 70 * DAY, run_id="old_a")
    return path


def _plan(db: str, **kw) -> dict[str, dict]:
    conn = connect_ro(str(db))
    try:
        return {e["run_id"]: e for e in plan_rotation(conn, now=time.time(), **kw)}
    finally:
        conn.close()


def test_plan_keeps_newest_and_active_skips_live_and_open_rotates_old_and_dead(db: str) -> None:
    plan = _plan(db, keep_days=30, keep_runs=1)
    actions = {rid: e["action"] for rid, e in plan.items()}
    assert actions == {
        "young": "keep", "live": "keep", "dead": "rotate", "old_a": "rotate", "old_open": "skip", "old_b": "rotate",
    }  # fmt: skip
    assert "one of the 1 newest" in plan["young"]["why"]
    assert "active within the last 30 days" in plan["live"]["why"]  # its heartbeat is fresh
    assert "open position" in plan["old_open"]["why"]
    assert "the runner died" in plan["dead"]["why"]
    assert plan["old_a"]["rows"]["fills"] == 4 and not plan["old_a"]["exported"]
    # with nothing kept by age or count, a live run is still never rotated
    plan = _plan(db, keep_days=0, keep_runs=0)
    assert plan["live"]["action"] == "skip" and "still running" in plan["live"]["why"]
    assert plan["young"]["action"] == "rotate"
    # keep_runs alone protects whatever its age
    assert {rid for rid, e in _plan(db, keep_days=0, keep_runs=6).items() if e["action"] == "keep"} == set(plan)


def test_planning_never_writes(db: str) -> None:
    before = snapshot(db)
    _plan(db, keep_days=0, keep_runs=0)
    assert snapshot(db) == before


def test_archive_then_delete_removes_only_the_archived_runs(db: str, tmp_path: Path) -> None:
    before = account_rows(db)
    out = tmp_path / "archive"
    now = time.time()
    conn = connect_ro(str(db))
    with Storage(str(db)) as st:
        expected = {rid: st.run_row_counts(rid) for rid in ("old_a", "old_b", "dead")}
        plan = plan_rotation(conn, now=now, keep_days=30, keep_runs=1)
        archives = archive_runs(conn, plan, out, db=str(db), now=now)
        conn.close()
        assert list(archives) == ["dead", "old_a", "old_b"]  # plan order: newest first
        for rid, (folder, counts) in archives.items():
            assert folder == out / f"run_{rid}" and counts == expected[rid]
            for table in RUN_TABLES:
                assert pq.read_metadata(folder / f"{table}.parquet").num_rows == counts[table]
            assert json.loads((folder / "manifest.json").read_text())["rows"] == counts
        deleted = delete_archived(st, archives, now=now)
        assert deleted == expected
        assert sorted(r["run_id"] for r in st.list_runs(100)) == ["live", "old_open", "young"]
        assert [e["kind"] for e in st.exports("old_a")] == ["archive"]
        assert any(st.run_row_counts("old_open").values())
    assert account_rows(db) == before
    assert not (out / "run_old_open").exists() and not (out / "run_live").exists()


def test_delete_refuses_a_run_written_after_its_archive(db: str, tmp_path: Path) -> None:
    """A row added between archive and delete aborts the whole delete: nothing is lost, nothing deleted."""
    now = time.time()
    conn = connect_ro(str(db))
    with Storage(str(db)) as st:
        archives = archive_runs(conn, plan_rotation(conn, now=now, keep_days=30, keep_runs=1), tmp_path / "a",
                                db=str(db), now=now)  # fmt: skip
        conn.close()
        st.add_event("old_b", ts=now, kind="info", severity="info", component="test", message="late", fields={})
        with pytest.raises(StorageError, match="old_b.*nothing was deleted"):
            delete_archived(st, archives, now=now)
        assert {"old_a", "old_b", "dead"} <= {r["run_id"] for r in st.list_runs(100)}


def test_bad_numbers_name_the_value() -> None:
    for text in ("-1", "abc", "inf"):
        with pytest.raises(argparse.ArgumentTypeError, match=repr(text)):
            non_negative_days(text)
    assert non_negative_days("0.5") == 0.5


def test_main_dry_run_changes_nothing_and_bad_input_exits_2(db: str, tmp_path: Path, capsys) -> None:
    before = snapshot(db)
    assert main(["--db", str(db), "--out", str(tmp_path / "arch"), "--keep-runs", "1", "--dry-run"]) == 0
    captured = capsys.readouterr()
    assert "would archive 3 run(s)" in captured.out and captured.err == ""
    assert snapshot(db) == before and not (tmp_path / "arch").exists()
    assert main(["--db", str(tmp_path / "missing.db")]) == 2
    assert "missing.db" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["--db", str(db), "--keep-runs", "2.5"])
    assert exit_.value.code == 2 and "'2.5'" in capsys.readouterr().err
    (tmp_path / "notadb.db").write_text("hello", encoding="utf-8")
    with pytest.raises(UsageError, match="not a crupto database"):
        connect_ro(str(tmp_path / "notadb.db"))


@pytest.mark.parametrize("backend", ["postgres"])
def test_main_rotates_on_postgresql_without_printing_the_password(db: str, tmp_path: Path, capsys) -> None:
    """The whole command on PostgreSQL (SQLite's is tests/scripts'): the URL shows as user:***, VACUUM says what it did."""
    before = account_rows(db)
    out = tmp_path / "arch"
    assert main(["--db", with_password(db), "--out", str(out), "--keep-runs", "1"]) == 0
    captured = capsys.readouterr()
    assert "s3cret" not in captured.out + captured.err and "crupto:***@" in captured.out
    assert "done: 3 run(s) archived" in captured.out and "PostgreSQL's VACUUM" in captured.out
    manifest = json.loads((out / "run_old_a" / "manifest.json").read_text())
    assert manifest["database"].startswith("postgresql://crupto:***@") and manifest["rows"]["fills"] == 4
    with Storage(db, create=False) as st:
        assert sorted(r["run_id"] for r in st.list_runs(100)) == ["live", "old_open", "young"]
        assert [e["kind"] for e in st.exports("old_b")] == ["archive"]
    assert account_rows(db) == before


def test_postgresql_read_only_session_and_refusals(pg_url: str, tmp_path: Path, capsys) -> None:
    """The planning connection cannot write; an empty database or an unreachable server is bad input (exit 2)."""
    with pytest.raises(UsageError, match="not a crupto database.*--db URL"):
        connect_ro(pg_url)
    with Storage(pg_url) as st:
        add_run(st, "r", age_days=40)
    conn = connect_ro(pg_url)
    try:
        with pytest.raises(PgError, match="read-only"):
            conn.execute("DELETE FROM events")
    finally:
        conn.close()
    port = pg_url.split("@", 1)[1].split("/", 1)[0]
    unreachable = with_password(pg_url).replace(port, "127.0.0.1:1")
    assert main(["--db", unreachable, "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "cannot connect to postgresql://crupto:***@127.0.0.1:1/" in err and "s3cret" not in err


@pytest.mark.skipif(not DATA.is_file(), reason="shared replay data not present")
def test_rotation_of_a_real_replay_on_postgresql_keeps_the_journal(pg_url: str, tmp_path: Path) -> None:
    """Two real replays into PostgreSQL (DB_URL); scripts/vacuum_and_rotate.py --keep-runs 1 --keep-days 0
    skips the older run while it owns its last open position, and once that position is voided archives
    and deletes the older run's rows and leaves its account's journal whole."""
    env = {k: v for k, v in os.environ.items() if k not in ("DB_PATH", "DB_URL") and not k.startswith("ALERT_TEST_")}
    env.update(DB_URL=with_password(pg_url), ENV_FILE=str(tmp_path / "none.env"), REPORTS_DIR=str(tmp_path / "reports"),
               LOGS_DIR=str(tmp_path / "logs"), PYTHONPATH=str(REPO))  # fmt: skip

    def run(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, *args], env=env, cwd=tmp_path, capture_output=True, text=True,
                              timeout=300)  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        assert "s3cret" not in done.stdout + done.stderr
        return done

    for _ in range(2):
        run("-m", "prod_core.runner", "--feed", "replay", "--config-dir", str(REPO / "configs/scenarios/sma_parity"),
            "--port", "0", "--linger", "0", "--data", str(DATA))  # fmt: skip
    with Storage(pg_url, create=False) as st:
        newer, older = st.list_runs(2)
        account = older["account"]
        (open_pos,) = st.open_positions(account)  # the replay ends holding a position
    rotate = run(str(REPO / "scripts" / "vacuum_and_rotate.py"), "--keep-runs", "1", "--keep-days", "0")
    assert f"run {older['run_id']} [stopped" in rotate.stdout and "owns 1 open position(s)" in rotate.stdout
    assert "done: 0 run(s) archived" in rotate.stdout
    with Storage(pg_url, create=False) as st:
        st.repair_positions(account, older["run_id"], void=[open_pos["position_id"]], insert=[], ts=time.time())
        journal = st.journal(account)
        older_rows = st.run_row_counts(older["run_id"])
        assert older_rows["fills"] > 100 and len(journal) >= older_rows["fills"]
    rotate = run(str(REPO / "scripts" / "vacuum_and_rotate.py"), "--keep-runs", "1", "--keep-days", "0")
    assert f"archived run {older['run_id']}" in rotate.stdout and "PostgreSQL's VACUUM" in rotate.stdout, rotate.stdout
    folder = tmp_path / "reports" / "archive" / f"run_{older['run_id']}"
    assert pq.read_metadata(folder / "fills.parquet").num_rows == older_rows["fills"]
    with Storage(pg_url, create=False) as st:
        assert [r["run_id"] for r in st.list_runs(10)] == [newer["run_id"]]
        assert not any(st.run_row_counts(older["run_id"]).values())
        assert st.run_row_counts(newer["run_id"])["fills"] > 100
        assert st.journal(account) == journal  # the journal belongs to the account: never rotated
        assert [e["kind"] for e in st.exports(older["run_id"])][-1] == "archive"
