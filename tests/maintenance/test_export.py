"""prod_core.maintenance.export: choosing the run, refusing a live one, writing and recording the report."""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from prod_core.maintenance.common import UsageError
from prod_core.maintenance.export import check_running, export, main, pick_run
from prod_core.reports.report import REPORT_TABLES
from prod_core.storage import Storage
from tests.scripts.conftest import add_run


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """old (finished 3 days ago), done (finished, with an open position), live (running, fresh heartbeat)."""
    path = tmp_path / "storage" / "crupto.db"
    with Storage(str(path)) as st:
        add_run(st, "old", age_days=3)
        add_run(st, "done", age_days=1, open_position=True)
        add_run(st, "live", age_days=0.01, running=True)
    return path


def test_pick_run_defaults_to_the_latest_finished_run(db: Path) -> None:
    """Without an id the newest run that is not running is chosen; an id chooses that run, even a live one."""
    with Storage(str(db)) as st:
        assert pick_run(st, None)["run_id"] == "done"
        assert pick_run(st, "old")["run_id"] == "old"
        assert pick_run(st, "live")["status"] == "running"


def test_pick_run_names_an_unknown_id_and_the_known_ones(db: Path) -> None:
    with Storage(str(db)) as st, pytest.raises(UsageError) as err:
        pick_run(st, "ghost")
    message = str(err.value)
    assert "'ghost'" in message and "live" in message and "done" in message and "--run-id" in message


def test_pick_run_on_a_database_without_a_finished_run(tmp_path: Path) -> None:
    with Storage(str(tmp_path / "c.db")) as st:
        add_run(st, "live", age_days=0.01, running=True)
        with pytest.raises(UsageError, match="no finished run yet.*--allow-running"):
            pick_run(st, None)


def test_check_running_refuses_a_live_run_unless_allowed_and_notes_a_dead_one(db: Path) -> None:
    now = time.time()
    with Storage(str(db)) as st:
        live, done = st.get_run("live"), st.get_run("done")
    with pytest.raises(UsageError, match="run live is still running.*--allow-running"):
        check_running(live, now=now, allow_running=False)
    assert check_running(live, now=now, allow_running=True) is None
    assert check_running(done, now=now, allow_running=False) is None
    note = check_running(live, now=now + 3600, allow_running=False)  # an hour without heartbeat: it died
    assert note is not None and "run live" in note and "runner died" in note


def test_export_writes_every_table_with_the_database_row_counts_and_records_it(db: Path, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "done.log").write_text("stopped\n", encoding="utf-8")
    out = tmp_path / "reports"
    with Storage(str(db)) as st:
        folder, counts, log_copied = export(st, st.get_run("done"), out, logs, now=time.time())
        assert folder == out / "run_done" and log_copied
        assert set(counts) == set(REPORT_TABLES)
        for table in REPORT_TABLES:
            assert counts[table] == st.count_rows(table, "done")
            assert pq.read_metadata(folder / f"{table}.parquet").num_rows == counts[table]
        assert counts["fills"] == 5 and counts["positions"] == 3
        [record] = st.exports("done")
        assert record["kind"] == "report" and record["rows"] == sum(counts.values())
        assert st.exports("old") == []  # only the exported run is recorded
    assert (folder / "run.log").read_text(encoding="utf-8") == "stopped\n"
    assert "# Run done" in (folder / "summary.md").read_text(encoding="utf-8")


def test_export_without_a_log_says_so(db: Path, tmp_path: Path) -> None:
    with Storage(str(db)) as st:
        folder, _counts, log_copied = export(st, st.get_run("old"), tmp_path / "r", tmp_path / "nologs",
                                             now=time.time())  # fmt: skip
    assert not log_copied and not (folder / "run.log").exists()


def test_main_in_process_prints_the_summary_and_nothing_on_stderr(db: Path, tmp_path: Path, capsys) -> None:
    """Called as a function (stderr is not a terminal): the usual lines on stdout, no progress bar."""
    code = main(["--db", str(db), "--out", str(tmp_path / "out"), "--logs-dir", str(tmp_path / "logs")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "exported run done (stopped)" in captured.out and "fills=5" in captured.out
    assert captured.err == ""


def test_main_names_a_bad_out_and_a_missing_database(db: Path, tmp_path: Path, capsys) -> None:
    afile = tmp_path / "afile"
    afile.write_text("", encoding="utf-8")
    assert main(["--db", str(db), "--out", str(afile)]) == 2
    assert f"--out {afile} is a file" in capsys.readouterr().err
    missing = tmp_path / "nope" / "crupto.db"
    assert main(["--db", str(missing)]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "--db" in err
    assert not missing.parent.exists()
