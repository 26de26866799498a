"""Root fixtures: keep them few; builders live in prod_core.testing."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="session")
def _prometheus_sd_dir(tmp_path_factory: pytest.TempPathFactory):
    """Runners started by the tests write their Prometheus file_sd files in a scratch directory,
    not in the checkout's run/prometheus_sd (a test that needs its own sets PROMETHEUS_SD_DIR)."""
    if "PROMETHEUS_SD_DIR" in os.environ:
        yield
        return
    os.environ["PROMETHEUS_SD_DIR"] = str(tmp_path_factory.mktemp("prometheus_sd"))
    try:
        yield
    finally:
        os.environ.pop("PROMETHEUS_SD_DIR", None)


@pytest.fixture
def repo_root() -> Path:
    return REPO


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    """A writable copy of the shipped configs/ directory."""
    target = tmp_path / "configs"
    shutil.copytree(REPO / "configs", target)
    return target


def require_tool(name: str) -> str:
    """Path of an external tool; skip when absent on a laptop, fail under CI."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is required under CI (.ci/run installs it)")
        pytest.skip(f"{name} not installed")
    return path


def shared_data_dir() -> Path:
    """`../shared/data` beside the checkout: skip on a laptop without it, fail under CI."""
    path = REPO.parent / "shared" / "data"
    if not path.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{path} is required under CI (shared/ is checked out beside the repo)")
        pytest.skip(f"{path} not present")
    return path


# ---------------------------------------------------------------- PostgreSQL (a real throwaway server)


@pytest.fixture(scope="session")
def pg_server():
    """ONE throwaway PostgreSQL for the whole session (initdb + pg_ctl in a temp dir, see
    prod_core.testing.pg); skipped on a laptop without the server binaries, a failure under CI."""
    from prod_core.testing.pg import PostgresUnavailable, ThrowawayPostgres

    try:
        server = ThrowawayPostgres()
    except PostgresUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required under CI (.ci/run installs it): {exc}")
        pytest.skip(str(exc))
    server.start()
    try:
        yield server
    finally:
        server.stop()


_PG_DB_SEQ = iter(range(1, 1_000_000))


@pytest.fixture
def pg_url(pg_server) -> Iterator[str]:
    """A fresh, empty database on the session's server for one test (dropped afterwards)."""
    import psycopg

    name = f"t{os.getpid()}_{next(_PG_DB_SEQ)}"
    with psycopg.connect(pg_server.url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    yield pg_server.url.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(pg_server.url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request) -> str:
    """Run a test on both storage backends (see ``db_target``)."""
    return request.param


@pytest.fixture
def db_target(backend: str, tmp_path: Path, request) -> str:
    """What ``Storage(...)`` opens for this test: a new SQLite file, or a fresh PostgreSQL database."""
    if backend == "postgres":
        return request.getfixturevalue("pg_url")
    return str(tmp_path / "storage" / "crupto.db")
