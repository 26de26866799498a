"""prod_core.maintenance.cleanup: what the plan removes and keeps, and that planning changes nothing."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from prod_core.maintenance.cleanup import PROTECTED, apply_cleanup, live_runs, main, plan_cleanup
from prod_core.maintenance.common import UsageError
from prod_core.storage import Storage
from tests.maintenance.conftest import snapshot, with_password
from tests.scripts.conftest import add_run


def _tree(root: Path, runs: int = 4, logs: int = 4) -> None:
    """reports/run_r0.. and logs/l0...log, index 0 the newest (all an hour or more old), plus protected files."""
    reports, logdir = root / "reports", root / "logs"
    (reports / "archive" / "run_ancient").mkdir(parents=True)
    logdir.mkdir()
    old = time.time() - 3600
    for name in PROTECTED - {"archive"}:
        (reports / name).write_text("keep me\n", encoding="utf-8")
    for i in range(runs):
        (reports / f"run_r{i}").mkdir()
        (reports / f"run_r{i}" / "summary.md").write_text("x" * 10, encoding="utf-8")
        os.utime(reports / f"run_r{i}", (old - i * 60, old - i * 60))
    for i in range(logs):
        (logdir / f"l{i}.log").write_text("line\n", encoding="utf-8")
        os.utime(logdir / f"l{i}.log", (old - i * 60, old - i * 60))


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_plan_removes_the_oldest_and_changes_nothing(tmp_path: Path) -> None:
    _tree(tmp_path)
    before = _files(tmp_path)
    plan = plan_cleanup(tmp_path / "reports", tmp_path / "logs", keep_runs=1, keep_logs=2, live=set(),
                        now=time.time())  # fmt: skip
    assert [r.path.name for r in plan.removals] == ["run_r1", "run_r2", "run_r3", "l2.log", "l3.log"]
    assert plan.run_folders == 3 and plan.log_files == 2 and plan.kept_runs == 1 and plan.kept_logs == 2
    assert plan.bytes == 3 * 10 + 2 * 5
    assert _files(tmp_path) == before
    assert apply_cleanup(plan, dry_run=True)[0] == f"would remove {tmp_path / 'reports' / 'run_r1'} (10 bytes)"
    assert _files(tmp_path) == before
    lines = apply_cleanup(plan)
    assert lines[-1] == f"removed {tmp_path / 'logs' / 'l3.log'} (5 bytes)"
    assert {p.name for p in (tmp_path / "reports").iterdir()} == {"run_r0", *PROTECTED}
    assert {p.name for p in (tmp_path / "logs").iterdir()} == {"l0.log", "l1.log"}


def test_a_running_runs_folder_and_log_and_a_fresh_log_are_kept(tmp_path: Path, db_target: str) -> None:
    """Running runs are read from the database, a SQLite file or a PostgreSQL one."""
    _tree(tmp_path)
    db = db_target
    with Storage(db) as st:
        add_run(st, "r2", age_days=0.5, running=True)
        add_run(st, "l3", age_days=0.5, running=True)
        add_run(st, "l1", age_days=1)  # finished
    live, note = live_runs(str(db), time.time())
    assert live == {"r2", "l3"} and "r2" in note
    (tmp_path / "logs" / "fresh.log").write_text("now\n", encoding="utf-8")
    plan = plan_cleanup(tmp_path / "reports", tmp_path / "logs", keep_runs=0, keep_logs=0, live=live,
                        now=time.time())  # fmt: skip
    removed = {r.path.name for r in plan.removals}
    assert removed == {"run_r0", "run_r1", "run_r3", "l0.log", "l1.log", "l2.log"}
    assert any("run r2 is still running" in n for n in plan.notes)
    assert any("fresh.log: written in the last 10 s" in n for n in plan.notes)


def test_live_runs_without_a_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No --db and no default database: fine, recognised by recent logs; an explicit missing --db is an error."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DB_PATH", raising=False)
    monkeypatch.delenv("ENV_FILE", raising=False)
    live, note = live_runs(None, time.time())
    assert live == set() and "no database" in note
    with pytest.raises(UsageError, match="--db .*nowhere.db not found"):
        live_runs(str(tmp_path / "nowhere.db"), time.time())


def test_plan_names_a_directory_that_is_a_file_or_absent(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("", encoding="utf-8")
    with pytest.raises(UsageError, match="--reports-dir .*afile is a file"):
        plan_cleanup(tmp_path / "afile", tmp_path / "logs", keep_runs=0, keep_logs=0, live=set(), now=0.0)
    with pytest.raises(UsageError, match="neither .*nowhere nor .*nothere exists"):
        plan_cleanup(tmp_path / "nowhere", tmp_path / "nothere", keep_runs=0, keep_logs=0, live=set(), now=0.0)


def test_cleanup_reads_running_runs_from_db_url_read_only_and_never_prints_the_password(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """DB_URL (PostgreSQL) wins over DB_PATH, as for the runner; the database is only read; the URL shows as user:***."""
    _tree(tmp_path)
    with Storage(pg_url) as st:
        add_run(st, "r2", age_days=0.5, running=True)
    before = snapshot(pg_url)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DB_URL", with_password(pg_url))
    monkeypatch.setenv("DB_PATH", str(tmp_path / "nowhere.db"))
    monkeypatch.setenv("ENV_FILE", str(tmp_path / "none.env"))
    assert main(["--keep-runs", "0", "--keep-logs", "0", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "running runs from postgresql://crupto:***@" in out and ": r2" in out and "s3cret" not in out
    assert "keep reports/run_r2: run r2 is still running" in out
    assert snapshot(pg_url) == before


def test_an_unreachable_postgresql_server_is_a_warning(tmp_path: Path, pg_url: str) -> None:
    """Like an unreadable SQLite file: running runs are then recognised by recent logs only."""
    port = pg_url.split("@", 1)[1].split("/", 1)[0]
    url = with_password(pg_url).replace(port, "127.0.0.1:1")
    live, note = live_runs(url, time.time())
    assert live == set() and note.startswith("warning: cannot read runs from postgresql://crupto:***@127.0.0.1:1/")
    assert "recent logs only" in note and "s3cret" not in note
