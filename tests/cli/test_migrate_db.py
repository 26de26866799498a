"""`cli migrate-db`: a real replay's SQLite database moved to a real throwaway PostgreSQL, verified
(counts per table, reconcile, report, fresh ids after the copy), and the refusals."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from prod_core.storage import Storage
from tests.cli.helpers import clean_env, run_cli

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data" / "BYBIT_BTCUSDT_5m.csv"


def _env(tmp: Path) -> dict[str, str]:
    env = clean_env(tmp, PYTHONPATH=str(REPO))
    env.pop("DB_URL", None)
    return env


def _run(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=tmp, env=_env(tmp), capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def replay_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """(SQLite file, run id, account) of one real replay, plus an audit row, a command and a firm-wide
    kill-switch change so that the account-level tables are not empty."""
    if not DATA.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"{DATA} is required under CI")
        pytest.skip(f"{DATA} not present")
    tmp = tmp_path_factory.mktemp("migrate_src")
    db = tmp / "crupto.db"
    replay = _run(tmp, "-m", "prod_core.runner", "--feed", "replay", "--db", str(db), "--config-dir",
                  str(REPO / "configs/scenarios/sma_parity"), "--port", "0", "--linger", "0", "--data", str(DATA))
    assert replay.returncode == 0, replay.stderr[-2000:]
    with Storage(str(db), create=False) as st:
        (last,) = st.list_runs(1)
        st.add_audit(ts=time.time(), actor="operator", action="note", comment="before the move", details={})
        st.enqueue_command("kill_switch", args={"on": True}, comment="test", actor="operator", ts=time.time())
        st.set_firm_kill_switch(True, actor="operator", comment="test", ts=time.time())
        st.set_firm_kill_switch(False, actor="operator", comment="test", ts=time.time())
    return db, last["run_id"], last["account"]


def _counts_sqlite(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                 if r[0] not in ("sqlite_sequence", "schema_migrations")]
        return {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in names}
    finally:
        conn.close()


def _counts_pg(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        names = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
                 if r[0] != "schema_migrations"]
        return {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in names}


def test_replay_database_migrates_and_reconciles(replay_db, pg_url: str, tmp_path: Path) -> None:
    db, run_id, account = replay_db
    before = db.read_bytes()
    src = _counts_sqlite(db)
    assert src["journal"] > 100 and src["fills"] > 50 and src["audit"] >= 1 and src["commands"] == 1
    proc = run_cli(tmp_path, "migrate-db", "--from", f"sqlite:{db}", "--to", pg_url)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"migrated account {account}:" in proc.stdout and "reconciled: AGREE" in proc.stdout
    assert db.read_bytes() == before  # the source is only read
    assert _counts_pg(pg_url) == src  # every table, the same number of rows

    # the ids are kept (journal seq, audit/commands/exports ids) ...
    lite = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    with psycopg.connect(pg_url) as pg:
        for table, col in (("journal", "seq"), ("audit", "id"), ("commands", "id"), ("exports", "id")):
            want = [r[0] for r in lite.execute(f"SELECT {col} FROM {table} ORDER BY rowid")]
            assert [r[0] for r in pg.execute(f"SELECT {col} FROM {table} ORDER BY rowid")] == want, table
        assert pg.execute("SELECT epoch FROM firm_state").fetchone()[0] == 2
    max_ids = {t: lite.execute(f"SELECT COALESCE(MAX(id), 0) FROM {t}").fetchone()[0] for t in ("audit", "exports")}
    lite.close()

    rec = run_cli(tmp_path, "--db", pg_url, "reconcile", "--account", account)
    assert rec.returncode == 0 and "AGREE" in rec.stdout, rec.stdout + rec.stderr
    rep = run_cli(tmp_path, "--db", pg_url, "report", "--run-id", run_id, "--no-pictures")
    assert rep.returncode == 0, rep.stderr[-2000:]
    assert (tmp_path / "reports" / f"run_{run_id}" / "summary.md").is_file()

    # ... and new rows continue after them (the sequences were reset)
    with Storage(pg_url, create=False) as st:
        new_audit = st.add_audit(ts=time.time(), actor="operator", action="after", comment="", details={})
        assert new_audit == max_ids["audit"] + 1
        assert max(r["id"] for r in st.exports()) == max_ids["exports"] + 1  # the report's record


def test_target_in_use_is_refused_and_left_alone(replay_db, pg_url: str, tmp_path: Path) -> None:
    db, _, _ = replay_db
    with Storage(pg_url) as st:
        st.add_audit(ts=time.time(), actor="operator", action="already here", comment="", details={})
    proc = run_cli(tmp_path, "migrate-db", "--from", str(db), "--to", pg_url)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "already holds crupto rows (in audit)" in proc.stderr and "Traceback" not in proc.stderr
    counts = _counts_pg(pg_url)
    assert counts["audit"] == 1 and counts["journal"] == 0 and counts["runs"] == 0


def test_missing_source_and_unreachable_target_are_refused(pg_url: str, pg_server, tmp_path: Path) -> None:
    proc = run_cli(tmp_path, "migrate-db", "--from", "sqlite:nowhere/crupto.db", "--to", pg_url)
    assert proc.returncode == 2 and "nowhere/crupto.db" in proc.stderr and "does not exist" in proc.stderr
    assert not (tmp_path / "nowhere").exists()
    assert _counts_pg(pg_url) == {}  # nothing created in the target

    not_db = tmp_path / "notes.txt"
    not_db.write_text("hello")
    proc = run_cli(tmp_path, "migrate-db", "--from", str(not_db), "--to", pg_url)
    assert proc.returncode == 2 and "not an SQLite database" in proc.stderr

    Storage(str(tmp_path / "ok.db")).close()
    bad = pg_url.rsplit("/", 1)[0].replace("crupto@", "crupto:s3cret@") + "/no_such_database"
    proc = run_cli(tmp_path, "migrate-db", "--from", str(tmp_path / "ok.db"), "--to", bad)
    assert proc.returncode == 2 and "cannot reach the target" in proc.stderr, proc.stderr
    assert "s3cret" not in proc.stderr + proc.stdout and "***" in proc.stderr


def test_live_lease_on_the_source_is_refused(pg_url: str, tmp_path: Path) -> None:
    db = tmp_path / "live.db"
    Storage(str(db)).close()
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO leases (account, run_id, pid, host, acquired_at, heartbeat_at) VALUES (?, ?, ?, ?, ?, ?)",
                 ("paper", "r1", os.getpid(), socket.gethostname(), time.time(), time.time()))
    conn.commit()
    conn.close()
    proc = run_cli(tmp_path, "migrate-db", "--from", f"sqlite:{db}", "--to", pg_url)
    assert proc.returncode == 2 and "held by a live runner" in proc.stderr and "stop it first" in proc.stderr
    assert _counts_pg(pg_url) == {}


def _spoiled_copy(db: Path, tmp_path: Path, sql: str) -> Path:
    """A copy of the replay's database with ``sql`` applied to it."""
    copy = tmp_path / "copy.db"
    copy.write_bytes(db.read_bytes())
    conn = sqlite3.connect(copy)
    conn.execute(sql)
    conn.commit()
    conn.close()
    return copy


