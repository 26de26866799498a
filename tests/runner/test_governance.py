"""Governance in the running system: locks, ladder, kill-switch, safe mode, reload, restarts."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import yaml

from prod_core.storage import Storage
from prod_core.testing.waiting import EVENT_TIMEOUT_S
from tests.runner.helpers import REPO, PaperProcess, cli


def _configs(tmp_path: Path, gov: dict | None = None, sim: dict | None = None) -> Path:
    configs = tmp_path / "configs"
    if not configs.exists():
        shutil.copytree(REPO / "configs", configs)
    for name, edits in (("governance.yaml", gov), ("symbols.yaml", sim)):
        if edits:
            path = configs / name
            data = yaml.safe_load(path.read_text())
            for dotted, value in edits.items():
                section, key = dotted.split(".")
                data[section][key] = value
            path.write_text(yaml.safe_dump(data))
    return configs


def _wait(predicate, timeout: float = EVENT_TIMEOUT_S, what: str = "the event", step: float = 0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _sigkill(run: PaperProcess) -> None:
    os.killpg(run.proc.pid, signal.SIGKILL)
    run.proc.wait()
    time.sleep(3.2)  # past the stale-heartbeat limit, so the next start marks the run crashed


def _bars_after(run: PaperProcess, n: int) -> None:
    """Wait until ``n`` more bars went through the loop (a window counted in bars, not wall seconds)."""
    start = run.sample("bars_total", symbol="BTC/USDT")
    run.wait_for(lambda: run.sample("bars_total", symbol="BTC/USDT") >= start + n, f"{n} more bars")


def _events(db: Path, kind: str) -> list[dict]:
    with Storage(str(db)) as storage:
        rows = []
        for r in storage.list_runs(limit=20):
            rows += [e for e in storage.events(r["run_id"]) if e["kind"] == kind]
        return rows


def test_crash_engages_daily_lock_max_daily_loss_and_ladder_stops_entries(tmp_path: Path) -> None:
    """In the crash scenario the daily lock engages with reason max_daily_loss and the drawdown ladder reaches no-entries."""
    configs = _configs(tmp_path, gov={"daily_lock.max_daily_loss_r": 1.0},
                       sim={"sim.scenario_start_bar": 150, "sim.scenario_bars": 40})
    run = PaperProcess(tmp_path, "--scenario", "crash", "--seed", "1", "--bar-interval", "0.005", "--linger", "0",
                       "--max-seconds", "300", env={"CONFIG_DIR": str(configs)})  # ended by Ctrl+C below
    try:
        run.wait_for_line("Дневной лок включён: max_daily_loss")
        assert run.sample("daily_lock_state", reason="max_daily_loss") == 1
        assert run.sample("daily_lock_state", reason="limits_ok") == 0
        rid = run.wait_for(lambda: _run_id(run.db), "the run row")
        run.wait_for(lambda: "vetoed_daily_lock" in _plan_decisions(run.db, rid) or "Drawdown-стоп" in run.output,
                     "a plan vetoed by the lock (or the drawdown stop)")
        run.interrupt()
        assert run.wait() == 0
    finally:
        run.kill()
    with Storage(str(run.db)) as storage:
        state = storage.load_governance_state()
        plans = storage.plans(storage.list_runs(1)[0]["run_id"])
    assert state["lock_reason"] == "max_daily_loss"
    assert any(p["decision"] == "vetoed_daily_lock" for p in plans) or state["dd_stopped"]
    assert _events(run.db, "lock_engaged")[0]["fields"]["reason"] == "max_daily_loss"


def test_drawdown_ladder_steps_to_no_entries_and_survives_sigkill_until_reset_dd(tmp_path: Path) -> None:
    """dd_state past no_entries_at_r stops entries; after SIGKILL and a new run_id it holds until `reset-dd --comment`."""
    configs = _configs(tmp_path, gov={"drawdown.throttle_at_r": -0.1, "drawdown.no_entries_at_r": -0.2,
                                      "daily_lock.max_daily_loss_r": 1000.0,
                                      "daily_lock.max_consecutive_losses": 1000})
    env = {"CONFIG_DIR": str(configs)}
    run = PaperProcess(tmp_path, "--bar-interval", "0.005", "--linger", "0", "--run-id", "dd-1", env=env)
    try:
        run.wait_for_line("Drawdown-стоп")
        # the heartbeat persists the account (at least once a second): wait until the stop is on disk
        run.wait_for(lambda: (_governance_state(run.db) or {}).get("dd_stopped"), "dd_stopped persisted")
        _sigkill(run)
    finally:
        run.kill()
    run2 = PaperProcess(tmp_path, "--bar-interval", "0.01", "--linger", "0", "--run-id", "dd-2", env=env)
    try:
        run2.wait_for_line("Фид sim зарегистрирован")
        status = cli(run2.db, "status").stdout
        assert "drawdown_stop=on" in status, status
        _wait(lambda: _plan_decisions(run2.db, "dd-2") & {"vetoed_drawdown"}, what="a plan vetoed by the drawdown stop")
        refused = cli(run2.db, "reset-dd", "--comment", " ")
        assert refused.returncode == 2 and "needs a non-empty --comment" in refused.stderr
        done = cli(run2.db, "reset-dd", "--comment", "reviewed the drawdown")
        assert done.returncode == 0 and "applied" in done.stdout, done.stdout + done.stderr
        _wait(lambda: _plan_decisions(run2.db, "dd-2") & {"approved", "resized"}, what="entries resuming after reset-dd")
        run2.interrupt()
        assert run2.wait() == 0
    finally:
        run2.kill()
    with Storage(str(run2.db)) as storage:
        runs = {r["run_id"]: r["status"] for r in storage.list_runs(5)}
        audit = storage.audit_log(10)
    assert runs["dd-1"] == "crashed" and runs["dd-2"] == "stopped"
    with Storage(str(run2.db)) as storage:
        assert storage.load_governance_state()["dd_epoch"] >= 1
    row = next(a for a in audit if a["action"] == "reset-dd" and a["details"]["status"] == "applied")
    assert row["comment"] == "reviewed the drawdown" and row["actor"]


def _governance_state(db: Path) -> dict | None:
    with Storage(str(db)) as storage:
        return storage.load_governance_state()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _run_id(db: Path) -> str | None:
    with Storage(str(db)) as storage:
        runs = storage.list_runs(1)
        return runs[0]["run_id"] if runs else None


def _plan_decisions(db: Path, run_id: str) -> set[str]:
    with Storage(str(db)) as storage:
        return {p["decision"] for p in storage.plans(run_id)}


def test_daily_lock_survives_sigkill_and_restart_until_unlock(tmp_path: Path) -> None:
    """A max_trades lock engaged in one run is still engaged after SIGKILL and a restart, until `unlock --comment`."""
    configs = _configs(tmp_path, gov={"daily_lock.max_trades": 1})
    env = {"CONFIG_DIR": str(configs)}
    run = PaperProcess(tmp_path, "--bar-interval", "0.01", "--linger", "0", env=env)
    try:
        run.wait_for_line("Дневной лок включён: max_trades")
        _sigkill(run)  # the lock is persisted when it engages, not only at the heartbeat
    finally:
        run.kill()
    _configs(tmp_path, gov={"daily_lock.max_trades": 1000})  # the lock is account state, not config
    run2 = PaperProcess(tmp_path, "--bar-interval", "0.01", "--linger", "0", env=env)
    try:
        run2.wait_for_line("Фид sim зарегистрирован")
        assert run2.sample("daily_lock_state", reason="max_trades") == 1
        out = cli(run2.db, "unlock", "--comment", "reviewed: sim trades are fine")
        assert out.returncode == 0 and "applied" in out.stdout, out.stdout + out.stderr
        assert run2.sample("daily_lock_state", reason="limits_ok") == 1
        run2.interrupt()
        assert run2.wait() == 0
    finally:
        run2.kill()
    with Storage(str(run2.db)) as storage:
        audit = [a for a in storage.audit_log(10) if a["action"] == "unlock"]
    assert audit and audit[0]["comment"] == "reviewed: sim trades are fine" and audit[0]["ts"] > 0


def _kill_fills(run: PaperProcess) -> float:
    fams = run.scrape()
    return sum(s.value for s in fams["fills"].samples if s.labels.get("reason") == "kill_switch")


def test_kill_switch_flattens_within_two_seconds_and_survives_restart(tmp_path: Path) -> None:
    """`kill-switch on` closes every position (fills reason kill_switch) within 2 s; it stays on after SIGKILL + restart."""
    run = PaperProcess(tmp_path, "--bar-interval", "0.1", "--linger", "0", "--seed", "42")
    try:
        run.wait_for_line("Фид sim зарегистрирован")
        for _attempt in range(3):
            # A position may close on its own stop/target between our scrape and the command;
            # then the switch had nothing to flatten: switch it off and try again.
            _wait(lambda: run.sample("open_positions_count") >= 1, what="an open position", step=0.1)
            t0 = time.time()
            out = cli(run.db, "kill-switch", "on", "--comment", "drill")
            assert out.returncode == 0, out.stdout + out.stderr
            _wait(lambda: run.sample("open_positions_count") == 0, 2.0, "flat book", step=0.05)
            assert time.time() - t0 <= 2.5
            assert run.sample("kill_switch_state") == 1
            if _kill_fills(run) >= 1:
                break
            assert cli(run.db, "kill-switch", "off", "--comment", "retry").returncode == 0
        assert _kill_fills(run) >= 1
        _bars_after(run, 10)  # 1 s of bars at 0.1 s, however slow the machine
        assert run.sample("open_positions_count") == 0  # entries stay blocked
        _sigkill(run)
    finally:
        run.kill()
    run2 = PaperProcess(tmp_path, "--bar-interval", "0.02", "--linger", "0")
    try:
        run2.wait_for_line("Фид sim зарегистрирован")
        assert run2.sample("kill_switch_state") == 1
        run2.wait_for(lambda: run2.sample_or_none("bars_total", symbol="BTC/USDT") is not None, "a bar counter")
        _bars_after(run2, 100)  # 2 s of bars at 0.02 s, however slow the machine
        assert run2.sample("open_positions_count") == 0
        assert cli(run2.db, "kill-switch", "off", "--comment", "drill over").returncode == 0
        assert run2.sample("kill_switch_state") == 0
        run2.interrupt()
        assert run2.wait() == 0
    finally:
        run2.kill()


def test_command_issued_while_down_is_applied_at_start(tmp_path: Path) -> None:
    """A hold issued with no runner up is queued and applied when the next run starts, audited."""
    db = tmp_path / "crupto.db"
    Storage(str(db)).close()
    out = cli(db, "hold", "trend_following", "--comment", "news ahead")
    assert out.returncode == 0 and "applied when the next run starts" in out.stdout
    run = PaperProcess(tmp_path, "--bar-interval", "0.05", "--linger", "0", "--max-seconds", "3")
    try:
        run.wait_for_line("Команда оператора #1 hold")  # applied at start, before the --max-seconds loop
        assert run.wait() == 0
    finally:
        run.kill()
    with Storage(str(db)) as storage:
        assert storage.load_governance_state()["holds"] == ["trend_following"]
        assert storage.get_command(1)["status"] == "applied"
        assert storage.audit_log(5)[0]["comment"] == "news ahead"


def test_safe_mode_engages_and_releases_in_corr_spike(tmp_path: Path) -> None:
    """The corr_spike scenario engages safe mode on the correlation jump and releases it afterwards."""
    configs = _configs(tmp_path, sim={"sim.scenario_start_bar": 400, "sim.scenario_bars": 150})
    run = PaperProcess(tmp_path, "--scenario", "corr_spike", "--seed", "3", "--bar-interval", "0.004",
                       "--linger", "0", "--max-seconds", "300", env={"CONFIG_DIR": str(configs)})
    try:  # runs until safe mode was engaged on the jump and released after it (events in the DB), then Ctrl+C
        def released_after_the_jump() -> bool:
            jumps = [e["ts"] for e in _events(run.db, "safe_mode_engaged") if e["fields"]["mean_corr"] > 0.7]
            return bool(jumps) and any(e["ts"] > min(jumps) for e in _events(run.db, "safe_mode_released"))

        run.wait_for(released_after_the_jump, "safe mode engaged on the correlation jump and released after it")
        run.interrupt()
        assert run.wait() == 0
    finally:
        run.kill()
    engaged = _events(run.db, "safe_mode_engaged")
    released = _events(run.db, "safe_mode_released")
    assert engaged and released
    assert max(e["fields"]["mean_corr"] for e in engaged) > 0.7, engaged


def test_invalid_governance_edit_is_refused_and_valid_edit_applies_within_two_seconds(tmp_path: Path) -> None:
    """A broken edit of governance.yaml is refused with a clear log line (trading goes on); a valid one applies in <= 2 s."""
    configs = _configs(tmp_path)
    path = configs / "governance.yaml"
    original = path.read_text()
    run = PaperProcess(tmp_path, "--bar-interval", "0.05", "--linger", "0", env={"CONFIG_DIR": str(configs)})
    try:
        run.wait_for_line("Фид sim зарегистрирован")
        assert run.sample("drawdown_critical_threshold_r") == 1.5
        path.write_text(original.replace("critical_max_dd_r: 1.5", "critical_max_dd_r: -4"))
        line = run.wait_for_line("Новая конфигурация governance отклонена")
        assert "drawdown.critical_max_dd_r=-4" in line
        bars = run.sample("bars_total", symbol="BTC/USDT")
        run.wait_for(lambda: run.sample("bars_total", symbol="BTC/USDT") > bars, "a bar after the refused edit")
        assert run.sample("drawdown_critical_threshold_r") == 1.5
        t0 = time.time()
        path.write_text(original.replace("critical_max_dd_r: 1.5", "critical_max_dd_r: 0.7"))
        _wait(lambda: run.sample("drawdown_critical_threshold_r") == 0.7, 2.0, "new threshold", step=0.05)
        assert time.time() - t0 <= 2.0
        run.interrupt()
        assert run.wait() == 0
    finally:
        run.kill()
    assert "Конфигурация governance применена" in run.output


def _replace_keeping_mtime(path: Path, old: str, new: str, stat: os.stat_result) -> None:
    """Edit `path` atomically, the new file carrying `stat`'s mtime from its first visible moment."""
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    aside = path.with_name(path.name + ".new")
    aside.write_text(text.replace(old, new))
    os.utime(aside, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    os.replace(aside, path)


def test_sighup_and_cli_reload_force_a_reload(tmp_path: Path) -> None:
    """SIGHUP and `cli reload` re-read governance.yaml even when its mtime did not change."""
    configs = _configs(tmp_path)
    path = configs / "governance.yaml"
    run = PaperProcess(tmp_path, "--bar-interval", "0.05", "--linger", "0", env={"CONFIG_DIR": str(configs)})
    try:
        run.wait_for_line("Фид sim зарегистрирован")
        stat = path.stat()
        # Same mtime: the watch cannot see it. Written aside and renamed into place so that the
        # watch never catches the file between the write and the mtime reset.
        _replace_keeping_mtime(path, "stage_latency_ms: 50.0", "stage_latency_ms: 40.0", stat)
        time.sleep(1.2)
        assert run.sample("stage_latency_sla_seconds") == 0.05
        os.kill(run.proc.pid, signal.SIGHUP)
        _wait(lambda: run.sample("stage_latency_sla_seconds") == 0.04, what="reload on SIGHUP", step=0.05)
        cpu0, t0 = _cpu_seconds(run.proc.pid), time.time()
        time.sleep(2.0)
        busy = (_cpu_seconds(run.proc.pid) - cpu0) / (time.time() - t0)
        assert busy < 0.6, f"runner uses {busy:.0%} CPU after SIGHUP: the loop spins"
        _replace_keeping_mtime(path, "stage_latency_ms: 40.0", "stage_latency_ms: 30.0", stat)
        out = cli(run.db, "reload")
        assert out.returncode == 0 and "applied" in out.stdout, out.stdout
        assert run.sample("stage_latency_sla_seconds") == 0.03
        run.interrupt()
        assert run.wait() == 0
    finally:
        run.kill()
