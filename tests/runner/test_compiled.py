"""The compiled build of the hot modules (prod_core/compiled.py, scripts/build_compiled.py): built for
real with Cython and the C compiler into a temp dir, it loads only for the exact sources it was built
from, and a replay through it leaves the same database, row for row, as pure Python."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from prod_core import compiled
from tests.conftest import shared_data_dir
from tests.runner.helpers import REPO
from tests.runner.test_fastlane import (
    FILES,
    SCENARIO,
    TRANSITIONS,
    _assert_same,
    _replay,
    _scenario,
    assert_transitions_happened,
    bad_bar_files,
)

BUILD = REPO / "scripts" / "build_compiled.py"

# The first test that asks for ``build`` waits for the whole build (16 modules through Cython and
# gcc: 2-3 minutes on an idle 2-core machine, several times that with the other core busy); the
# suite's 300 s per test would cut it off, so this module's tests have the build's own bound.
pytestmark = pytest.mark.timeout(2400)


def _missing_tools() -> str:
    try:
        import Cython  # noqa: F401
    except ImportError:
        return "Cython is not installed"
    if not (shutil.which("cc") or shutil.which("gcc")):
        return "no C compiler"
    return ""


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    missing = _missing_tools()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"{missing}: the compiled build is tested under CI (pip install -e '.[dev]', gcc)")
        pytest.skip(missing)
    out = tmp_path_factory.mktemp("compiled")
    result = subprocess.run([sys.executable, str(BUILD), "--out", str(out)], cwd=REPO, capture_output=True,
                            text=True, timeout=1800)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert f"{len(compiled.MODULES)} compiled now" in result.stdout, result.stdout
    return out


def _env(build: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRUPTO_COMPILED")}
    env.update(CRUPTO_COMPILED_DIR=str(build), **extra)
    return env


def _on(build: Path) -> dict[str, str]:
    return {"CRUPTO_COMPILED": "1", "CRUPTO_COMPILED_DIR": str(build)}


PURE = {"CRUPTO_COMPILED": "0"}


def _probe(env: dict[str, str]) -> list[str]:
    """Which modules a fresh interpreter imports from compiled files, and where fastlane came from."""
    code = ("from prod_core import compiled; print(compiled.describe());"
            "import prod_core.runner.fastlane as f; print(f.__file__)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.splitlines()


def test_each_module_is_built_under_the_hash_of_its_source_and_a_second_build_keeps_them(build: Path) -> None:
    expected = {compiled.artifact_name(name, compiled.build_input(name)) for name in compiled.MODULES}
    assert {p.name for p in build.iterdir()} == expected
    again = subprocess.run([sys.executable, str(BUILD), "--out", str(build)], cwd=REPO, capture_output=True,
                           text=True, timeout=600)
    assert again.returncode == 0 and "0 compiled now" in again.stdout, again.stdout + again.stderr


def test_compiled_files_load_only_for_the_source_they_were_built_from(build: Path, tmp_path: Path) -> None:
    described, fastlane = _probe(_env(build))
    assert described.startswith(f"compiled with Cython: {len(compiled.MODULES)} of {len(compiled.MODULES)}")
    assert fastlane.startswith(str(build)) and fastlane.endswith(compiled.SUFFIX)

    described, fastlane = _probe(_env(build, CRUPTO_COMPILED="0"))  # turned off
    assert described.startswith("pure Python") and fastlane.endswith("fastlane.py")

    # the same files as if their sources had changed since (another hash): never loaded
    stale = tmp_path / "stale"
    stale.mkdir()
    for so in build.iterdir():
        shutil.copy(so, stale / re.sub(r"-[0-9a-f]{16}\.", "-0000000000000000.", so.name))
    described, fastlane = _probe(_env(stale))
    assert described.startswith("pure Python") and fastlane.endswith("fastlane.py")


def test_the_extension_types_load_all_or_none(build: Path, tmp_path: Path) -> None:
    """The modules with a .pxd share C types (the pipeline cimports the broker and the bar): a build
    dir missing one of them loads none of them (a compiled pipeline beside a Python broker could not
    import), the others still load, and a replay through that mix ends as always."""
    typed = [name for name in compiled.MODULES if compiled.declarations_of(name).is_file()]
    assert {"prod_core.runner.pipeline", "prod_core.execution.paper", "prod_core.runner.fastlane"} <= set(typed)
    partial = tmp_path / "build"
    partial.mkdir()
    for so in build.iterdir():
        if not so.name.startswith("prod_core.execution.paper-"):
            shutil.copy(so, partial / so.name)
    code = ("from prod_core import compiled; print(compiled.describe()); print(*compiled.in_use())")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_env(partial), capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    described, used = result.stdout.splitlines()
    n = len(compiled.MODULES)
    assert described.startswith(f"compiled with Cython: {n - len(typed)} of {n}"), described
    assert set(used.split()) == set(compiled.MODULES) - set(typed)
    data = [shared_data_dir() / f for f in FILES[:2]]
    _, text = _replay(tmp_path, "partial", SCENARIO, data, lane=True, env_extra=_on(partial))
    assert re.search(r"^replay: bars=\d+ fills=\d+ engine_s=[\d.]+ equity=[\d.]+$", text, re.M), text[-2000:]


def test_parity_replay_compiled_is_the_same_database_as_pure_python(build: Path, tmp_path: Path) -> None:
    data = [shared_data_dir() / f for f in FILES]
    pure, _ = _replay(tmp_path, "pure", SCENARIO, data, lane=True, env_extra=PURE)
    fast, text = _replay(tmp_path, "compiled", SCENARIO, data, lane=True, env_extra=_on(build))
    tables = _assert_same(pure, fast, labels=("pure Python", "compiled"))
    assert len(tables["fills"]) == 5_009
    assert re.search(r"^replay: bars=129600 fills=5009 engine_s=[\d.]+ equity=9522\.67$", text, re.M), text[-2000:]


def test_governance_transitions_compiled_are_the_same_as_pure_python(build: Path, tmp_path: Path) -> None:
    """The quiet-bar loop's C arithmetic crosses the same thresholds at the same bars (the lane on and
    off, each compiled, against pure Python)."""
    data = [shared_data_dir() / f for f in FILES[:3]]
    config = _scenario(tmp_path, **TRANSITIONS)
    pure, _ = _replay(tmp_path, "pure", config, data, lane=True, env_extra=PURE)
    lane, _ = _replay(tmp_path, "lane", config, data, lane=True, env_extra=_on(build))
    bar_by_bar, _ = _replay(tmp_path, "bars", config, data, lane=False, env_extra=_on(build))
    tables = _assert_same(pure, lane, labels=("pure Python", "compiled"))
    _assert_same(pure, bar_by_bar, labels=("pure Python", "compiled, bar by bar"))
    assert_transitions_happened(tables)


def test_bad_bars_compiled_are_rejected_and_counted_as_in_pure_python(build: Path, tmp_path: Path) -> None:
    """The compiled hygiene and stream modules reject the same bars, with the same anomaly lines."""
    data = bad_bar_files(tmp_path)
    pure, text_pure = _replay(tmp_path, "pure", SCENARIO, data, lane=True, env_extra=PURE)
    fast, text = _replay(tmp_path, "compiled", SCENARIO, data, lane=True, env_extra=_on(build))
    _assert_same(pure, fast, labels=("pure Python", "compiled"))
    anomalies = [int(n) for n in re.findall(r"отклонено баров (\d+)", text)]  # (lines split by wall time)
    assert anomalies and sum(anomalies) == sum(int(n) for n in re.findall(r"отклонено баров (\d+)", text_pure)) == 8


def test_without_a_c_compiler_the_build_says_so_and_the_runner_stays_pure(tmp_path: Path) -> None:
    """PATH with the venv's tools only (no cc, no gcc): exit 2, what is missing, no build dir."""
    if _missing_tools().startswith("Cython"):
        if os.environ.get("CI"):
            pytest.fail("Cython is required under CI (pip install -e '.[dev]')")
        pytest.skip("Cython is not installed: the build stops at that first")
    out = tmp_path / "compiled"
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}
    env.pop("CC", None)
    result = subprocess.run([sys.executable, str(BUILD), "--out", str(out)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "no C compiler" in result.stderr and "stay pure Python" in result.stderr
    assert not out.exists()
