"""Write-behind for a replay: a second process applies the buffered flushes to the SQLite file.

A replay spends a fifth to a third of its loop inserting rows (docs/PERFORMANCE.md). ``WriteBehind``
hands each flush, already laid out as plain operations (``storage/batch.py``), to a writer process
started with this file as its script, and the loop goes on while the writer inserts on the second
core. Handing over costs ``marshal.dumps`` of the rows and one pipe write.

The guarantees a replay's flush gave, kept:
- **one transaction per flush, in order**: the writer applies frame after frame, each inside one
  ``BEGIN IMMEDIATE ... COMMIT``, with the same ``apply_ops`` as an in-process flush; the database
  always holds a prefix of the flushes, so the journal is a prefix of the account's commits;
- **read your writes**: ``Storage`` waits for every frame to be confirmed (``drain``) before it uses
  its own connection (reads, immediate writes, the end of the run);
- **a failed flush is kept and retried**: a frame the writer cannot commit (a full disk, a database
  locked past the retry window) is rolled back and reported; every frame from it on stays with the
  runner and is resent with the next flush or wait, and the writer skips frames until the failed
  one comes again; ``StorageError`` reaches the runner from the next read or immediate write (which
  waits for the writer), as from a failed in-process flush;
- **a dead writer stops the replay**: frames it did not confirm may or may not be in the database,
  so nothing buffered after them is written (``WriterLost``); the database keeps a prefix and the
  replay, which can be rerun, stops with an error. A killed runner closes the pipe: the writer
  commits the whole frames it received and exits.

Protocol (both ways a 4-byte little-endian length, then a ``marshal`` payload): runner -> writer
``(seq, ops)``; writer -> runner ``(seq, error_kind, message, mark_misses, retries)`` with
``error_kind`` ``""`` (committed), ``"lease"``, ``"storage"`` or ``"db"``, and ``retries`` the
busy-database retries as ``(attempt, waited_s, error)``; sequence 0 is the writer's greeting (its
connection is open), -1 its farewell at the end of the pipe (its peak RSS in KiB as the message).
"""

from __future__ import annotations

import marshal
import os
import select
import sqlite3
import struct
import sys
import time
from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the writer process imports as little as it can: its RSS counts beside the runner's
    from collections.abc import Callable
    from typing import Any

_HEAD = struct.Struct("<I")
# Frames in flight at most: a writer that falls behind (a busy database) holds the loop back
# instead of letting the runner's memory grow.
MAX_IN_FLIGHT = 3
START_TIMEOUT_S = 30.0  # for the writer to start and open the database
CACHE_KIB = 512  # the writer's SQLite page cache (default 2,000 KiB): appends touch few pages
_PIPE_BYTES = 1 << 20  # asked for both pipes (Linux F_SETPIPE_SZ); a frame of 1,000 rows is ~0.1-0.2 MiB


