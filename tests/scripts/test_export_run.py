"""scripts/export_run.py: a run's report folder from the database, and clear refusals."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from prod_core.reports.report import REPORT_TABLES
from prod_core.storage import Storage
from tests.scripts.conftest import add_run, run_script


def _db(tmp_path: Path) -> Path:
    db = tmp_path / "storage" / "crupto.db"
    with Storage(str(db)) as st:
        add_run(st, "old", age_days=3)
        add_run(st, "done", age_days=1, open_position=True)
        add_run(st, "live", age_days=0.01, running=True)
    return db


def test_default_exports_latest_finished_run_with_all_tables_summary_and_log(tmp_path: Path) -> None:
    """Without --run-id the latest finished run is exported: every table as CSV+Parquet, summary.md, run.log, recorded."""
    db = _db(tmp_path)
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "done.log").write_text("Paper-loop остановлен\n", encoding="utf-8")
    res = run_script("export_run.py", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    folder = tmp_path / "reports" / "run_done"
    assert "exported run done" in res.stdout
    with Storage(str(db)) as st:
        for table in REPORT_TABLES:
            rows = st.table_rows(table, "done")
            assert (folder / f"{table}.csv").is_file()
            assert pq.read_metadata(folder / f"{table}.parquet").num_rows == len(rows)
        assert len(st.table_rows("fills", "done")) == 5 and len(st.table_rows("positions", "done")) == 3
        [rec] = st.exports("done")
        assert rec["kind"] == "report" and rec["path"] == str(Path("reports") / "run_done")
    assert "# Run done" in (folder / "summary.md").read_text(encoding="utf-8")
    assert (folder / "run.log").read_text(encoding="utf-8") == "Paper-loop остановлен\n"
    assert (tmp_path / "reports" / "summary_latest.md").is_file()


def test_explicit_run_id_db_and_out_flags(tmp_path: Path) -> None:
    """--run-id, --db and --out choose the run, database and folder; a missing log is reported, not fatal."""
    db = _db(tmp_path)
    out = tmp_path / "elsewhere"
    res = run_script("export_run.py", "--run-id", "old", "--db", str(db), "--out", str(out), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert pq.read_metadata(out / "run_old" / "fills.parquet").num_rows == 4
    assert "no log at" in res.stdout and not (out / "run_old" / "run.log").exists()


def test_db_path_from_environment(tmp_path: Path) -> None:
    """DB_PATH and REPORTS_DIR from the environment are used when no flag is given."""
    db = _db(tmp_path)
    res = run_script("export_run.py", cwd=tmp_path / "storage",
                     env={"DB_PATH": str(db), "REPORTS_DIR": str(tmp_path / "r")})  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "r" / "run_done" / "summary.md").is_file()


def test_running_run_is_refused_unless_allowed(tmp_path: Path) -> None:
    """A run with a fresh heartbeat is refused with exit 2; --allow-running exports a snapshot."""
    _db(tmp_path)
    res = run_script("export_run.py", "--run-id", "live", cwd=tmp_path)
    assert res.returncode == 2 and "still running" in res.stderr and "--allow-running" in res.stderr
    assert not (tmp_path / "reports" / "run_live").exists()
    res = run_script("export_run.py", "--run-id", "live", "--allow-running", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "reports" / "run_live" / "summary.md").is_file()


def test_bad_input_exits_2_with_the_value_and_the_fix(tmp_path: Path) -> None:
    """A missing database or an unknown run id exits 2 naming the value; no database file is created."""
    res = run_script("export_run.py", "--db", "nope/crupto.db", cwd=tmp_path)
    assert res.returncode == 2 and "nope/crupto.db" in res.stderr and "--db" in res.stderr
    assert not (tmp_path / "nope").exists()
    _db(tmp_path)
    res = run_script("export_run.py", "--run-id", "ghost", cwd=tmp_path)
    assert res.returncode == 2 and "'ghost'" in res.stderr and "live" in res.stderr
    empty = tmp_path / "empty.db"
    Storage(str(empty)).close()
    res = run_script("export_run.py", "--db", str(empty), cwd=tmp_path)
    assert res.returncode == 2 and "no finished run" in res.stderr
