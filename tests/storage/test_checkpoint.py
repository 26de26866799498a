"""WAL checkpoints on their own thread (prod_core/storage/checkpoint.py), as a replay's storage runs them."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

from prod_core.storage import Storage

FLUSHES = 30
ROWS_PER_FLUSH = 4_000


def _wait(cond: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _write(db: Path, background: bool) -> tuple[int, int]:
    """FLUSHES flushes of equity rows; (largest WAL seen after a flush, database size at the end)."""
    storage = Storage(str(db), flush_rows=10**9)
    if background:
        storage.checkpoint_in_background()
    else:  # what the background checkpoints replace: none in the commits
        storage._conn.execute("PRAGMA wal_autocheckpoint = 0")
    storage.start_run("r1", mode="replay", feed="replay", config_hash="x", code_version="t", ts=time.time())
    storage.flush()
    wal = db.with_name(db.name + "-wal")
    largest = 0
    for k in range(FLUSHES):
        base = k * ROWS_PER_FLUSH
        storage.add_equity_rows([("r1", base + i, 10_000.0 + i, 9_000.0, 0.5, -0.1, 0.2, 10.0, 5.0)
                                 for i in range(ROWS_PER_FLUSH)])
        storage.flush()
        if background:  # the checkpoint that started after this flush's commit has run
            ckpt = storage._checkpointer
            _wait(lambda: ckpt.done >= ckpt.kicks, f"the checkpoint after flush {k}")
        largest = max(largest, wal.stat().st_size)
    storage.close()
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("SELECT COUNT(*) FROM equity").fetchone()[0] == FLUSHES * ROWS_PER_FLUSH
    return largest, db.stat().st_size


def test_background_checkpoints_keep_the_wal_about_one_flush_long(tmp_path: Path) -> None:
    """A replay's storage checkpoints after every flush on its own thread: 30 flushes leave a WAL of
    about one flush, where without checkpoints in the commits it would hold all of them; every row is
    in the database and the WAL is gone once the storage is closed."""
    db = tmp_path / "background.db"
    largest, size = _write(db, background=True)
    assert largest < size / 5, f"WAL reached {largest} bytes for a {size}-byte database"
    assert not db.with_name(db.name + "-wal").exists() or db.with_name(db.name + "-wal").stat().st_size == 0
    control_largest, control_size = _write(tmp_path / "none.db", background=False)
    assert control_largest > control_size / 2  # the WAL held the whole run: the test can tell them apart


def test_background_checkpoints_are_off_on_postgres_and_in_memory() -> None:
    """Nothing to checkpoint: no thread is started for an in-memory database."""
    storage = Storage(":memory:")
    storage.checkpoint_in_background()
    assert storage._checkpointer is None
    storage.close()
