"""Accounts in the CLI: --account on the operator commands, ACCOUNT as the default, status --all,
the firm-wide kill-switch with no runner up (it is persisted for the next runners)."""

from __future__ import annotations

import json
from pathlib import Path

from prod_core.storage import Storage
from tests.cli.helpers import make_crupto_db, run_cli


def test_a_bad_account_is_refused_naming_it(tmp_path: Path) -> None:
    db = make_crupto_db(tmp_path / "crupto.db")
    done = run_cli(tmp_path, "--db", str(db), "lock", "--account", "Bad Name")
    assert done.returncode == 2 and "'Bad Name'" in done.stderr and "--account" in done.stderr
    done = run_cli(tmp_path, "--db", str(db), "lock", ACCOUNT="replay-x")
    assert done.returncode == 2 and "environment ACCOUNT" in done.stderr and "'replay-x'" in done.stderr
    done = run_cli(tmp_path, "--db", str(db), "kill-switch", "on", "--all", "--account", "a1", "--comment", "x")
    assert done.returncode == 2 and "not allowed with argument" in done.stderr


def test_commands_are_queued_for_the_account_flag_else_the_account_setting(tmp_path: Path) -> None:
    db = make_crupto_db(tmp_path / "crupto.db")
    assert run_cli(tmp_path, "--db", str(db), "lock", "--account", "fund-a").returncode == 0
    done = run_cli(tmp_path, "--db", str(db), "hold", "trend_following", ACCOUNT="fund-b")
    assert done.returncode == 0 and "for account fund-b" in done.stdout, done.stdout
    assert run_cli(tmp_path, "--db", str(db), "reload").returncode == 0
    with Storage(str(db), create=False) as st:
        assert [(c["command"], c["account"]) for c in st.pending_commands()] == [
            ("lock", "fund-a"), ("hold", "fund-b"), ("reload", "paper")]


def test_firm_kill_switch_with_no_runner_is_persisted_and_status_all_shows_it(tmp_path: Path) -> None:
    db = make_crupto_db(tmp_path / "crupto.db")
    with Storage(str(db), create=False) as st:
        st.save_governance_state({"kill_switch": False, "lock_reason": "limits_ok"}, ts=1.0, account="fund-a")
    refused = run_cli(tmp_path, "--db", str(db), "kill-switch", "on", "--all")
    assert refused.returncode == 2 and "needs a non-empty --comment" in refused.stderr
    done = run_cli(tmp_path, "--db", str(db), "kill-switch", "on", "--all", "--comment", "drill")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "fund-a: no runner running; its next run starts with the kill-switch on" in done.stdout
    info = json.loads(run_cli(tmp_path, "--db", str(db), "status", "--all", "--json").stdout)
    assert info["firm_kill_switch"]["kill_switch"] is True and info["firm_kill_switch"]["comment"] == "drill"
    assert "fund-a" in [a["account"] for a in info["accounts"]]
    text = run_cli(tmp_path, "--db", str(db), "status", "--all").stdout
    assert text.startswith("firm kill_switch=on") and "by " in text and "drill" in text
    assert "firm kill_switch=on" in run_cli(tmp_path, "--db", str(db), "status").stdout
    again = run_cli(tmp_path, "--db", str(db), "kill-switch", "on", "--all", "--comment", "twice")
    assert again.returncode == 1 and "already on" in again.stdout
    assert run_cli(tmp_path, "--db", str(db), "kill-switch", "off", "--all", "--comment", "over").returncode == 0
    with Storage(str(db), create=False) as st:
        assert st.firm_state()["kill_switch"] is False and st.firm_state()["epoch"] == 2
        assert [a["details"]["state"] for a in st.audit_log() if a["action"] == "firm-kill-switch"] == ["off", "on"]
