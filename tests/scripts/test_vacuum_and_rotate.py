"""scripts/vacuum_and_rotate.py: archive old runs, delete them in one transaction, VACUUM; and its refusals."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from prod_core.storage import RUN_TABLES, Storage, StorageError
from tests.scripts.conftest import DAY, account_rows, add_run, run_script


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _db(tmp_path: Path) -> tuple[Path, dict[str, dict[str, int]]]:
    """Six runs (two young, four old: one with an open position) plus account-level rows."""
    db = tmp_path / "storage" / "crupto.db"
    with Storage(str(db)) as st:
        add_run(st, "old_b", age_days=90, events=3000)
        add_run(st, "old_open", age_days=80, open_position=True)
        add_run(st, "old_a", age_days=70)
        add_run(st, "old_newest", age_days=60)
        add_run(st, "mid", age_days=10)
        add_run(st, "new", age_days=0.5)
        st.save_governance_state({"dd": -0.5}, ts=time.time())
        st.add_audit(ts=time.time() - 70 * DAY, actor="op", action="reset-dd", comment="c", details={}, run_id="old_a")
        cid = st.enqueue_command("hold", args={"strategy": "x"}, comment="c", actor="op", ts=time.time() - 70 * DAY)
        st.mark_command(cid, status="applied", result="ok", ts=time.time() - 70 * DAY, run_id="old_a")
        counts = {rid: st.run_row_counts(rid) for rid in ("old_a", "old_b", "old_open")}
    return db, counts


def test_rotation_archives_then_deletes_old_runs_keeps_new_ones_and_vacuums(tmp_path: Path) -> None:
    """Old runs go to Parquet+CSV with equal row counts and leave the DB; newest/young/open-position runs stay."""
    db, before = _db(tmp_path)
    accounts = account_rows(db)
    size_before = db.stat().st_size
    res = run_script("vacuum_and_rotate.py", "--db", "storage/crupto.db", "--out", "reports/archive",
                     "--keep-days", "30", "--keep-runs", "3", cwd=tmp_path)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "2 run(s) archived" in res.stdout and "VACUUM: db" in res.stdout
    assert "open position" in res.stdout and "old_open" in res.stdout
    with Storage(str(db)) as st:
        assert sorted(r["run_id"] for r in st.list_runs(100)) == ["mid", "new", "old_newest", "old_open"]
        for rid in ("old_a", "old_b"):
            assert not any(st.run_row_counts(rid).values())
            folder = tmp_path / "reports" / "archive" / f"run_{rid}"
            for table in RUN_TABLES:
                assert pq.read_metadata(folder / f"{table}.parquet").num_rows == before[rid][table]
                with (folder / f"{table}.csv").open(newline="", encoding="utf-8") as fh:
                    assert len(list(csv.reader(fh))) - 1 == before[rid][table]
            assert json.loads((folder / "manifest.json").read_text())["rows"] == before[rid]
            [rec] = st.exports(rid)
            assert rec["kind"] == "archive" and rec["rows"] == sum(before[rid].values())
        assert st.run_row_counts("old_open") == before["old_open"]
        assert [p["position_id"] for p in st.open_positions()] == ["old_open-pos2"]
    assert before["old_b"]["events"] == 3000 and before["old_a"]["positions"] == 2
    assert account_rows(db) == accounts
    assert not (tmp_path / "reports" / "archive" / "run_old_open").exists()
    assert db.stat().st_size < size_before


def test_archived_parquet_keeps_the_values(tmp_path: Path) -> None:
    """The archived rows carry the stored values with typed columns (fills of a deleted run can be read back)."""
    db, _ = _db(tmp_path)
    res = run_script("vacuum_and_rotate.py", "--keep-days", "30", "--keep-runs", "3", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    fills = pq.read_table(tmp_path / "reports" / "archive" / "run_old_a" / "fills.parquet").to_pylist()
    assert [f["fill_id"] for f in fills] == ["old_a-f0", "old_a-x0", "old_a-f1", "old_a-x1"] and fills[0]["price"] == 100.0
    runs = pq.read_table(tmp_path / "reports" / "archive" / "run_old_a" / "runs.parquet").to_pylist()
    assert runs[0]["status"] == "stopped" and isinstance(runs[0]["started_at"], float)


def test_running_run_is_skipped_but_a_dead_one_is_rotated(tmp_path: Path) -> None:
    """A run with a fresh heartbeat is never rotated; one marked running whose heartbeat stopped long ago is."""
    db = tmp_path / "crupto.db"
    with Storage(str(db)) as st:
        add_run(st, "live", age_days=50, running=True)
        add_run(st, "dead", age_days=40, running=True)
        st.heartbeat("dead", time.time() - 39 * DAY)
    res = run_script("vacuum_and_rotate.py", "--db", str(db), "--out", "arch", "--keep-days", "0",
                     "--keep-runs", "0", cwd=tmp_path)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "still running" in res.stdout and "the runner died" in res.stdout
    with Storage(str(db)) as st:
        assert [r["run_id"] for r in st.list_runs()] == ["live"]
    assert (tmp_path / "arch" / "run_dead" / "runs.parquet").is_file()
    assert not (tmp_path / "arch" / "run_live").exists()


def test_dry_run_changes_nothing(tmp_path: Path) -> None:
    """--dry-run prints the plan, writes no archive and leaves the database file byte for byte identical."""
    db, _ = _db(tmp_path)
    digest = _sha(db)
    res = run_script("vacuum_and_rotate.py", "--db", str(db), "--out", "reports/archive", "--keep-days", "30",
                     "--keep-runs", "3", "--dry-run", cwd=tmp_path)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "would archive + delete" in res.stdout and "would archive 2 run(s)" in res.stdout
    assert "nothing was changed" in res.stdout
    assert _sha(db) == digest
    assert not (tmp_path / "reports").exists()
    assert not os.path.exists(str(db) + "-wal") or os.path.getsize(str(db) + "-wal") == 0


def test_nothing_old_still_vacuums(tmp_path: Path) -> None:
    """With only young runs nothing is deleted and VACUUM keeps the file's size: an already compact file
    comes out of SQLite's rebuild the same size or one page larger (it lays the tables and their
    indexes out afresh; 57 -> 58 pages here since the sweep tables' primary-key index), never more."""
    db = tmp_path / "crupto.db"
    with Storage(str(db)) as st:
        add_run(st, "a", age_days=1)
    size = db.stat().st_size
    res = run_script("vacuum_and_rotate.py", "--db", str(db), "--out", "arch", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    with closing(sqlite3.connect(db)) as conn:
        page = conn.execute("PRAGMA page_size").fetchone()[0]
    assert "0 run(s) archived" in res.stdout and db.stat().st_size <= size + page
    with Storage(str(db)) as st:
        assert [r["run_id"] for r in st.list_runs()] == ["a"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--db", "missing.db"], "missing.db"),
        (["--keep-days", "-1"], "'-1'"),
        (["--keep-days", "abc"], "'abc'"),
        (["--keep-runs", "2.5"], "'2.5'"),
        (["--db", "notadb.db"], "not a crupto database"),
    ],
)
def test_bad_input_exits_2(tmp_path: Path, args: list[str], needle: str) -> None:
    """A missing or foreign database and bad numbers exit 2 with a message naming the value."""
    (tmp_path / "notadb.db").write_text("hello", encoding="utf-8")
    res = run_script("vacuum_and_rotate.py", *args, cwd=tmp_path)
    assert res.returncode == 2 and needle in res.stderr, res.stderr
    assert not (tmp_path / "missing.db").exists()


def test_delete_run_refuses_changed_rows_and_open_positions(tmp_path: Path) -> None:
    """Storage.delete_runs deletes nothing when the rows differ from the archive's or a run owns an open position."""
    with Storage(str(tmp_path / "c.db")) as st:
        add_run(st, "a", age_days=5)
        add_run(st, "b", age_days=5, open_position=True)
        counts = st.run_row_counts("a")
        with pytest.raises(StorageError, match="expected"):
            st.delete_runs(["a"], expected={"a": {**counts, "events": counts["events"] - 1}})
        with pytest.raises(StorageError, match="open position"):
            st.delete_runs(["a", "b"], expected={"a": counts, "b": st.run_row_counts("b")})
        assert st.run_row_counts("a") == counts
        assert st.delete_run("a", expected=counts) == counts
        assert not any(st.run_row_counts("a").values())
