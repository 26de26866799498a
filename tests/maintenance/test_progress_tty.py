"""Progress bars of the maintenance scripts: drawn under a pseudo-terminal, absent when piped.

``script -qec CMD /dev/null`` (util-linux) runs the command with a pty as its stdin, stdout and
stderr, and copies everything the terminal showed to its own stdout.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from prod_core.storage import Storage
from tests.conftest import require_tool
from tests.scripts.conftest import REPO, add_run

CASES = {
    "export_run.py": ["--db", "c.db", "--out", "reports", "--run-id", "old"],
    "vacuum_and_rotate.py": ["--db", "c.db", "--out", "arch", "--keep-days", "30", "--keep-runs", "1"],
}
# what the bar's line carries: tqdm's "NN%|" and the rate in the command's unit
MARKERS = {"export_run.py": "table/s", "vacuum_and_rotate.py": "run/s"}


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DB_PATH", "REPORTS_DIR", "LOGS_DIR", "ENV_FILE", "CRUPTO_PROGRESS")}  # fmt: skip
    env["TERM"] = env.get("TERM") or "xterm"
    return env


def _db(tmp_path: Path) -> None:
    with Storage(str(tmp_path / "c.db")) as st:
        add_run(st, "old", age_days=90)
        add_run(st, "older", age_days=95)
        add_run(st, "new", age_days=1)


@pytest.mark.parametrize("script", sorted(CASES))
def test_a_terminal_shows_a_bar(tmp_path: Path, script: str) -> None:
    tool = require_tool("script")
    _db(tmp_path)
    cmd = shlex.join([sys.executable, str(REPO / "scripts" / script), *CASES[script]])
    res = subprocess.run([tool, "-qec", cmd, "/dev/null"], cwd=tmp_path, env=_env(), stdin=subprocess.DEVNULL,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    assert "%|" in res.stdout and MARKERS[script] in res.stdout, res.stdout
    assert "100%|" in res.stdout, res.stdout


@pytest.mark.parametrize("script", sorted(CASES))
def test_piped_output_has_no_bar(tmp_path: Path, script: str) -> None:
    _db(tmp_path)
    res = subprocess.run([sys.executable, str(REPO / "scripts" / script), *CASES[script]], cwd=tmp_path,
                         env=_env(), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""
    assert "%|" not in res.stdout and MARKERS[script] not in res.stdout
    assert ("exported run old" if script == "export_run.py" else "2 run(s) archived") in res.stdout
