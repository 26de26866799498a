"""WAL checkpoints on a thread of their own, for a writer that commits in large batches (a replay).

SQLite in WAL mode appends every commit to the ``-wal`` file and, by default, the commit that
takes the WAL past 1,000 pages copies it back into the database file and syncs it, on the
writer's own thread: on a replay's 10,000-row flushes that is several MiB copied and synced
inside the bar loop. ``Checkpointer`` turns the automatic checkpoint off on the writer's
connection and runs ``PRAGMA wal_checkpoint(PASSIVE)`` after each commit on a connection of
its own: SQLite does the copy and the sync without the GIL, beside the loop (the second core),
and a passive checkpoint never blocks a writer or a reader. The WAL stays about one flush
long; the database is as durable as before (a commit is in the WAL; a checkpoint is
crash-safe and can be redone by any connection).
"""

from __future__ import annotations

import logging
import sqlite3
import threading

log = logging.getLogger(__name__)


class Checkpointer:
    """Runs a passive WAL checkpoint of the database at ``path`` after each ``kick``."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.kicks = 0  # commits announced
        self.done = 0  # the commits announced when the last checkpoint started: all of them are in the database
        self._kicked = threading.Event()
        self._stopping = False
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._thread = threading.Thread(target=self._run, name="crupto-wal-checkpoint", daemon=True)
        self._thread.start()

    def kick(self) -> None:
        """A commit was made: checkpoint it (coalesced with any kick not yet served)."""
        self.kicks += 1
        self._kicked.set()

    def _run(self) -> None:
        while True:
            self._kicked.wait()
            self._kicked.clear()
            if self._stopping:
                return
            upto = self.kicks
            try:
                busy = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[0]
            except sqlite3.Error as exc:  # the next kick tries again; the writer is never affected
                log.debug("WAL checkpoint of %s failed: %s", self.path, exc)
                continue
            if not busy:
                self.done = upto

    def stop(self) -> None:
        """Finish the checkpoint under way, stop the thread and close its connection."""
        self._stopping = True
        self._kicked.set()
        self._thread.join()
        self._conn.close()
