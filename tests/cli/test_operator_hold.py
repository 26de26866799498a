"""`cli hold` names a strategy configured in governance.yaml (built-in or a user's)."""

from __future__ import annotations

import os
from pathlib import Path

from prod_core.storage import Storage
from tests.cli.helpers import make_crupto_db, run_cli
from tests.strategies.test_user_strategy import FIXTURES, user_config


def test_hold_of_an_unconfigured_strategy_is_refused_naming_the_configured_ones(tmp_path: Path) -> None:
    """A typo in the strategy name: exit 2, one line listing the configured strategies; nothing is queued."""
    db = make_crupto_db(tmp_path / "crupto.db")
    res = run_cli(tmp_path, "--db", str(db), "hold", "trend_folowing", "--comment", "typo")
    assert res.returncode == 2, res.stdout + res.stderr
    assert "unknown strategy 'trend_folowing'" in res.stderr
    assert res.stderr.rstrip().endswith("governance.yaml: trend_following, mean_reversion")
    with Storage(str(db)) as storage:
        assert storage.pending_commands() == []


def test_hold_of_a_users_strategy_is_queued(tmp_path: Path, config_dir: Path) -> None:
    """A strategy configured by import path may be held like a built-in one (queued for the runner)."""
    db = make_crupto_db(tmp_path / "crupto.db")
    res = run_cli(tmp_path, "--db", str(db), "hold", "momentum", "--comment", "news",
                  CONFIG_DIR=str(user_config(config_dir)),
                  PYTHONPATH=os.pathsep.join(filter(None, [str(FIXTURES), os.environ.get("PYTHONPATH")])))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "queued command #1 hold" in res.stdout
    with Storage(str(db)) as storage:
        assert [c["args"] for c in storage.pending_commands()] == [{"strategy": "momentum"}]
