"""A throwaway PostgreSQL server for tests: ``initdb`` and ``pg_ctl`` in a temporary directory.

PostgreSQL refuses to run as root, and CI runs as root: the server then runs as an
unprivileged user (``postgres`` when it exists, else ``nobody``) through ``runuser``. It listens
on 127.0.0.1 on a free port and on a Unix socket in its own directory, trusts local
connections, keeps fsync off (a test server: nothing to keep), and is stopped (``-m immediate``)
and deleted on ``stop()``.

    with ThrowawayPostgres() as pg:
        url = pg.url            # postgresql://crupto@127.0.0.1:PORT/crupto
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

START_TIMEOUT_S = 120


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries on this machine."""


def find_bin_dir() -> Path | None:
    """The directory of ``initdb``/``pg_ctl``: on PATH, else Debian's /usr/lib/postgresql/<v>/bin (newest)."""
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(os.path.realpath(initdb)).parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]) if
                   p.split("/")[4].isdigit() else 0)
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ThrowawayPostgres:
    def __init__(self, *, user: str = "crupto", database: str = "crupto") -> None:
        bin_dir = find_bin_dir()
        if bin_dir is None:
            raise PostgresUnavailable("PostgreSQL server binaries (initdb, pg_ctl) not found: install Debian's "
                                      "`postgresql` package (apt-get install postgresql)")
        self.bin_dir = bin_dir
        self.user = user
        self.database = database
        self.port = _free_port()
        self.root = Path(tempfile.mkdtemp(prefix="crupto-pg-"))
        self.data = self.root / "data"
        self.sock = self.root / "sock"
        self.log = self.root / "server.log"
        self._as: list[str] = []
        if os.geteuid() == 0:
            owner = "postgres" if _user_exists("postgres") else "nobody"
            self._as = ["runuser", "-u", owner, "--"]
            pw = pwd.getpwnam(owner)
            os.chmod(self.root, 0o755)
            self.sock.mkdir()
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
            os.chown(self.sock, pw.pw_uid, pw.pw_gid)
        else:
            self.sock.mkdir()
        self.started = False

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.database}"

    def _run(self, *args: str, timeout: float = START_TIMEOUT_S) -> subprocess.CompletedProcess:
        return subprocess.run([*self._as, *args], capture_output=True, text=True, timeout=timeout)

    def start(self) -> "ThrowawayPostgres":
        initdb = self._run(str(self.bin_dir / "initdb"), "-D", str(self.data), "-U", self.user, "-A", "trust",
                           "-E", "UTF8", "--no-locale", "--no-sync")
        if initdb.returncode != 0:
            raise RuntimeError(f"initdb failed ({initdb.returncode}): {initdb.stderr or initdb.stdout}")
        opts = (f"-c port={self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.sock} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=100")
        started = self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", opts,
                            "-w", "-t", str(START_TIMEOUT_S), "start")
        if started.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed ({started.returncode}): {started.stderr or started.stdout}\n"
                               f"{self._log_tail()}")
        self.started = True
        created = self._run(str(self.bin_dir / "createdb"), "-h", str(self.sock), "-p", str(self.port), "-U",
                            self.user, self.database)
        if created.returncode != 0:
            self.stop()
            raise RuntimeError(f"createdb failed: {created.stderr}")
        return self

    def _log_tail(self) -> str:
        try:
            return self.log.read_text()[-2000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.started:
            self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=60)
            self.started = False
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "ThrowawayPostgres":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False
