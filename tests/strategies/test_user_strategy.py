"""A user's strategy package outside prod_core, configured in governance.yaml by import path or
entry point: it trades in replay and in the sim paper loop, and an exception inside one strategy
holds just that strategy while the runner and the other strategies go on."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest
import yaml

from prod_core.configs import ConfigError, ConfigLoader
from prod_core.storage import Storage
from prod_core.strategies import Entry, build_kinds
from prod_core.testing.builders import make_bar
from tests.runner.helpers import REPO, PaperProcess
from tests.runner.test_replay_run import _write_csvs

FIXTURES = REPO / "tests" / "fixtures" / "user_strategies"


def user_config(config_dir: Path, *, fail_at: int = 400, entry_point: bool = False) -> Path:
    """The shipped configs plus two user strategies (always enabled), fixed-notional sizing, no stops in reach."""
    path = config_dir / "governance.yaml"
    gov = yaml.safe_load(path.read_text())
    momentum = {"class": "momentum_ep"} if entry_point else {"class": "acme_strats.momentum:Momentum"}
    gov["strategies"] = {
        "momentum": {**momentum, "params": {"lookback": 5, "hold_bars": 3}},
        "faulty": {"class": "acme_strats.momentum:Faulty", "params": {"fail_at": fail_at}},
    }
    empty = {k: [] for k in ("calm", "trend_up", "trend_down", "volatile")}
    gov["enable_map"] = {"always": ["momentum", "faulty"], **empty}
    gov["safe_mode_enable_map"] = {"always": ["momentum", "faulty"], **empty}
    gov["sizing"] = {"mode": "fixed_notional", "notional_usd": {"*": 150.0}, "nominal_r_usd": 50.0}
    gov["daily_lock"].update(max_trades=100_000, max_consecutive_losses=100_000, max_daily_loss_r=1e6)
    gov["drawdown"].update(throttle_at_r=-1e6, no_entries_at_r=-2e6, critical_max_dd_r=1e6)
    path.write_text(yaml.safe_dump(gov, sort_keys=False))
    return config_dir


def entry_point_site(tmp: Path) -> Path:
    """A directory with an installed distribution's metadata that declares a crupto.strategies entry point."""
    site = tmp / "site"
    dist = site / "acme_strats-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-strats\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[crupto.strategies]\nmomentum_ep = acme_strats.momentum:Momentum\n")
    return site


