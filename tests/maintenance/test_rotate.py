"""prod_core.maintenance.rotate: the plan, the archive, the one-transaction delete, and the refusals."""

from __future__ import annotations

import argparse
import hashlib
import json
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
from tests.scripts.conftest import DAY, account_rows, add_run


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """Six runs, newest first: young, live (started 50 days ago, fresh heartbeat), dead (marked running, no
    heartbeat for 59 days), old_a, old_open (owns an open position), old_b."""
    path = tmp_path / "crupto.db"
    with Storage(str(path)) as st:
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


def _plan(db: Path, **kw) -> dict[str, dict]:
    conn = connect_ro(str(db))
    try:
        return {e["run_id"]: e for e in plan_rotation(conn, now=time.time(), **kw)}
    finally:
        conn.close()


def test_plan_keeps_newest_and_active_skips_live_and_open_rotates_old_and_dead(db: Path) -> None:
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


def test_planning_never_writes(db: Path) -> None:
    digest = hashlib.sha256(db.read_bytes()).hexdigest()
    _plan(db, keep_days=0, keep_runs=0)
    assert hashlib.sha256(db.read_bytes()).hexdigest() == digest


def test_archive_then_delete_removes_only_the_archived_runs(db: Path, tmp_path: Path) -> None:
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


def test_delete_refuses_a_run_written_after_its_archive(db: Path, tmp_path: Path) -> None:
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


def test_main_dry_run_changes_nothing_and_bad_input_exits_2(db: Path, tmp_path: Path, capsys) -> None:
    digest = hashlib.sha256(db.read_bytes()).hexdigest()
    assert main(["--db", str(db), "--out", str(tmp_path / "arch"), "--keep-runs", "1", "--dry-run"]) == 0
    captured = capsys.readouterr()
    assert "would archive 3 run(s)" in captured.out and captured.err == ""
    assert hashlib.sha256(db.read_bytes()).hexdigest() == digest and not (tmp_path / "arch").exists()
    assert main(["--db", str(tmp_path / "missing.db")]) == 2
    assert "missing.db" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["--db", str(db), "--keep-runs", "2.5"])
    assert exit_.value.code == 2 and "'2.5'" in capsys.readouterr().err
    (tmp_path / "notadb.db").write_text("hello", encoding="utf-8")
    with pytest.raises(UsageError, match="not a crupto database"):
        connect_ro(str(tmp_path / "notadb.db"))