def test_a_row_the_target_refuses_rolls_everything_back(replay_db, pg_url: str, tmp_path: Path) -> None:
    """All or nothing: one bad row in the last rows of a table leaves the target without any crupto row."""
    db, _, _ = replay_db
    copy = _spoiled_copy(db, tmp_path, "UPDATE positions SET ts_open_ms = 'not a time' "
                                       "WHERE rowid = (SELECT MAX(rowid) FROM positions)")
    proc = run_cli(tmp_path, "migrate-db", "--from", str(copy), "--to", pg_url)
    assert proc.returncode == 1 and "rolled back" in proc.stderr, proc.stdout + proc.stderr
    assert "AGREE" not in proc.stdout
    counts = _counts_pg(pg_url)
    assert counts["firm_state"] == 1 and sum(counts.values()) == 1  # the fresh schema only
    again = run_cli(tmp_path, "migrate-db", "--from", str(db), "--to", pg_url)  # the target is still usable
    assert again.returncode == 0 and "reconciled: AGREE" in again.stdout, again.stdout + again.stderr


def test_source_that_does_not_reconcile_is_refused(replay_db, pg_url: str, tmp_path: Path) -> None:
    db, _, account = replay_db
    copy = _spoiled_copy(db, tmp_path, "DELETE FROM journal WHERE seq = (SELECT MAX(seq) FROM journal WHERE kind = 'fill')")
    proc = run_cli(tmp_path, "migrate-db", "--from", f"sqlite:{copy}", "--to", pg_url)
    assert proc.returncode == 2 and f"account(s) {account} do not reconcile in the source" in proc.stderr, proc.stderr
    assert _counts_pg(pg_url) == {}
