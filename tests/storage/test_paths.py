"""check_db_path and Storage(create=False): one clear line for every bad database path."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from prod_core.storage import Storage, StorageError
from prod_core.storage.paths import check_db_path, settings_db_hint
from tests.cli.helpers import bind_mode, make_crupto_db, tree


@pytest.fixture(autouse=True)
def _no_env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings come from defaults unless a test sets DB_PATH or ENV_FILE itself."""
    monkeypatch.setenv("ENV_FILE", str(tmp_path / "missing.env"))
    monkeypatch.delenv("DB_PATH", raising=False)
    monkeypatch.delenv("MODE", raising=False)


def error_of(path: str, *, create: bool) -> str:
    with pytest.raises(StorageError) as err:
        check_db_path(path, create=create)
    message = str(err.value)
    assert "\n" not in message
    return message


# ------------------------------------------------------------------ accepted paths

@pytest.mark.parametrize("create", [True, False])
def test_existing_crupto_db_is_accepted(tmp_path: Path, create: bool) -> None:
    """An existing, writable SQLite file passes either way and its path is returned."""
    db = make_crupto_db(tmp_path / "crupto.db")
    assert check_db_path(str(db), create=create) == str(db)
    assert check_db_path(f"sqlite:///{db}", create=create) == str(db)


def test_missing_file_is_accepted_for_create_and_nothing_is_made(tmp_path: Path) -> None:
    """create=True accepts a new file in new directories but the check itself creates nothing."""
    target = tmp_path / "a" / "b" / "crupto.db"
    assert check_db_path(str(target), create=True) == str(target)
    assert tree(tmp_path) == []


def test_memory_is_accepted() -> None:
    """:memory: (tests) stays accepted."""
    assert check_db_path(":memory:", create=True) == ":memory:"
    assert check_db_path(":memory:", create=False) == ":memory:"


def test_empty_writable_file_is_accepted_for_create(tmp_path: Path) -> None:
    """A 0-byte writable file is an empty SQLite database the runner may initialise."""
    empty = tmp_path / "empty.db"
    empty.touch()
    assert check_db_path(str(empty), create=True) == str(empty)


# ------------------------------------------------------------------ refused paths

@pytest.mark.parametrize("create", [True, False])
def test_directory_is_refused(tmp_path: Path, create: bool) -> None:
    """A directory is named as such, with the file path to use instead."""
    message = error_of(str(tmp_path), create=create)
    assert f"database path {tmp_path} is a directory, not a database file" in message
    assert f"--db {tmp_path / 'crupto.db'}" in message


@pytest.mark.parametrize("create", [True, False])
def test_path_under_a_regular_file_is_refused(tmp_path: Path, create: bool) -> None:
    """A parent (or grand-parent) that is a regular file is named, whatever the depth."""
    blocker = tmp_path / "notes.txt"
    blocker.write_text("hello\n")
    message = error_of(str(blocker / "sub" / "crupto.db"), create=create)
    assert f"{blocker} is a regular file, not a directory" in message
    assert tree(tmp_path) == ["notes.txt"]


@pytest.mark.parametrize("content", [b"hello, this is a text file\n" * 10, b"abc"], ids=["text", "short"])
@pytest.mark.parametrize("create", [True, False])
def test_file_that_is_not_sqlite_is_refused(tmp_path: Path, content: bytes, create: bool) -> None:
    """The 16-byte SQLite header is checked; the file is left untouched."""
    bogus = tmp_path / "notes.db"
    bogus.write_bytes(content)
    message = error_of(str(bogus), create=create)
    assert f"{bogus} is not " in message and "SQLite format 3" in message
    assert bogus.read_bytes() == content and tree(tmp_path) == ["notes.db"]


def test_empty_file_is_not_a_crupto_database_for_the_cli(tmp_path: Path) -> None:
    """create=False: a 0-byte file is refused as 'not a crupto database'."""
    empty = tmp_path / "empty.db"
    empty.touch()
    message = error_of(str(empty), create=False)
    assert f"database {empty} is an empty file, not a crupto database" in message
    assert "pass --db with the database the runner uses" in message


