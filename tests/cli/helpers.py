"""Run the real CLI / runner as subprocesses, build crupto databases, make paths read-only."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from prod_core.storage import Storage

REPO = Path(__file__).resolve().parents[2]


def clean_env(tmp: Path, **extra: str) -> dict[str, str]:
    """The environment of an operator shell: no .env, no ALERT_TEST_*, outputs inside ``tmp``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALERT_TEST_") and k not in ("DB_PATH", "DB_URL")}
    env.update(
        ENV_FILE=str(tmp / "missing.env"),
        CONFIG_DIR=str(REPO / "configs"),
        LOGS_DIR=str(tmp / "logs"),
        REPORTS_DIR=str(tmp / "reports"),
    )
    env.update(extra)
    return env


def run_cli(tmp: Path, *args: str, db_env: str | None = None, **extra: str) -> subprocess.CompletedProcess[str]:
    """``python -m prod_core.cli ARGS`` from ``tmp`` (relative paths land there)."""
    env = clean_env(tmp, **extra)
    if db_env is not None:
        env["DB_PATH"] = db_env
    return subprocess.run(
        [sys.executable, "-m", "prod_core.cli", *args],
        cwd=tmp, env=env, capture_output=True, text=True, timeout=120,
    )


def run_runner(tmp: Path, db: str) -> subprocess.CompletedProcess[str]:
    """``python -m prod_core.runner --db DB --port 0 --max-seconds 5`` from ``tmp``."""
    return subprocess.run(
        [sys.executable, "-m", "prod_core.runner", "--db", db, "--port", "0", "--max-seconds", "5"],
        cwd=tmp, env=clean_env(tmp), capture_output=True, text=True, timeout=120,
    )


def one_error_line(proc: subprocess.CompletedProcess[str], prefix: str) -> str:
    """The process failed with exit 2 and exactly one stderr line starting with ``prefix``."""
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert len(lines) == 1 and lines[0].startswith(prefix), proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    return lines[0]


def make_crupto_db(path: Path) -> Path:
    """A real crupto database (schema migrated), closed so no -wal/-shm stay beside it."""
    Storage(str(path)).close()
    return path


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# ------------------------------------------------------------------ read-only paths

def _is_root() -> bool:
    return getattr(os, "geteuid", lambda: -1)() == 0


def _cannot(reason: str) -> None:
    # Root ignores permission bits; a read-only bind mount is the real thing. Where even
    # that is impossible, skip on a developer machine but never silently under CI.
    if os.environ.get("CI"):
        pytest.fail(f"cannot make a real read-only path as root under CI: {reason}")
    pytest.skip(f"running as root and cannot mount a read-only bind: {reason}")


def _mount(*args: str) -> None:
    try:
        done = subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)
    except OSError as exc:
        _cannot(str(exc))
    if done.returncode != 0:
        _cannot(done.stderr.strip() or f"mount exited {done.returncode}")


def _umount(path: Path) -> None:
    if subprocess.run(["umount", str(path)], capture_output=True, timeout=30).returncode != 0:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


@contextmanager
def bind_mode(path: Path, mode: str) -> Iterator[None]:
    """Make ``path`` (file or directory) really read-only (``ro``) or writable (``rw``) for this process.

    Not root: permission bits. Root: a bind mount of ``path`` onto itself, remounted ``ro``
    or ``rw`` (``rw`` lets a file stay writable inside a read-only directory).
    """
    if not _is_root():
        old = path.stat().st_mode
        path.chmod(old & ~0o222 if mode == "ro" else old | 0o200)
        try:
            yield
        finally:
            path.chmod(old)
        return
    _mount("--bind", str(path), str(path))
    try:
        _mount("-o", f"remount,{mode},bind", str(path), str(path))
        yield
    finally:
        _umount(path)


def wait_until(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what} not seen within {timeout} s (last: {last!r})")