def _env(*paths: Path) -> dict[str, str]:
    extra = os.pathsep.join(str(p) for p in paths)
    return {"PYTHONPATH": extra + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")}


def test_strategy_named_by_import_path_validates_its_parameters(config_dir: Path, monkeypatch) -> None:
    """`class: module:Class` imports the user's class; its params are validated, a bad one names the field and value."""
    monkeypatch.syspath_prepend(str(FIXTURES))
    gov = ConfigLoader(user_config(config_dir)).load_governance()
    kinds = build_kinds(gov.strategies)
    assert kinds["momentum"].cls.__module__ == "acme_strats.momentum"
    assert kinds["momentum"].params.lookback == 5
    strategy = kinds["momentum"].build("BTC/USDT", can_short=False)
    answers = [strategy.on_bar(make_bar(ts_ms=i, open=100.0 + i, close=100.0 + i), None, None) for i in range(7)]
    assert isinstance(answers[-1], Entry) and answers[:5] == [None] * 5

    data = yaml.safe_load((config_dir / "governance.yaml").read_text())
    data["strategies"]["momentum"]["params"]["lookback"] = 0
    (config_dir / "governance.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ConfigError, match=r"governance.yaml.*strategies\.momentum\.lookback.*greater than or equal to 1.*was 0"):
        ConfigLoader(config_dir).load_governance()


@pytest.mark.parametrize(
    ("cls", "message"),
    [
        ("acme_strats.nope:Momentum", r"strategies\.momentum: cannot import module 'acme_strats\.nope'.*PYTHONPATH"),
        ("acme_strats.momentum:Nope", r"strategies\.momentum: module 'acme_strats\.momentum' has no 'Nope'"),
        ("collections:OrderedDict", r"strategies\.momentum: 'collections:OrderedDict' is not a Strategy subclass"),
        ("no_such_entry_point", r"strategies\.momentum: no strategy 'no_such_entry_point'.*crupto\.strategies"),
    ],
)
def test_unusable_strategy_reference_is_refused_with_what_to_do(config_dir: Path, monkeypatch, cls: str,
                                                                 message: str) -> None:
    """A strategy that cannot be imported is refused when the config loads, naming the entry and the fix."""
    monkeypatch.syspath_prepend(str(FIXTURES))
    user_config(config_dir)
    data = yaml.safe_load((config_dir / "governance.yaml").read_text())
    data["strategies"]["momentum"]["class"] = cls
    (config_dir / "governance.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ConfigError, match=message):
        ConfigLoader(config_dir).load_governance()


def test_enable_map_naming_an_unconfigured_strategy_is_refused(config_dir: Path) -> None:
    """enable_map may only name strategies configured under `strategies`."""
    data = yaml.safe_load((config_dir / "governance.yaml").read_text())
    data["enable_map"]["calm"] = ["mean_reversion", "momentum"]
    (config_dir / "governance.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ConfigError, match=r"enable_map: unknown strategy 'momentum'; configured under strategies: "
                                          r"trend_following, mean_reversion"):
        ConfigLoader(config_dir).load_governance()


def _replay(tmp: Path, config_dir: Path, env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], Path]:
    paths, _ = _write_csvs(tmp, n=1500)
    db = tmp / "replay.db"
    full = {k: v for k, v in os.environ.items() if not k.startswith("ALERT_TEST_")}
    full.update(ENV_FILE=str(tmp / "none"), REPORTS_DIR=str(tmp / "reports"), LOGS_DIR=str(tmp / "logs"),
                DB_PATH=str(db), **env)
    result = subprocess.run(
        [sys.executable, "-m", "prod_core.runner", "--feed", "replay", "--port", "0", "--linger", "0",
         "--config-dir", str(config_dir), "--data", *map(str, paths)],
        cwd=REPO, env=full, capture_output=True, text=True, timeout=300,
    )
    return result, db


def _fills_by_strategy(db: Path) -> dict[str, list[int]]:
    """Fill times by the strategy of the position they belong to (from the journal)."""
    with closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT p.strategy, j.ts_ms FROM journal j JOIN positions p ON p.position_id = j.position_id "
                            "WHERE j.kind = 'fill' ORDER BY j.seq").fetchall()
    out: dict[str, list[int]] = {}
    for strategy, ts in rows:
        out.setdefault(strategy, []).append(ts)
    return out


@pytest.mark.parametrize("entry_point", [False, True], ids=["import_path", "entry_point"])
def test_user_strategy_trades_in_replay_and_its_exception_holds_only_that_strategy(
        tmp_path: Path, config_dir: Path, entry_point: bool) -> None:
    """Replay: the user's strategies trade; the faulty one raises at its 400th bar, is held (journaled, logged,
    counted), and the runner and the momentum strategy keep going to the end of the data."""
    env = _env(FIXTURES, entry_point_site(tmp_path)) if entry_point else _env(FIXTURES)
    result, db = _replay(tmp_path, user_config(config_dir, entry_point=entry_point), env)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout + result.stderr
    assert "Стратегия faulty упала" in out and "ZeroDivisionError" in out
    assert out.count("Стратегия faulty упала") < 5  # not a line per bar
    fills = _fills_by_strategy(db)
    assert len(fills.get("faulty", [])) >= 2 and len(fills.get("momentum", [])) >= 20
    with Storage(db) as storage:
        run_id = storage.list_runs(limit=1)[0]["run_id"]
        events = [e for e in storage.events(run_id) if e["kind"] == "strategy_error"]
    with closing(sqlite3.connect(db)) as conn:
        journal = conn.execute("SELECT body_json FROM journal WHERE event = 'hold' AND run_id = ?", (run_id,)).fetchall()
    assert events and events[0]["fields"]["strategy"] == "faulty"
    failed_at = events[0]["fields"]["ts_ms"]
    assert max(fills["faulty"]) <= failed_at + 300_000  # nothing new after the hold (a pending exit may fill)
    assert any(ts > failed_at for ts in fills["momentum"])  # the other strategy went on trading
    assert len(journal) == 1 and json.loads(journal[0][0])["details"]["strategy"] == "faulty"
    assert json.loads(journal[0][0])["state"]["holds"] == ["faulty"]
    assert "replay: bars=" in result.stdout


def test_user_strategy_trades_in_sim_and_its_exception_is_alerted_while_the_runner_goes_on(
        tmp_path: Path, config_dir: Path) -> None:
    """Paper loop on the sim feed: the user's strategy trades; the faulty one is held, strategy_errors_total counts
    it, the loop keeps cycling and momentum keeps filling after the hold."""
    cfg = user_config(config_dir, fail_at=330)
    run = PaperProcess(tmp_path, "--bar-interval", "0.02", "--linger", "0", "--config-dir", str(cfg),
                       env=_env(FIXTURES))
    try:
        run.wait_for_line("Стратегия faulty упала", timeout=120)
        assert run.sample("strategy_errors_total", strategy="faulty") >= 1
        assert run.sample("strategy_errors_total", strategy="momentum") == 0
        held_at = time.time()
        before = run.sample("fills_total", symbol="BTC/USDT", reason="exit_signal")
        deadline = time.time() + 120
        while run.sample("fills_total", symbol="BTC/USDT", reason="exit_signal") <= before:
            assert time.time() < deadline, "momentum stopped trading after the other strategy failed"
            time.sleep(0.2)
        assert run.sample("runner_last_cycle_ts") >= held_at
        run.interrupt()
        assert run.wait() == 0
    finally:
        run.kill()
    with Storage(run.db) as storage:
        assert storage.load_governance_state()["holds"] == ["faulty"]
    assert "momentum" in _fills_by_strategy(run.db)