def test_missing_file_is_refused_for_the_cli_with_the_settings_path(tmp_path: Path) -> None:
    """create=False: a missing file names the DB path the settings give and where it came from."""
    message = error_of(str(tmp_path / "typo.db"), create=False)
    assert f"database {tmp_path / 'typo.db'} does not exist (nothing was created)" in message
    assert "the settings give DB_PATH=storage/crupto.db (default, i.e. " in message
    assert "pass --db with the database the runner uses" in message


def test_relative_path_is_shown_with_its_absolute_form(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A relative path is shown as given and as resolved against the working directory."""
    monkeypatch.chdir(tmp_path)
    message = error_of("typo.db", create=False)
    assert f"database typo.db (= {tmp_path / 'typo.db'}) does not exist" in message


def test_postgresql_url_passes_and_other_schemes_are_one_line_without_the_password() -> None:
    """A postgresql:// URL is a server, not a file: the path checks pass it on unchanged (Storage
    connects to it); any other scheme is refused on one line, password redacted."""
    assert check_db_path("postgresql://bot:s3cret@db:5432/crupto", create=False) == "postgresql://bot:s3cret@db:5432/crupto"
    message = error_of("mysql://bot:s3cret@db:3306/crupto", create=True)
    assert message.startswith("DB=mysql://bot:***@db:3306/crupto: mysql is not supported")
    assert "s3cret" not in message


def test_device_is_refused() -> None:
    """A character device is not a database file."""
    assert "is not a regular file" in error_of("/dev/null", create=True)


# ------------------------------------------------------------------ read-only (real)

def test_read_only_file_is_refused(tmp_path: Path) -> None:
    """A database file this process cannot write is refused (root: a read-only bind mount)."""
    db = make_crupto_db(tmp_path / "crupto.db")
    with bind_mode(db, "ro"):
        message = error_of(str(db), create=True)
        assert f"database {db} is read-only (" in message
        assert "make it writable for this user" in message
        assert "is read-only" in error_of(str(db), create=False)


def test_existing_file_in_read_only_directory_is_refused(tmp_path: Path) -> None:
    """A writable file in a read-only directory is refused: WAL creates -wal/-shm beside it."""
    folder = tmp_path / "ro"
    folder.mkdir()
    db = make_crupto_db(folder / "crupto.db")
    with bind_mode(folder, "ro"), bind_mode(db, "rw"):
        assert os.access(db, os.W_OK)
        message = error_of(str(db), create=True)
        assert f"database {db}: its directory {folder} is read-only (" in message
        assert "-wal and -shm" in message


def test_new_file_in_read_only_directory_is_refused(tmp_path: Path) -> None:
    """create=True cannot make a database in a read-only directory."""
    folder = tmp_path / "ro"
    folder.mkdir()
    with bind_mode(folder, "ro"):
        message = error_of(str(folder / "sub" / "crupto.db"), create=True)
        assert f"cannot create database {folder / 'sub' / 'crupto.db'}: directory {folder} is read-only (" in message


def test_read_only_message_from_the_check_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the user, a failed os.access W_OK check gives the read-only message."""
    db = make_crupto_db(tmp_path / "crupto.db")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == db else real_access(p, mode))
    assert f"database {db} is read-only (" in error_of(str(db), create=True)


# ------------------------------------------------------------------ settings hint

def test_hint_names_environment_origin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """DB_PATH from the environment is named as such."""
    monkeypatch.setenv("DB_PATH", "/srv/crupto/crupto.db")
    assert settings_db_hint().startswith("the settings give DB_PATH=/srv/crupto/crupto.db (environment DB_PATH)")


