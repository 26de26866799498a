"""prod_core.maintenance.export: choosing the run, refusing a live one, writing and recording the report.

Database content tests run on both backends (``db_target``: a SQLite file or a fresh PostgreSQL
database); a real replay into PostgreSQL is exported by the command line at the end."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from prod_core.maintenance.common import UsageError
from prod_core.maintenance.export import check_running, export, main, pick_run
from prod_core.reports.report import REPORT_TABLES
from prod_core.storage import Storage
from tests.maintenance.conftest import with_password
from tests.scripts.conftest import REPO, add_run

DATA = REPO.parent / "shared" / "data" / "BYBIT_BTCUSDT_5m.csv"


@pytest.fixture
def db(db_target: str) -> str:
    """old (finished 3 days ago), done (finished, with an open position), live (running, fresh heartbeat)."""
    with Storage(db_target) as st:
        add_run(st, "old", age_days=3)
        add_run(st, "done", age_days=1, open_position=True)
        add_run(st, "live", age_days=0.01, running=True)
    return db_target


def test_pick_run_defaults_to_the_latest_finished_run(db: str) -> None:
    """Without an id the newest run that is not running is chosen; an id chooses that run, even a live one."""
    with Storage(str(db)) as st:
        assert pick_run(st, None)["run_id"] == "done"
        assert pick_run(st, "old")["run_id"] == "old"
        assert pick_run(st, "live")["status"] == "running"


def test_pick_run_names_an_unknown_id_and_the_known_ones(db: str) -> None:
    with Storage(str(db)) as st, pytest.raises(UsageError) as err:
        pick_run(st, "ghost")
    message = str(err.value)
    assert "'ghost'" in message and "live" in message and "done" in message and "--run-id" in message


def test_pick_run_on_a_database_without_a_finished_run(db_target: str) -> None:
    with Storage(db_target) as st:
        add_run(st, "live", age_days=0.01, running=True)
        with pytest.raises(UsageError, match="no finished run yet.*--allow-running"):
            pick_run(st, None)


def test_check_running_refuses_a_live_run_unless_allowed_and_notes_a_dead_one(db: str) -> None:
    now = time.time()
    with Storage(str(db)) as st:
        live, done = st.get_run("live"), st.get_run("done")
    with pytest.raises(UsageError, match="run live is still running.*--allow-running"):
        check_running(live, now=now, allow_running=False)
    assert check_running(live, now=now, allow_running=True) is None
    assert check_running(done, now=now, allow_running=False) is None
    note = check_running(live, now=now + 3600, allow_running=False)  # an hour without heartbeat: it died
    assert note is not None and "run live" in note and "runner died" in note


def test_export_writes_every_table_with_the_database_row_counts_and_records_it(db: str, tmp_path: Path) -> None:
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


def test_export_without_a_log_says_so(db: str, tmp_path: Path) -> None:
    with Storage(str(db)) as st:
        folder, _counts, log_copied = export(st, st.get_run("old"), tmp_path / "r", tmp_path / "nologs",
                                             now=time.time())  # fmt: skip
    assert not log_copied and not (folder / "run.log").exists()


def test_main_in_process_prints_the_summary_and_nothing_on_stderr(db: str, tmp_path: Path, capsys) -> None:
    """Called as a function (stderr is not a terminal): the usual lines on stdout, no progress bar."""
    code = main(["--db", str(db), "--out", str(tmp_path / "out"), "--logs-dir", str(tmp_path / "logs")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "exported run done (stopped)" in captured.out and "fills=5" in captured.out
    assert captured.err == ""


def test_main_names_a_bad_out_and_a_missing_database(db: str, tmp_path: Path, capsys) -> None:
    afile = tmp_path / "afile"
    afile.write_text("", encoding="utf-8")
    assert main(["--db", str(db), "--out", str(afile)]) == 2
    assert f"--out {afile} is a file" in capsys.readouterr().err
    missing = tmp_path / "nope" / "crupto.db"
    assert main(["--db", str(missing)]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "--db" in err
    assert not missing.parent.exists()


def test_main_on_postgresql_never_prints_the_password(pg_url: str, tmp_path: Path, capsys) -> None:
    """--db postgresql://user:password@...: exported and recorded; the output shows the URL as user:***."""
    with Storage(pg_url) as st:
        add_run(st, "done", age_days=1)
    url = with_password(pg_url)
    code = main(["--db", url, "--out", str(tmp_path / "out"), "--logs-dir", str(tmp_path / "logs")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "exported run done (stopped)" in captured.out and "crupto:***@" in captured.out
    assert "s3cret" not in captured.out + captured.err
    with Storage(pg_url) as st:
        assert [e["kind"] for e in st.exports("done")] == ["report"]


def test_db_url_is_used_without_db_and_an_empty_postgresql_database_is_refused(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """Like the runner: DB_URL wins over DB_PATH; a database without crupto's schema is refused, untouched."""
    monkeypatch.setenv("DB_URL", with_password(pg_url))
    monkeypatch.setenv("DB_PATH", str(tmp_path / "nowhere.db"))
    monkeypatch.setenv("ENV_FILE", str(tmp_path / "none.env"))
    assert main(["--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "no crupto schema" in err and "crupto:***@" in err and "s3cret" not in err
    with Storage(pg_url) as st:  # now the runner's database
        add_run(st, "done", age_days=1)
    assert main(["--out", str(tmp_path / "out"), "--logs-dir", str(tmp_path / "logs")]) == 0
    assert "exported run done" in capsys.readouterr().out
    monkeypatch.setenv("DB_URL", "mysql://u:pw@h/db")
    assert main([]) == 2
    err = capsys.readouterr().err
    assert "DB_URL must be a postgresql://" in err and "pw" not in err


@pytest.mark.skipif(not DATA.is_file(), reason="shared replay data not present")
def test_export_of_a_real_replay_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    """A real replay through the runner into PostgreSQL, then scripts/export_run.py writes it again from there."""
    env = {k: v for k, v in os.environ.items() if k not in ("DB_PATH", "DB_URL") and not k.startswith("ALERT_TEST_")}
    env.update(DB_URL=with_password(pg_url), ENV_FILE=str(tmp_path / "none.env"), REPORTS_DIR=str(tmp_path / "reports"),
               LOGS_DIR=str(tmp_path / "logs"), PYTHONPATH=str(REPO))  # fmt: skip
    replay = subprocess.run(
        [sys.executable, "-m", "prod_core.runner", "--feed", "replay", "--config-dir",
         str(REPO / "configs/scenarios/sma_parity"), "--port", "0", "--linger", "0", "--data", str(DATA)],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert replay.returncode == 0, replay.stderr[-2000:]
    out = tmp_path / "again"
    export_run = subprocess.run([sys.executable, str(REPO / "scripts" / "export_run.py"), "--out", str(out)],
                                env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert export_run.returncode == 0, export_run.stderr[-2000:]
    assert "s3cret" not in export_run.stdout + export_run.stderr
    with Storage(pg_url, create=False) as st:
        (run,) = st.list_runs(1)
        fills = st.fills(run["run_id"])
        assert len(fills) > 100
        assert [e["kind"] for e in st.exports(run["run_id"])][-1] == "report"
    folder = out / f"run_{run['run_id']}"
    assert f"exported run {run['run_id']} (stopped) to {folder}" in export_run.stdout
    assert pq.read_metadata(folder / "fills.parquet").num_rows == len(fills)
