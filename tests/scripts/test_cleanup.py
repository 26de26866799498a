"""scripts/cleanup.py: keep the newest run folders and logs, never touch protected files or a running run's log."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from prod_core.storage import Storage
from tests.scripts.conftest import add_run, run_script

PROTECTED = ("summary_latest.md", "02_acceptance_checklist.md", "telemetry_events.csv")


def _tree(root: Path, runs: int = 5, logs: int = 8) -> None:
    """reports/run_r0..r<runs-1> and logs/l0..l<logs-1>.log, index 0 the newest, plus the protected files."""
    reports, logdir = root / "reports", root / "logs"
    (reports / "archive" / "run_ancient").mkdir(parents=True)
    (reports / "archive" / "run_ancient" / "runs.parquet").write_bytes(b"x")
    logdir.mkdir()
    old = time.time() - 3600
    for name in PROTECTED:
        (reports / name).write_text("keep me\n", encoding="utf-8")
        os.utime(reports / name, (old - 10_000, old - 10_000))
    os.utime(reports / "archive", (old - 10_000, old - 10_000))
    for i in range(runs):
        folder = reports / f"run_r{i}"
        folder.mkdir()
        (folder / "summary.md").write_text(f"# Run r{i}\n", encoding="utf-8")
        os.utime(folder, (old - i * 60, old - i * 60))
    for i in range(logs):
        path = logdir / f"l{i}.log"
        path.write_text("line\n", encoding="utf-8")
        os.utime(path, (old - i * 60, old - i * 60))


def _names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def test_defaults_keep_two_run_folders_and_five_logs(tmp_path: Path) -> None:
    """Without flags the 2 newest run_* folders and 5 newest logs stay; archive and protected files are untouched."""
    _tree(tmp_path)
    res = run_script("cleanup.py", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert _names(tmp_path / "reports") == {"run_r0", "run_r1", "archive", *PROTECTED}
    assert _names(tmp_path / "logs") == {f"l{i}.log" for i in range(5)}
    assert (tmp_path / "reports" / "archive" / "run_ancient" / "runs.parquet").is_file()
    assert all((tmp_path / "reports" / n).read_text(encoding="utf-8") == "keep me\n" for n in PROTECTED)
    assert "removed 3 run folder(s) and 3 log(s)" in res.stdout


def test_flags_and_env_directories(tmp_path: Path) -> None:
    """--keep-runs/--keep-logs set the counts; REPORTS_DIR/LOGS_DIR from the environment choose the directories."""
    _tree(tmp_path / "x")
    res = run_script("cleanup.py", "--keep-runs", "4", "--keep-logs", "1", cwd=tmp_path,
                     env={"REPORTS_DIR": str(tmp_path / "x" / "reports"), "LOGS_DIR": str(tmp_path / "x" / "logs")})
    assert res.returncode == 0, res.stderr
    assert _names(tmp_path / "x" / "reports") == {"run_r0", "run_r1", "run_r2", "run_r3", "archive", *PROTECTED}
    assert _names(tmp_path / "x" / "logs") == {"l0.log"}
    res = run_script("cleanup.py", "--keep-runs", "0", "--keep-logs", "0",
                     "--reports-dir", "x/reports", "--logs-dir", "x/logs", cwd=tmp_path)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert _names(tmp_path / "x" / "reports") == {"archive", *PROTECTED} and _names(tmp_path / "x" / "logs") == set()


def test_dry_run_removes_nothing(tmp_path: Path) -> None:
    """--dry-run lists what would go and leaves every file in place."""
    _tree(tmp_path)
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    res = run_script("cleanup.py", "--dry-run", "--keep-runs", "0", "--keep-logs", "0", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "would remove" in res.stdout and "run_r4" in res.stdout and "nothing was changed" in res.stdout
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before


def test_running_runs_log_and_recent_logs_are_kept(tmp_path: Path) -> None:
    """The log and report of a run with a fresh heartbeat stay, and so does any log written in the last 10 s."""
    _tree(tmp_path)
    with Storage(str(tmp_path / "storage" / "crupto.db")) as st:
        add_run(st, "l6", age_days=0.5, running=True)
        add_run(st, "r3", age_days=0.5, running=True)
        add_run(st, "l7", age_days=1)  # finished: its old log goes
    (tmp_path / "logs" / "fresh.log").write_text("now\n", encoding="utf-8")
    os.utime(tmp_path / "logs" / "fresh.log", (time.time() - 3600 * 5, time.time() - 3))
    res = run_script("cleanup.py", "--keep-runs", "0", "--keep-logs", "0", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert _names(tmp_path / "logs") == {"l6.log", "fresh.log"}
    assert _names(tmp_path / "reports") == {"run_r3", "archive", *PROTECTED}
    assert "still running" in res.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--keep-runs", "-1"], "'-1'"),
        (["--keep-logs", "many"], "'many'"),
        (["--reports-dir", "nowhere", "--logs-dir", "nothere"], "nowhere"),
        (["--reports-dir", "afile"], "afile"),
        (["--db", "missing.db"], "missing.db"),
    ],
)
def test_bad_input_exits_2(tmp_path: Path, args: list[str], needle: str) -> None:
    """Bad numbers, absent or file directories and a missing --db exit 2 naming the value, removing nothing."""
    _tree(tmp_path)
    (tmp_path / "afile").write_text("", encoding="utf-8")
    res = run_script("cleanup.py", *args, cwd=tmp_path)
    assert res.returncode == 2 and needle in res.stderr, res.stderr
    assert len(_names(tmp_path / "logs")) == 8 and len(list((tmp_path / "reports").glob("run_*"))) == 5