def test_hint_names_env_file_origin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """DB_PATH from the .env file is named with the file."""
    env_file = tmp_path / "my.env"
    env_file.write_text("DB_PATH=/srv/crupto/crupto.db\n")
    monkeypatch.setenv("ENV_FILE", str(env_file))
    assert settings_db_hint().startswith(f"the settings give DB_PATH=/srv/crupto/crupto.db ({env_file} DB_PATH)")


def test_hint_redacts_a_postgresql_password(monkeypatch: pytest.MonkeyPatch) -> None:
    """A PostgreSQL DB_PATH in the hint never shows its password."""
    monkeypatch.setenv("DB_PATH", "postgresql://bot:s3cret@db/crupto")
    hint = settings_db_hint()
    assert "bot:***@db" in hint and "s3cret" not in hint


def test_hint_when_the_refused_path_is_the_settings_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When the settings point at the missing file itself, the hint says no runner made it yet."""
    monkeypatch.setenv("DB_PATH", str(tmp_path / "crupto.db"))
    message = error_of(str(tmp_path / "crupto.db"), create=False)
    assert "it is the settings' DB_PATH (environment DB_PATH) and no runner has made a database there" in message


# ------------------------------------------------------------------ Storage(create=False)

def test_storage_without_create_refuses_a_missing_file_and_creates_nothing(tmp_path: Path) -> None:
    """No file, no parent directory, no -wal/-shm appear."""
    with pytest.raises(StorageError, match="does not exist"):
        Storage(str(tmp_path / "new" / "crupto.db"), create=False)
    assert tree(tmp_path) == []


def test_storage_without_create_refuses_a_foreign_sqlite_db(tmp_path: Path) -> None:
    """An SQLite file without crupto's schema (even in WAL mode) is refused and left as it was."""
    foreign = tmp_path / "other.db"
    conn = sqlite3.connect(foreign)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE notes (x)")
    conn.commit()
    conn.close()
    before = foreign.read_bytes()
    with pytest.raises(StorageError) as err:
        Storage(str(foreign), create=False)
    message = str(err.value)
    assert f"database {foreign} is an SQLite file but has no crupto schema (tables: notes)" in message
    assert "the settings give DB_PATH=" in message and "\n" not in message
    assert tree(tmp_path) == ["other.db"] and foreign.read_bytes() == before


def test_storage_without_create_refuses_schema_migrations_without_runs(tmp_path: Path) -> None:
    """schema_migrations alone (no runs table) is not a crupto database."""
    odd = tmp_path / "odd.db"
    conn = sqlite3.connect(odd)
    conn.execute("CREATE TABLE schema_migrations (version INTEGER, description TEXT, applied_at REAL)")
    conn.execute("INSERT INTO schema_migrations VALUES (1, 'x', 0)")
    conn.commit()
    conn.close()
    with pytest.raises(StorageError, match="has no crupto schema"):
        Storage(str(odd), create=False)


def test_storage_without_create_refuses_memory() -> None:
    """:memory: can never be the runner's database."""
    with pytest.raises(StorageError, match="in-memory database, not a crupto database"):
        Storage(":memory:", create=False)


def test_storage_without_create_opens_a_crupto_db(tmp_path: Path) -> None:
    """An existing crupto database opens as before (WAL, latest schema)."""
    db = make_crupto_db(tmp_path / "crupto.db")
    with Storage(str(db)) as st:
        st.start_run("r1", mode="paper", feed="sim", config_hash="h", code_version="v", ts=1.0)
    with Storage(str(db), create=False) as st:
        assert st.get_run("r1")["status"] == "running"
        assert st._db().execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_storage_without_create_sees_a_db_whose_schema_is_only_in_the_wal(tmp_path: Path) -> None:
    """A live runner's fresh DB (schema not yet checkpointed into the main file) is recognised."""
    db = tmp_path / "crupto.db"
    runner = Storage(str(db))  # keeps the connection open: -wal holds the schema
    try:
        assert Path(f"{db}-wal").exists()
        with Storage(str(db), create=False) as cli:
            assert cli.list_runs() == []
    finally:
        runner.close()
