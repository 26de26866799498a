"""The account is its journal: cash, positions and R stay true through SIGKILLs, crash points,
a rival runner, a busy database and a full disk (real runner processes, real SQLite files)."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from prod_core.testing.waiting import EVENT_TIMEOUT_S
from tests.runner.helpers import PaperProcess, cli

STARTING_CASH = 10_000.0
FAST = ("--bar-interval", "0.02")


def _trading_configs(config_dir: Path) -> Path:
    """Configs for a runner that trades fast and keeps trading: spot only, wide governance limits."""
    gov_path = config_dir / "governance.yaml"
    gov = yaml.safe_load(gov_path.read_text())
    gov["account"]["starting_equity_usd"] = STARTING_CASH
    gov["daily_lock"].update(max_daily_loss_r=1000.0, max_trades=100_000, max_consecutive_losses=100_000)
    gov["drawdown"].update(throttle_at_r=-500.0, no_entries_at_r=-1000.0, critical_max_dd_r=1000.0)
    gov["enable_map"] = {"calm": ["mean_reversion", "trend_following"], "trend_up": ["trend_following"],
                         "trend_down": ["trend_following"], "volatile": ["mean_reversion"]}
    gov_path.write_text(yaml.safe_dump(gov, sort_keys=False))
    sym_path = config_dir / "symbols.yaml"
    sym = yaml.safe_load(sym_path.read_text())
    for s in sym["symbols"]:
        s["kind"] = "spot"
    sym_path.write_text(yaml.safe_dump(sym, sort_keys=False))
    return config_dir


def _start(tmp: Path, configs: Path, *args: str, env: dict[str, str] | None = None) -> PaperProcess:
    return PaperProcess(tmp, *FAST, *args, env={"CONFIG_DIR": str(configs), **(env or {})})


def _journal_fills(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM journal WHERE kind = 'fill'").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def _wait_for(predicate, timeout: float, what: str, proc: PaperProcess | None = None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.proc.poll() is not None:
            raise AssertionError(f"runner exited ({proc.proc.returncode}) while waiting for {what}:\n{proc.output}")
        time.sleep(0.02)
    raise AssertionError(f"no {what} within {timeout} s" + (f":\n{proc.output}" if proc else ""))


def _wait_for_new_fill(db: Path, proc: PaperProcess, what: str, timeout: float = EVENT_TIMEOUT_S) -> None:
    before = _journal_fills(db)
    _wait_for(lambda: _journal_fills(db) > before, timeout, what, proc)


def _assert_account_true(db: Path) -> dict:
    """cli reconcile agrees; cash = start + the fills' flows; closed R = the trades' R; no position lost."""
    res = cli(db, "reconcile")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "AGREE" in res.stdout
    with sqlite3.connect(db, timeout=30) as conn:
        flows = sum(
            (-qty * price if side == "buy" else qty * price) - fee
            for side, qty, price, fee in conn.execute("SELECT side, qty, price, fee_usd FROM fills")
        )
        saved = json.loads(conn.execute("SELECT state_json FROM governance_state WHERE account = 'paper'").fetchone()[0])
        closed_r = conn.execute("SELECT COALESCE(SUM(trade_r), 0) FROM positions WHERE status = 'closed'").fetchone()[0]
        opened = {r[0] for r in conn.execute("SELECT position_id FROM journal WHERE kind='fill' AND event='open'")}
        closed = {r[0] for r in conn.execute("SELECT position_id FROM journal WHERE kind='fill' AND event='close'")}
        rows_open = {r[0] for r in conn.execute("SELECT position_id FROM positions WHERE status = 'open'")}
        fills = conn.execute("SELECT COUNT(*) FROM fills").fetchone()[0]
        journal_fills = conn.execute("SELECT COUNT(*) FROM journal WHERE kind = 'fill'").fetchone()[0]
    assert math.isclose(saved["cash_usd"], STARTING_CASH + flows, rel_tol=1e-6), (saved["cash_usd"], flows)
    assert math.isclose(saved["closed_r"], closed_r, rel_tol=1e-9, abs_tol=1e-9), (saved["closed_r"], closed_r)
    assert opened - closed == rows_open, f"lost: {sorted(opened - closed - rows_open)}, phantom: {sorted(rows_open - opened)}"
    assert closed <= opened
    assert fills == journal_fills
    return {"fills": fills, "open": len(rows_open), "closed_r": closed_r}


def test_random_sigkills_never_drift_the_account(tmp_path: Path, config_dir: Path) -> None:
    """50+ SIGKILLs at random moments (half within 20 ms of a fill) on one DB: every time `cli reconcile`
    agrees, cash equals the starting cash plus the fills' flows, and no position is lost."""
    configs = _trading_configs(config_dir)
    db = tmp_path / "crupto.db"
    seed = int(os.environ.get("CRUPTO_KILL_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    kills = 0
    deadline = time.time() + 900
    while kills < 52 or _journal_fills(db) < 60:
        assert time.time() < deadline, f"seed {seed}: only {kills} kills, {_journal_fills(db)} fills in 900 s"
        proc = _start(tmp_path, configs, "--seed", str(rng.randrange(1_000_000)))
        try:
            proc.wait_for_line("зарегистрирован")
            if kills % 2:
                _wait_for_new_fill(db, proc, "a fill")
                time.sleep(rng.uniform(0.0, 0.02))
            else:
                time.sleep(rng.uniform(0.0, 1.5))
        finally:
            if proc.proc.poll() is None:
                os.killpg(proc.proc.pid, signal.SIGKILL)
            proc.wait()
        kills += 1
        _assert_account_true(db)
    # A clean start after the last kill reconciles and says so.
    proc = _start(tmp_path, configs, "--max-seconds", "3", "--linger", "0")
    assert proc.wait() == 0, proc.output
    assert "журнал и сохранённое состояние совпадают" in proc.output
    totals = _assert_account_true(db)
    assert totals["fills"] >= 60
    with sqlite3.connect(db) as conn:  # every killed run was found dead through its lease
        statuses = dict(conn.execute("SELECT status, COUNT(*) FROM runs GROUP BY status").fetchall())
    assert statuses.get("running", 0) == 0 and statuses.get("crashed", 0) >= kills, statuses


@pytest.mark.parametrize("point", ["after_fill_insert", "before_commit", "after_commit", "mid_flush"])
def test_crash_points_inside_a_fill_commit_leave_a_consistent_account(
    tmp_path: Path, config_dir: Path, point: str
) -> None:
    """A SIGKILL at each named point of a fill's commit (test-only hook) leaves the journal and the
    saved state in agreement; the next start reconciles and trades on."""
    configs = _trading_configs(config_dir)
    db = tmp_path / "crupto.db"
    for nth in (1, 3):
        proc = _start(tmp_path, configs, env={"CRUPTO_CRASH_AT": f"{point}:{nth}"})
        rc = proc.wait(timeout=120)
        assert rc == -signal.SIGKILL, f"{point}:{nth} did not crash (rc={rc}):\n{proc.output}"
        _assert_account_true(db)
    proc = _start(tmp_path, configs, "--max-seconds", "300", "--linger", "0")  # ended by Ctrl+C
    try:
        _wait_for_new_fill(db, proc, "a fill after the crashes")
        proc.interrupt()
        assert proc.wait() == 0, proc.output
    finally:
        proc.kill()
    assert "журнал и сохранённое состояние совпадают" in proc.output
    _assert_account_true(db)


def test_second_runner_on_the_same_account_exits_2_naming_the_owner(tmp_path: Path, config_dir: Path) -> None:
    """A second runner on the same DB exits 2 within 5 s naming the first one; the first keeps trading."""
    configs = _trading_configs(config_dir)
    db = tmp_path / "crupto.db"
    first = _start(tmp_path, configs, "--run-id", "first-runner")
    try:
        first.wait_for_line("зарегистрирован")
        t0 = time.time()
        second = subprocess.run(
            [sys.executable, "-m", "prod_core.runner",
             "--db", str(db), "--port", "0", "--max-seconds", "30", *FAST],
            cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=60,
            env={**os.environ, "ENV_FILE": "/nonexistent", "CONFIG_DIR": str(configs),
                 "LOGS_DIR": str(tmp_path / "logs2"), "REPORTS_DIR": str(tmp_path / "reports2")},
        )
        elapsed = time.time() - t0
        assert second.returncode == 2, second.stdout + second.stderr
        assert elapsed < 5.0, f"second runner took {elapsed:.1f} s to refuse"
        out = second.stdout + second.stderr
        assert "first-runner" in out and f"pid {first.proc.pid}" in out and "kill -INT" in out, out
        _wait_for_new_fill(db, first, "a fill of the first runner after the refusal")
        first.interrupt()
        assert first.wait() == 0, first.output
    finally:
        first.kill()
    _assert_account_true(db)


def test_write_lock_held_8s_by_another_process_is_survived(tmp_path: Path, config_dir: Path) -> None:
    """Another process holds the SQLite write lock for 8 s: the runner retries (logged, counted in
    storage_retries_total), keeps running, and the account does not drift."""
    configs = _trading_configs(config_dir)
    db = tmp_path / "crupto.db"
    proc = _start(tmp_path, configs)
    try:
        proc.wait_for_line("зарегистрирован")
        _wait_for_new_fill(db, proc, "a first fill")
        holder = sqlite3.connect(db, timeout=30, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        held = time.time()
        proc.wait_for_line("занята другим процессом")
        while time.time() - held < 8.0:
            assert proc.proc.poll() is None, proc.output
            time.sleep(0.1)
        holder.execute("COMMIT")
        holder.close()
        _wait_for(lambda: proc.sample("storage_retries_total") > 0, EVENT_TIMEOUT_S, "storage_retries_total > 0", proc)
        _wait_for_new_fill(db, proc, "a fill after the lock was released")
        assert proc.sample("storage_write_failing") == 0
        proc.interrupt()
        assert proc.wait() == 0, proc.output
    finally:
        proc.kill()
    _assert_account_true(db)


def _mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"mounting a tmpfs is required under CI: {res.stderr.strip()}")
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")


def test_full_disk_halts_entries_keeps_the_journal_and_recovers(tmp_path: Path, config_dir: Path) -> None:
    """The DB's disk fills up: entries are halted (vetoed_storage), the alert metric is 1, nothing
    drifts; once space is freed trading resumes, and a later start reconciles."""
    configs = _trading_configs(config_dir)
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "8m")
    try:
        db = disk / "crupto.db"
        proc = _start(tmp_path, configs, env={"DB_PATH": str(db)})
        try:
            proc.wait_for_line("зарегистрирован")
            _wait_for_new_fill(db, proc, "a first fill")
            filler = disk / "filler"
            with open(filler, "wb") as fh:  # take every free byte of the disk
                chunk = b"\0" * 65536
                try:
                    while True:
                        fh.write(chunk)
                        fh.flush()
                except OSError:
                    pass
            proc.wait_for_line("Хранилище не принимает запись")
            _wait_for(lambda: proc.sample("storage_write_failing") == 1, EVENT_TIMEOUT_S, "storage_write_failing 1", proc)
            _wait_for(lambda: sum(
                s.value for s in proc.scrape()["plans"].samples
                if s.name == "plans_total" and s.labels.get("decision") == "vetoed_storage") > 0,
                EVENT_TIMEOUT_S, "a plan vetoed for storage", proc)
            filler.unlink()
            proc.wait_for_line("Хранилище снова принимает запись")
            assert proc.sample("storage_write_failing") == 0
            _wait_for_new_fill(db, proc, "a fill after recovery")
            proc.interrupt()
            assert proc.wait() == 0, proc.output
        finally:
            proc.kill()
        _assert_account_true(db)
        again = _start(tmp_path, configs, "--max-seconds", "2", "--linger", "0", env={"DB_PATH": str(db)})
        assert again.wait() == 0, again.output
        assert "журнал и сохранённое состояние совпадают" in again.output
        _assert_account_true(db)
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_duplicate_run_id_is_refused_and_leaves_no_lease(tmp_path: Path, config_dir: Path) -> None:
    """A run id that already exists in the DB: exit 2 with one line naming it; the account's lease is
    not left behind, so the next start is clean."""
    configs = _trading_configs(config_dir)
    db = tmp_path / "crupto.db"
    first = _start(tmp_path, configs, "--run-id", "same-id", "--max-seconds", "1", "--linger", "0")
    assert first.wait() == 0, first.output
    again = _start(tmp_path, configs, "--run-id", "same-id", "--max-seconds", "1", "--linger", "0")
    assert again.wait() == 2, again.output
    errors = [line for line in again.lines if "ERROR" in line]
    assert len(errors) == 1 and "run id 'same-id' already exists" in errors[0] and "--run-id" in errors[0], again.output
    assert "Traceback" not in again.output
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM leases").fetchone()[0] == 0
    ok = _start(tmp_path, configs, "--max-seconds", "1", "--linger", "0")
    assert ok.wait() == 0, ok.output
    assert "lease перехвачен" not in ok.output
