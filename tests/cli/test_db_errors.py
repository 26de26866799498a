"""Bad DB paths: the CLI and the runner exit 2 with one line, create nothing, print no traceback."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from prod_core.storage import Storage
from tests.cli.helpers import bind_mode, make_crupto_db, one_error_line, run_cli, run_runner, tree

# Every command that needs the runner's database (fetch-history does not).
DB_COMMANDS = [
    ["status"],
    ["status", "--json"],
    ["kill-switch", "on", "--comment", "drill"],
    ["kill-switch", "off"],
    ["unlock", "--comment", "reviewed"],
    ["lock"],
    ["reset-dd", "--comment", "reviewed"],
    ["hold", "trend_following"],
    ["release", "mean_reversion"],
    ["reload"],
    ["restart-feed"],
]


@pytest.mark.parametrize("command", DB_COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_cli_with_a_typo_db_refuses_and_creates_nothing(tmp_path: Path, command: list[str]) -> None:
    """`--db typo.db` is not silently created: exit 2, one line naming it and the settings' DB."""
    line = one_error_line(run_cli(tmp_path, "--db", "typo.db", *command), "error: database typo.db (= ")
    assert f"{tmp_path / 'typo.db'}) does not exist (nothing was created)" in line
    assert "the settings give DB_PATH=storage/crupto.db (default, i.e. " in line
    assert line.endswith("pass --db with the database the runner uses")
    assert tree(tmp_path) == []


def test_cli_without_db_names_the_settings_db_it_tried(tmp_path: Path) -> None:
    """No --db: DB_PATH from the environment is tried, and the message says where it came from."""
    missing = tmp_path / "runner" / "crupto.db"
    line = one_error_line(run_cli(tmp_path, "kill-switch", "on", db_env=str(missing)), f"error: database {missing} ")
    assert "it is the settings' DB_PATH (environment DB_PATH) and no runner has made a database there" in line
    assert tree(tmp_path) == []


def test_cli_refuses_a_directory(tmp_path: Path) -> None:
    line = one_error_line(run_cli(tmp_path, "--db", str(tmp_path), "status"), f"error: database path {tmp_path} ")
    assert "is a directory, not a database file" in line and f"--db {tmp_path / 'crupto.db'}" in line


def test_cli_refuses_a_path_under_a_regular_file(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello\n")
    done = run_cli(tmp_path, "--db", "notes.txt/crupto.db", "lock")
    line = one_error_line(done, "error: database notes.txt/crupto.db")
    assert f"cannot exist: {tmp_path / 'notes.txt'} is a regular file, not a directory" in line
    assert tree(tmp_path) == ["notes.txt"]


def test_cli_refuses_a_text_file(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello, not a database\n")
    line = one_error_line(run_cli(tmp_path, "--db", "notes.txt", "status"), "error: notes.txt (= ")
    assert "is not an SQLite database (its first bytes are not 'SQLite format 3')" in line
    assert (tmp_path / "notes.txt").read_text() == "hello, not a database\n"


def test_cli_refuses_an_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.db").touch()
    line = one_error_line(run_cli(tmp_path, "--db", "empty.db", "kill-switch", "on"), "error: database empty.db")
    assert "is an empty file, not a crupto database" in line
    assert (tmp_path / "empty.db").stat().st_size == 0 and tree(tmp_path) == ["empty.db"]


def test_cli_refuses_a_foreign_sqlite_db(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "other.db")
    conn.execute("CREATE TABLE notes (x)")
    conn.commit()
    conn.close()
    line = one_error_line(run_cli(tmp_path, "--db", "other.db", "status"), "error: database other.db")
    assert "is an SQLite file but has no crupto schema (tables: notes)" in line
    assert tree(tmp_path) == ["other.db"]


def test_cli_refuses_an_unreachable_postgresql_url_without_the_password(tmp_path: Path) -> None:
    line = one_error_line(run_cli(tmp_path, "--db", "postgresql://bot:s3cret@127.0.0.1:1/crupto", "status"),
                          "error: cannot open database postgresql://bot:***@127.0.0.1:1/crupto: cannot connect")
    assert "s3cret" not in line and "check DB_URL" in line


def test_cli_refuses_a_read_only_db(tmp_path: Path) -> None:
    db = make_crupto_db(tmp_path / "crupto.db")
    with bind_mode(db, "ro"):
        done = run_cli(tmp_path, "--db", str(db), "kill-switch", "on")
    line = one_error_line(done, f"error: database {db} is read-only (")
    assert "make it writable for this user" in line


def test_cli_operator_command_on_the_runner_db_still_queues(tmp_path: Path) -> None:
    """An existing crupto DB with no runner up: the command is queued (exit 0) as before."""
    db = make_crupto_db(tmp_path / "crupto.db")
    done = run_cli(tmp_path, "--db", str(db), "kill-switch", "on", "--comment", "drill")
    assert done.returncode == 0, done.stderr
    assert "queued command #1 kill-switch: no runner is running; it is applied when the next run starts" in done.stdout
    with Storage(str(db), create=False) as st:
        assert [c["command"] for c in st.pending_commands()] == ["kill-switch"]


def test_cli_operator_command_names_a_silent_running_run(tmp_path: Path) -> None:
    """A run recorded as running but silent is named when the command is queued."""
    db = make_crupto_db(tmp_path / "crupto.db")
    with Storage(str(db)) as st:
        st.start_run("r-dead", mode="paper", feed="sim", config_hash="h", code_version="v", ts=time.time() - 120)
    done = run_cli(tmp_path, "--db", str(db), "lock")
    assert done.returncode == 0, done.stderr
    assert "no runner is running (run r-dead is recorded as running but has no heartbeat for 12" in done.stdout


# ------------------------------------------------------------------ the runner

def test_runner_refuses_a_directory(tmp_path: Path) -> None:
    done = run_runner(tmp_path, str(tmp_path))
    line = one_error_line(done, f"storage error: database path {tmp_path} is a directory")
    assert f"--db {tmp_path / 'crupto.db'}" in line


def test_runner_refuses_a_text_file(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello\n")
    line = one_error_line(run_runner(tmp_path, "notes.txt"), "storage error: notes.txt (= ")
    assert "is not a usable SQLite database" in line and "move it away" in line
    assert (tmp_path / "notes.txt").read_text() == "hello\n"


def test_runner_refuses_a_path_under_a_regular_file(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello\n")
    line = one_error_line(run_runner(tmp_path, "notes.txt/crupto.db"), "storage error: cannot create the directory ")
    assert f"{tmp_path / 'notes.txt'} is a regular file, not a directory" in line


def test_runner_refuses_a_read_only_file(tmp_path: Path) -> None:
    db = make_crupto_db(tmp_path / "crupto.db")
    with bind_mode(db, "ro"):
        one_error_line(run_runner(tmp_path, str(db)), f"storage error: database {db} is read-only (")


def test_runner_refuses_a_read_only_directory(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    with bind_mode(folder, "ro"):
        line = one_error_line(run_runner(tmp_path, str(folder / "crupto.db")), "storage error: cannot create database ")
    assert f"directory {folder} is read-only (" in line


def test_runner_refuses_an_unreachable_postgresql_url_without_the_password(tmp_path: Path) -> None:
    line = one_error_line(run_runner(tmp_path, "postgresql://bot:s3cret@127.0.0.1:1/crupto"),
                          "storage error: cannot open database postgresql://bot:***@127.0.0.1:1/crupto: cannot connect")
    assert "s3cret" not in line and "check DB_URL" in line
