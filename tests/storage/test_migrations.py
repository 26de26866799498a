"""Schema migrations: fresh databases, upgrades from older versions, refusal of newer ones."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from prod_core.storage import LATEST_VERSION, MIGRATIONS, Storage, StorageError
from prod_core.storage.migrations import apply_migrations, current_version, split_statements


def _raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def test_migrations_are_ordered_and_at_least_two() -> None:
    """Versions are unique, increasing from 1, and there is more than the base schema."""
    versions = [v for v, _, _ in MIGRATIONS]
    assert versions == sorted(set(versions)) and versions[0] == 1
    assert len(MIGRATIONS) >= 2 and LATEST_VERSION == versions[-1]


def test_fresh_db_is_at_latest_version(tmp_path: Path) -> None:
    """A new database gets every migration, each recorded in schema_migrations."""
    with Storage(str(tmp_path / "fresh.db")) as st:
        assert st.schema_version == LATEST_VERSION
    rows = _raw(tmp_path / "fresh.db").execute("SELECT version, description, applied_at FROM schema_migrations").fetchall()
    assert [r[0] for r in rows] == [v for v, _, _ in MIGRATIONS]
    assert all(r[1] and r[2] > 0 for r in rows)


def test_v1_db_upgrades_on_open_and_keeps_rows(tmp_path: Path) -> None:
    """A database built with only v1 is upgraded when opened and its rows survive."""
    path = tmp_path / "old.db"
    conn = _raw(path)
    assert apply_migrations(conn, MIGRATIONS[:1]) == [1]
    conn.execute(
        "INSERT INTO runs (run_id, mode, feed, started_at, status) VALUES ('r-old', 'paper', 'sim', 1.0, 'stopped')"
    )
    assert current_version(conn) == 1
    assert "args" not in [c[1] for c in conn.execute("PRAGMA table_info(runs)")]
    conn.close()

    with Storage(str(path)) as st:
        assert st.schema_version == LATEST_VERSION
        run = st.get_run("r-old")
        assert run is not None and run["status"] == "stopped" and run["args"] == ""
        st.start_run("r-new", mode="paper", feed="sim", config_hash="h", code_version="c", ts=2.0, args="--feed sim")
        assert st.get_run("r-new")["args"] == "--feed sim"


def test_reopen_does_not_reapply(tmp_path: Path) -> None:
    """Opening an up-to-date database applies nothing."""
    path = tmp_path / "db.sqlite"
    Storage(str(path)).close()
    conn = _raw(path)
    assert apply_migrations(conn) == []
    assert conn.execute("SELECT COUNT(*) FROM schema_migrations").fetchone()[0] == len(MIGRATIONS)


def test_newer_db_is_refused_with_both_versions(tmp_path: Path) -> None:
    """A database newer than the code is refused with a message naming both versions and the fix."""
    path = tmp_path / "future.db"
    Storage(str(path)).close()
    conn = _raw(path)
    conn.execute("INSERT INTO schema_migrations VALUES (?, 'from the future', 0)", (LATEST_VERSION + 7,))
    conn.close()
    with pytest.raises(StorageError) as err:
        Storage(str(path))
    msg = str(err.value)
    assert str(LATEST_VERSION + 7) in msg and f"up to version {LATEST_VERSION}" in msg
    assert "upgrade crupto" in msg and str(path) in msg


def test_failed_migration_rolls_back(tmp_path: Path) -> None:
    """A migration that fails leaves the database at the previous version with no partial change."""
    conn = _raw(tmp_path / "bad.db")
    broken = [*MIGRATIONS[:1], (2, "broken", "CREATE TABLE half (x INTEGER);\nCREATE TABLE runs (x INTEGER);")]
    with pytest.raises(StorageError, match="migration 2"):
        apply_migrations(conn, broken)
    assert current_version(conn) == 1
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'half'").fetchone() is None


def test_split_statements_handles_semicolons_in_strings() -> None:
    """The splitter cuts on statement ends, not on semicolons inside literals."""
    sql = "CREATE TABLE t (x TEXT DEFAULT 'a;b');\nINSERT INTO t VALUES ('c;d');\n"
    assert len(split_statements(sql)) == 2


def test_v6_db_upgrades_to_accounts_runs_commands_and_firm_state(tmp_path: Path) -> None:
    """v7: existing commands are the paper account's, replay runs get replay:<run_id>, others
    paper; the firm-wide kill-switch starts off; a new run and command carry their account."""
    path = tmp_path / "v6.db"
    conn = _raw(path)
    assert apply_migrations(conn, [m for m in MIGRATIONS if m[0] <= 6])[-1] == 6
    conn.execute("INSERT INTO runs (run_id, mode, feed, started_at, status) VALUES ('p1', 'paper', 'sim', 1.0, 'stopped')")
    conn.execute("INSERT INTO runs (run_id, mode, feed, started_at, status) VALUES ('r1', 'paper', 'replay', 2.0, 'stopped')")
    conn.execute("INSERT INTO runs (run_id, mode, feed, started_at, status) VALUES ('c1', 'paper', 'ccxt', 3.0, 'stopped')")
    conn.execute("INSERT INTO commands (ts, command, actor, status) VALUES (1.0, 'hold', 'op', 'pending')")
    conn.close()

    with Storage(str(path)) as st:
        assert st.schema_version == LATEST_VERSION >= 7
        assert {r["run_id"]: r["account"] for r in st.list_runs(10)} == {"p1": "paper", "r1": "replay:r1", "c1": "paper"}
        assert [c["account"] for c in st.pending_commands()] == ["paper"]
        assert [c["id"] for c in st.pending_commands("paper")] == [1] and st.pending_commands("fund-a") == []
        assert st.firm_state()["kill_switch"] is False and st.firm_state()["epoch"] == 0
        assert st.known_accounts() == ["paper"] and st.known_accounts(replays=True) == ["paper", "replay:r1"]
        st.start_run("f1", mode="paper", feed="sim", config_hash="h", code_version="c", ts=4.0, account="fund-a")
        st.enqueue_command("lock", args={}, comment="", actor="op", ts=5.0, account="fund-a")
        assert st.latest_run("fund-a")["run_id"] == "f1" and st.latest_run("paper")["run_id"] == "c1"
        assert [c["command"] for c in st.pending_commands("fund-a")] == ["lock"]
        changed, firm = st.set_firm_kill_switch(True, actor="op", comment="drill", ts=6.0)
        assert changed and firm["kill_switch"] and firm["epoch"] == 1 and firm["comment"] == "drill"
        assert st.set_firm_kill_switch(True, actor="op", comment="again", ts=7.0)[0] is False
        assert [a["account"] for a in st.audit_log() if a["action"] == "firm-kill-switch"] == ["*"]
        st.record_firm_kill("fund-a", epoch=1, run_id="f1", ts=6.5)
        assert st.firm_kill("fund-a")["run_id"] == "f1"
        st.clear_firm_kill("fund-a")
        assert st.firm_kill("fund-a") is None
