"""`cli status` judges the recorded run by its heartbeat and shows ALERT_TEST drills."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from prod_core.cli.common import STALE_HEARTBEAT_S
from prod_core.storage import Storage
from tests.cli.helpers import make_crupto_db, run_cli, wait_until
from tests.runner.helpers import PaperProcess

OVERLAY_LINE = "ALERT_TEST overlay active: ALERT_TEST_DAILY_LOCK=max_daily_loss (test drill; not real state)"


def record_run(db: Path, *, heartbeat_age_s: float, overlay: bool = True) -> None:
    """A run recorded as `running` (as a runner writes it) whose last heartbeat is this old."""
    ts = time.time() - heartbeat_age_s
    with Storage(str(db)) as st:
        st.start_run("r1", mode="paper", feed="sim", config_hash="h", code_version="v", ts=ts - 30)
        st.heartbeat("r1", ts)
        st.set_feed_state("r1", "sim", 1, ts, "registered")
        if overlay:
            st.add_event("r1", ts=ts - 30, kind="alert_test_overlay", severity="warning", component="runner",
                         message="overlay", fields={"variable": "ALERT_TEST_DAILY_LOCK", "value": "max_daily_loss"})


def status(db: Path, *args: str) -> str:
    done = run_cli(db.parent, "--db", str(db), "status", *args)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return done.stdout


def status_showing(db: Path, text: str) -> str | None:
    """The status output if it contains ``text``, else None (for polling)."""
    out = status(db)
    return out if text in out else None


def test_status_of_a_silent_running_run_says_crashed_unresponsive(tmp_path: Path) -> None:
    """A `running` run with a 60 s old heartbeat: crashed/unresponsive, real age, feeds unknown."""
    db = make_crupto_db(tmp_path / "crupto.db")
    record_run(db, heartbeat_age_s=60)
    text = status(db)
    match = re.search(r"^run: r1  status=crashed/unresponsive \(no heartbeat for (\d+) s\)  feed=sim$", text, re.M)
    assert match, text
    assert 60 <= int(match.group(1)) <= 60 + 60
    assert "  sim: feed_health=unknown (runner not reporting; last recorded 1 healthy at " in text
    assert "(healthy)" not in text and "status=running" not in text
    assert "ALERT_TEST" not in text  # a dead runner applies no drill


def test_status_json_carries_the_liveness_judgement(tmp_path: Path) -> None:
    """--json: liveness, heartbeat_age_s, feeds without a health value, no overlay."""
    db = make_crupto_db(tmp_path / "crupto.db")
    record_run(db, heartbeat_age_s=60)
    info = json.loads(status(db, "--json"))
    assert info["liveness"] == "crashed/unresponsive"
    assert 60 <= info["heartbeat_age_s"] <= 120
    assert info["stale_after_s"] == STALE_HEARTBEAT_S == 10.0
    assert info["run"]["status"] == "running"  # the record itself is not rewritten
    feeds = [(f["feed"], f["health"], f["state"], f["last_health"]) for f in info["feeds"]]
    assert feeds == [("sim", None, "unknown", 1)]
    assert info["alert_test_overlay"] == {}


def test_status_just_past_the_threshold_is_crashed(tmp_path: Path) -> None:
    """The threshold is 10 s of silence (the runner heartbeats every second)."""
    db = make_crupto_db(tmp_path / "crupto.db")
    record_run(db, heartbeat_age_s=STALE_HEARTBEAT_S + 1, overlay=False)
    assert json.loads(status(db, "--json"))["liveness"] == "crashed/unresponsive"


def test_status_of_a_live_run_shows_the_alert_test_overlay(tmp_path: Path) -> None:
    """A fresh heartbeat: status=running, feeds as reported, and the drill named as a drill."""
    db = make_crupto_db(tmp_path / "crupto.db")
    record_run(db, heartbeat_age_s=0)
    text = status(db)
    assert "run: r1  status=running  feed=sim" in text
    assert OVERLAY_LINE in text.splitlines()
    assert "  sim: feed_health=1 (healthy) registered" in text
    info = json.loads(status(db, "--json"))
    assert info["liveness"] == "alive"
    assert info["alert_test_overlay"] == {"ALERT_TEST_DAILY_LOCK": "max_daily_loss"}
    assert info["feeds"][0]["health"] == 1 and info["feeds"][0]["state"] == "healthy"


def test_status_of_a_stopped_run_is_unchanged(tmp_path: Path) -> None:
    """A cleanly stopped run keeps its recorded status and final feed state."""
    db = make_crupto_db(tmp_path / "crupto.db")
    record_run(db, heartbeat_age_s=60)
    with Storage(str(db)) as st:
        st.set_feed_state("r1", "sim", -1, time.time(), "stopped")
        st.end_run("r1", status="stopped", ts=time.time())
    text = status(db)
    assert "run: r1  status=stopped  feed=sim" in text
    assert "  sim: feed_health=-1 (paused) stopped" in text and "ALERT_TEST" not in text
    assert json.loads(status(db, "--json"))["liveness"] == "stopped"


def test_status_after_sigkill_of_a_real_runner(tmp_path: Path) -> None:
    """A real runner with a drill is shown live; after SIGKILL, crashed/unresponsive within the threshold."""
    run = PaperProcess(tmp_path, "--max-seconds", "300", env={"ALERT_TEST_DAILY_LOCK": "max_daily_loss"})
    try:
        run.wait_for_line("Prometheus exporter слушает порт")
        live = wait_until(lambda: status_showing(run.db, OVERLAY_LINE), 120, "the drill in status")
        assert re.search(r"status=running  feed=sim", live), live
        assert "feed_health=1 (healthy)" in live
    finally:
        run.kill()  # SIGKILL to the process group: no clean stop is recorded
    dead = wait_until(lambda: status_showing(run.db, "crashed/unresponsive"), STALE_HEARTBEAT_S + 60,
                      "crashed/unresponsive in status", interval=1.0)
    assert re.search(r"status=crashed/unresponsive \(no heartbeat for \d+ s\)", dead), dead
    assert "feed_health=unknown (runner not reporting" in dead and "ALERT_TEST" not in dead