class WriterFailed(Exception):
    """A frame the writer rolled back: ``kind`` is ``lease``, ``storage`` or ``db``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class WriterGone(Exception):
    """The writer process exited or its pipes broke: ``lost`` frames were never confirmed."""

    def __init__(self, message: str, lost: int) -> None:
        super().__init__(message)
        self.lost = lost


def _grow_pipe(fd: int) -> None:
    try:
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), _PIPE_BYTES)
    except OSError:  # a smaller limit (/proc/sys/fs/pipe-max-size): the default pipe still works
        pass


class WriteBehind:
    """The runner's end: ``send`` a flush's operations, ``drain`` until all are committed."""

    def __init__(self, path: str, retry_window_s: float, busy_timeout_ms: int) -> None:
        import subprocess

        self.path = path
        self._proc = subprocess.Popen(
            [sys.executable, "-E", "-s", "-S", os.path.abspath(__file__), path, repr(retry_window_s), str(busy_timeout_ms)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True,
        )  # fmt: skip
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._out = self._proc.stdin
        self._in = self._proc.stdout.fileno()
        _grow_pipe(self._out.fileno())
        _grow_pipe(self._in)
        os.set_blocking(self._in, False)
        self._read = bytearray()
        self._seq = 0
        self._unconfirmed: deque[tuple[int, bytes]] = deque()  # (seq, frame) sent, not yet committed
        self._failed: WriterFailed | None = None  # the last frame's failure, until it is resent
        self._hello_seen = False
        self.peak_rss_kib = 0  # the writer's own peak RSS, told as it exits (``close``)
        self.misses: list[str] = []
        self.on_retry: Callable[[int, float, str], None] | None = None
        self.frames = 0
        self._hello(START_TIMEOUT_S)

    def _hello(self, timeout_s: float) -> None:
        """Wait for the writer's first reply (sequence 0: its connection is open), or stop it and raise."""
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                if self._ready(min(1.0, max(0.0, deadline - time.monotonic()))) or self._read:
                    self.poll()
                if self._hello_seen:
                    return
                if self._proc.poll() is not None:
                    self._gone("exited at start")
            self._gone(f"did not start within {timeout_s:.0f} s")
        except WriterGone:
            self.close()
            raise

    @property
    def pending(self) -> int:
        """Frames sent and not yet confirmed."""
        return len(self._unconfirmed)

    def send(self, ops: list[tuple[Any, ...]]) -> None:
        """Queue one flush, after resending a failed one (and those after it). Raises ``ValueError``
        (nothing sent) for a value ``marshal`` cannot write, ``WriterGone`` when the writer is gone; a
        failure of this frame is raised by a later call (``drain``)."""
        self.poll()
        payload = marshal.dumps((self._seq + 1, ops))
        if self._failed is not None:
            self._resend()
        self._seq += 1
        frame = _HEAD.pack(len(payload)) + payload
        self._unconfirmed.append((self._seq, frame))
        self._write(frame)
        self.frames += 1
        while len(self._unconfirmed) > MAX_IN_FLIGHT and self._failed is None:
            self._wait()  # the frame is sent: a failure seen here is raised by the next call

    def drain(self) -> None:
        """Resend a failed frame and what followed it, and wait until every frame is committed."""
        self.poll()
        if self._failed is not None:
            self._resend()
        while self._unconfirmed and self._failed is None:
            self._wait()
        if self._failed is not None:
            raise self._failed

    def _resend(self) -> None:
        """The failed frame and every frame after it, again (the writer skips them until it comes)."""
        self._failed = None
        for _, frame in list(self._unconfirmed):
            self._write(frame)

    def poll(self) -> None:
        """Read the confirmations that have arrived, without waiting."""
        while True:
            try:
                chunk = os.read(self._in, 65536)
            except BlockingIOError:
                break
            if not chunk:
                self._parse()  # what it confirmed before it went
                self._gone("closed its pipe")
            self._read += chunk
        self._parse()

    def close(self) -> None:
        """Let the writer finish what it holds and exit (after ``drain``, or after a failure)."""
        try:
            self._out.close()
        except OSError:
            pass
        try:
            self._proc.wait(timeout=60)
        except Exception:  # subprocess.TimeoutExpired
            self._proc.kill()
            self._proc.wait()
        try:
            while chunk := os.read(self._in, 65536):  # its last replies (the farewell)
                self._read += chunk
            self._parse()
        except (OSError, WriterFailed, WriterGone, ValueError, EOFError):
            pass
        try:
            self._proc.stdout.close()  # type: ignore[union-attr]
        except OSError:
            pass

    def _write(self, frame: bytes) -> None:
        try:
            self._out.write(frame)
            self._out.flush()
        except (BrokenPipeError, ValueError, OSError) as exc:
            self._gone(f"stopped reading ({exc})")

    def _ready(self, timeout_s: float) -> bool:
        return bool(select.select([self._in], [], [], timeout_s)[0])

    def _wait(self) -> None:
        if self._ready(1.0):
            self.poll()
        elif self._proc.poll() is not None:
            self.poll()
            self._gone("exited")

    def _gone(self, how: str) -> None:
        code = self._proc.poll()
        status = f"signal {-code}" if code is not None and code < 0 else f"code {code}" if code is not None else "running"
        raise WriterGone(f"the storage writer process {how} ({status}) with {len(self._unconfirmed)} flushes not "
                         f"confirmed", len(self._unconfirmed))

    def _parse(self) -> None:
        buf = self._read
        while len(buf) >= 4:
            (size,) = _HEAD.unpack_from(buf)
            if len(buf) < 4 + size:
                break
            seq, kind, message, misses, retries = marshal.loads(bytes(buf[4:4 + size]))
            del buf[:4 + size]
            for attempt, waited, text in retries:
                if self.on_retry is not None:
                    self.on_retry(attempt, waited, text)
            if seq == -1:  # the writer's farewell: its peak RSS (VmHWM, KiB)
                self.peak_rss_kib = int(message or 0)
                continue
            if seq == 0:  # the writer's greeting
                if kind:
                    raise WriterGone(f"the storage writer process cannot open the database: {message}", 0)
                self._hello_seen = True
                continue
            if not self._unconfirmed or self._unconfirmed[0][0] != seq:
                continue  # a frame skipped after a failure, or a stale reply: the resend answers it
            if kind:
                self._failed = WriterFailed(kind, message)
                continue
            self.misses.extend(misses)
            self._unconfirmed.popleft()


