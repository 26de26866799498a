"""The PostgreSQL backend against a real server: schema parity with SQLite, migrations, the write
lock, leases, SQLite-compatible results, settings, and a replay through the runner (no mocks)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest

from prod_core.configs import ConfigError, load_settings
from prod_core.storage import LATEST_VERSION, MIGRATIONS, LeaseLost, Storage, StorageError
from prod_core.storage.postgres import translate
from prod_core.testing.builders import open_write
from tests.storage.test_sqlite import RUN, _equity, _fill, _pos

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data" / "BYBIT_BTCUSDT_5m.csv"


def _columns(st: Storage) -> dict[str, list[str]]:
    tables = [r["name"] for r in st.query("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    return {t: [c["name"] for c in st.query(f"PRAGMA table_info({t})")] for t in tables}


def test_both_backends_end_with_the_same_tables_and_columns(tmp_path: Path, pg_url: str) -> None:
    """The same migrations give the same tables and columns, in the same order, on both backends."""
    with Storage(str(tmp_path / "x.db")) as lite, Storage(pg_url) as pg:
        assert lite.backend == "sqlite" and pg.backend == "postgresql"
        lite_cols, pg_cols = _columns(lite), _columns(pg)
    assert "sqlite_sequence" in lite_cols  # SQLite's AUTOINCREMENT bookkeeping, not a crupto table
    lite_cols.pop("sqlite_sequence")
    assert pg_cols == lite_cols and "journal" in pg_cols and "rowid" not in pg_cols["fills"]


def test_fresh_postgres_database_is_migrated_once(pg_url: str) -> None:
    """Every migration is recorded once; reopening applies nothing; versions match SQLite's."""
    with Storage(pg_url) as st:
        assert st.schema_version == LATEST_VERSION
        rows = st.query("SELECT version, applied_at FROM schema_migrations ORDER BY version")
        assert [r["version"] for r in rows] == [v for v, _, _ in MIGRATIONS]
        first = rows[-1]["applied_at"]
    with Storage(pg_url) as st:
        assert st.query("SELECT MAX(applied_at) AS t FROM schema_migrations")[0]["t"] == first


def test_newer_postgres_database_is_refused(pg_url: str) -> None:
    Storage(pg_url).close()
    with psycopg.connect(pg_url, autocommit=True) as raw:
        raw.execute("INSERT INTO schema_migrations (version, description, applied_at) VALUES (%s, 'future', 0)",
                    (LATEST_VERSION + 7,))
    with pytest.raises(StorageError, match=f"schema version {LATEST_VERSION + 7}.*upgrade crupto"):
        Storage(pg_url)