# ---------------------------------------------------------------------- the writer process


def _read_exact(stream: Any, size: int) -> bytes | None:
    data = stream.read(size)
    return data if data is not None and len(data) == size else None


def _frame(stream: Any) -> bytes | None:
    """The next whole frame from the runner; None at the end of the pipe (a partial frame is dropped)."""
    head = _read_exact(stream, 4)
    return _read_exact(stream, _HEAD.unpack(head)[0]) if head is not None else None


def main(argv: list[str]) -> int:
    from batch import BatchError, apply_ops, begin_immediate  # this directory is sys.path[0]: the script's own

    db, window_s, busy_ms = argv[1], float(argv[2]), int(argv[3])
    out = sys.stdout.buffer

    gone = []  # the runner stopped reading (it died): go on committing the whole frames received

    def reply(*values: Any) -> None:
        if gone:
            return
        data = marshal.dumps(values)
        try:
            out.write(_HEAD.pack(len(data)) + data)
            out.flush()
        except OSError:  # BrokenPipeError
            gone.append(True)

    try:
        path = os.path.abspath(db).replace("%", "%25").replace("?", "%3f").replace("#", "%23")
        conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True, isolation_level=None)  # never creates it
        conn.execute(f"PRAGMA busy_timeout = {busy_ms}")
        conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
    except sqlite3.Error as exc:
        reply(0, "db", str(exc), [], [])
        return 1
    reply(0, "", "", [], [])
    # Frames are read between transactions, not beside them: the pipe holds more frames than the
    # runner keeps in flight (``MAX_IN_FLIGHT``), so its writes do not wait for this process.
    stdin = sys.stdin.buffer
    expected = 1
    while True:
        body = _frame(stdin)
        if body is None:
            break
        seq, ops = marshal.loads(body)
        del body
        if seq != expected:
            continue  # sent after a frame that failed: the runner sends it again
        misses: list[str] = []
        retries: list[tuple[int, float, str]] = []
        kind = message = ""
        try:
            begin_immediate(conn, db, window_s, (sqlite3.Error,), lambda *retry: retries.append(retry))
            try:
                apply_ops(conn, ops, db, misses)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                raise
            expected += 1
        except BatchError as exc:
            kind, message = exc.kind, str(exc)
        except sqlite3.Error as exc:
            kind, message = "db", str(exc)
        reply(seq, kind, message, misses if not kind else [], retries)
    conn.close()
    try:
        with open("/proc/self/status") as fh:
            peak = next((line.split()[1] for line in fh if line.startswith("VmHWM")), "0")
    except OSError:
        peak = "0"
    reply(-1, "", peak, [], [])
    if gone:  # nothing left to flush to a closed pipe at exit
        os._exit(0)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