def test_empty_postgres_database_is_not_the_runners(pg_url: str) -> None:
    """The CLI (create=False) refuses a database without crupto's schema and creates nothing in it."""
    with pytest.raises(StorageError, match="has no crupto schema.*nothing was changed"):
        Storage(pg_url, create=False)
    with psycopg.connect(pg_url) as raw:
        assert raw.execute("SELECT COUNT(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0] == 0
    Storage(pg_url).close()
    with Storage(pg_url, create=False) as st:
        assert st.schema_version == LATEST_VERSION


def test_password_never_reaches_path_or_messages(pg_server) -> None:
    url = pg_server.url.replace("crupto@", "crupto:s3cret@")
    with Storage(url) as st:
        assert "s3cret" not in st.path and "s3cret" not in repr(st) and st.path.startswith("postgresql://crupto:***@")


def test_rowid_is_hidden_and_keeps_insertion_order(pg_url: str) -> None:
    """SELECT * never shows the rowid column; ORDER BY rowid is insertion order, as in SQLite."""
    with Storage(pg_url) as st:
        st.start_run(RUN, mode="paper", feed="sim", config_hash="", code_version="", ts=1.0)
        for ts in (3, 1, 2):
            _equity(st, ts)
        rows = st.table_rows("equity", RUN)
        assert [r["ts_ms"] for r in rows] == [3, 1, 2] and "rowid" not in rows[0]
        cols, batches = st.iter_table("equity", RUN, batch=2)
        assert [len(b) for b in batches] == [2, 1] and len(cols) == len(rows[0])


def test_results_are_typed_like_sqlite(db_target: str) -> None:
    """SUM of integers is an int, of booleans a count (NULL over no rows), NaN is stored as NULL."""
    with Storage(db_target) as st:
        st.start_run(RUN, mode="paper", feed="sim", config_hash="", code_version="", ts=1.0)
        _equity(st, 1)
        _equity(st, 2)
        (row,) = st.query("SELECT SUM(ts_ms) AS s, SUM(ts_ms > 1) AS wins, AVG(ts_ms) AS a FROM equity")
        assert (row["s"], row["wins"], row["a"]) == (3, 1, 1.5) and type(row["s"]) is int
        assert st.query("SELECT SUM(ts_ms > 1) AS w FROM equity WHERE ts_ms < 0")[0]["w"] is None

        class Bar:
            symbol, ts_ms, open, high, low, close, volume = "BTC/USDT", 1, math.nan, 2.0, 0.5, 1.5, 3.0

        st.add_session_bar(RUN, 0, Bar())
        (bar,) = st.session_bars(RUN)
        assert bar["open"] is None and bar["close"] == 1.5
        assert st.query("SELECT COUNT(*) AS n FROM runs WHERE run_id LIKE 'run-%' AND mode = ?", ("paper",))[0]["n"] == 1


def test_write_lock_is_retried_then_reported(pg_url: str) -> None:
    """A second writer waits for the database's write lock with backoff (counted), and gives up after
    its retry window with the same StorageError as a busy SQLite file."""
    with Storage(pg_url) as holder, Storage(pg_url) as waiter:
        holder.start_run(RUN, mode="paper", feed="sim", config_hash="", code_version="", ts=1.0)
        waiter.retry_window_s = 1.0
        with holder._tx():
            with pytest.raises(StorageError, match="cannot start a write transaction after .* retries.*locked"):
                waiter.save_governance_state({"x": 1}, ts=1.0)
        assert waiter.retries >= 1
        waiter.retry_window_s = 10.0
        released = threading.Timer(0.7, lambda: None)
        seen: list[int] = []
        with holder._tx():
            released.start()
            t = threading.Thread(target=lambda: (waiter.save_governance_state({"x": 2}, ts=2.0), seen.append(1)))
            t.start()
            time.sleep(0.8)
            assert not seen  # still waiting for the lock
        t.join(10)
        assert seen and waiter.load_governance_state() == {"x": 2}


def test_lease_guards_the_journal(db_target: str) -> None:
    """One writer per account on both backends: a taken-over lease stops the old writer's commits."""
    with Storage(db_target) as a, Storage(db_target) as b:
        a.start_run(RUN, mode="paper", feed="sim", config_hash="", code_version="", ts=1.0)
        b.start_run("run-2", mode="paper", feed="sim", config_hash="", code_version="", ts=1.0)
        assert a.acquire_lease("paper", RUN, pid=1, host="h", now=1.0, takeover=lambda h: None)[0]
        acquired, holder, _ = b.acquire_lease("paper", "run-2", pid=2, host="h", now=2.0, takeover=lambda h: None)
        assert not acquired and holder["run_id"] == RUN
        assert b.acquire_lease("paper", "run-2", pid=2, host="h", now=3.0, takeover=lambda h: "stale")[0]
        with pytest.raises(LeaseLost):
            a.commit_account(open_write(_fill(), _pos(), run_id=RUN))
        assert b.journal("paper") == []
        b.commit_account(open_write(_fill(), _pos(), run_id="run-2"))
        assert [j["fill_id"] for j in a.journal("paper")] == ["f1"]


def test_translation_is_cached_and_keeps_literals() -> None:
    kind, sql, ret = translate("INSERT INTO audit (comment) VALUES ('what? 5%') -- ?")
    assert kind == "sql" and sql.startswith("INSERT INTO audit (comment) VALUES ('what? 5%%')") and ret == "id"
    assert translate("PRAGMA busy_timeout = 5")[0] == "noop"
    assert translate("SELECT ?")[1] == "SELECT %s" and translate.cache_info().hits >= 0


def test_db_url_selects_postgresql_and_db_path_keeps_sqlite(tmp_path: Path) -> None:
    """flag > DB_URL > DB_PATH; a DB_URL that is not postgresql:// is refused without echoing it."""
    env = {"DB_PATH": "x.db"}
    none = tmp_path / "none.env"
    assert load_settings(environ=env, env_file=none).database() == "x.db"
    url = "postgresql://u:pw@h/db"
    s = load_settings(environ={**env, "DB_URL": url}, env_file=none)
    assert s.database() == url and s.database("flag.db") == "flag.db" and "pw" not in repr(s)
    (tmp_path / ".env").write_text(f"DB_URL={url}\n")
    assert load_settings(environ={}, env_file=tmp_path / ".env").database() == url
    with pytest.raises(ConfigError) as err:
        load_settings(environ={"DB_URL": "mysql://u:secret@h/db"}, env_file=none)
    assert "secret" not in str(err.value)


@pytest.mark.skipif(not DATA.is_file(), reason="shared replay data not present")
def test_replay_reconcile_and_report_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    """A real replay through the runner with DB_URL on the server, then `cli reconcile` agrees and
    `cli report` writes the run's report from PostgreSQL."""
    env = {k: v for k, v in os.environ.items() if k not in ("DB_PATH", "DB_URL") and not k.startswith("ALERT_TEST_")}
    env.update(DB_URL=pg_url, ENV_FILE=str(tmp_path / "none.env"), REPORTS_DIR=str(tmp_path / "reports"),
               LOGS_DIR=str(tmp_path / "logs"), PYTHONPATH=str(REPO))

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *args], env=env, cwd=tmp_path, capture_output=True, text=True,
                              timeout=300)

    replay = run("-m", "prod_core.runner", "--feed", "replay", "--config-dir",
                 str(REPO / "configs/scenarios/sma_parity"), "--port", "0", "--linger", "0", "--data", str(DATA))
    assert replay.returncode == 0, replay.stderr[-2000:]
    assert "fills=" in replay.stdout and "report for run" not in replay.stderr
    with Storage(pg_url, create=False) as st:
        (last,) = st.list_runs(1)
        fills = st.fills(last["run_id"])
        assert last["status"] == "stopped" and len(fills) > 100
        assert st.journal_size(last["account"]) >= len(fills)
    rec = run("-m", "prod_core.cli", "reconcile", "--account", last["account"])
    assert rec.returncode == 0 and "AGREE" in rec.stdout, rec.stdout + rec.stderr
    rep = run("-m", "prod_core.cli", "report", "--run-id", last["run_id"], "--no-pictures")
    assert rep.returncode == 0, rep.stderr[-2000:]
    out = tmp_path / "reports" / f"run_{last['run_id']}"
    assert (out / "summary.md").is_file() and len((out / "fills.csv").read_text().splitlines()) == len(fills) + 1


def test_failed_migration_rolls_back_on_postgresql(pg_url: str) -> None:
    """A migration that fails leaves PostgreSQL at the previous version with no partial change (transactional DDL)."""
    from prod_core.storage.migrations import apply_migrations, current_version
    from prod_core.storage.postgres import PgConnection

    conn = PgConnection(pg_url)
    try:
        broken = [*MIGRATIONS[:1], (2, "broken", "CREATE TABLE half (x INTEGER);\nCREATE TABLE runs (x INTEGER);")]
        with pytest.raises(StorageError, match="migration 2"):
            apply_migrations(conn, broken)
        assert current_version(conn) == 1
        assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'half'").fetchone() is None
    finally:
        conn.close()
