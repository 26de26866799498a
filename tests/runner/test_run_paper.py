"""The real paper loop through scripts/run_paper.sh: lifecycle, metrics, signals, errors."""

from __future__ import annotations

import json
import urllib.request
import shutil
import sys
import time
from pathlib import Path

import yaml

from prod_core.storage import Storage
from tests.runner.helpers import REPO, PaperProcess, cli

DESIGN_METRICS = {
    "feed_health": "gauge",
    "daily_lock_state": "gauge",
    "dd_state": "gauge",
    "regime_label": "gauge",
    "stage_latency_ms": "histogram",
    "stage_latency_seconds": "histogram",
    "equity_usd": "gauge",
    "pnl_cum_r": "gauge",
    "max_dd_r": "gauge",
    "open_positions_count": "gauge",
    "exposure_gross_pct": "gauge",
    "exposure_net_pct": "gauge",
    "portfolio_safe_mode": "gauge",
    "kill_switch_state": "gauge",
    "runner_last_cycle_ts": "gauge",
    "execution_reject_rate": "gauge",
    "bars_total": "counter",
    "data_anomalies_total": "counter",
    "plans_total": "counter",
    "orders_total": "counter",
    "fills_total": "counter",
    "errors_total": "counter",
    "agent_node_state": "gauge",
    "agent_node_events_total": "counter",
    "agent_edge_events_total": "counter",
}


def _strip_total(name: str) -> str:
    return name[: -len("_total")] if name.endswith("_total") else name


def test_max_seconds_run_serves_every_metric_and_closes_cleanly(tmp_path: Path) -> None:
    """A bounded run logs both runbook lines, serves every DESIGN metric, and ends closed with feed_health -1.

    The live checks wait for their events (a bar counted, the heartbeat moving); --max-seconds 20 is the
    bound under test and leaves them ample room (the runner has no stop-after-N-bars knob)."""
    run = PaperProcess(tmp_path, "--max-seconds", "20", "--bar-interval", "0.05", "--linger", "1", "--run-id", "t-max")
    try:
        run.wait_for_line("Prometheus exporter слушает порт")
        run.wait_for_line("Фид sim зарегистрирован")
        run.wait_for(lambda: (run.sample_or_none("bars_total", symbol="BTC/USDT") or 0) > 0, "a first BTC/USDT bar")
        families = run.scrape()
        for name, kind in DESIGN_METRICS.items():
            assert _strip_total(name) in families, f"{name} missing"
            assert families[_strip_total(name)].type == kind, f"{name} is {families[_strip_total(name)].type}"
        assert run.sample("feed_health", feed="sim") == 1
        ts1 = run.sample("runner_last_cycle_ts")
        run.wait_for(lambda: run.sample("runner_last_cycle_ts") > ts1, "runner_last_cycle_ts moving")
        assert run.sample("bars_total", symbol="BTC/USDT") > 0
        rc = run.wait()
    finally:
        run.kill()
    assert rc == 0, run.output
    assert "Paper-loop остановлен" in run.output
    assert (tmp_path / "logs" / "t-max.log").read_text(encoding="utf-8").count("Paper-loop остановлен") == 1
    report = tmp_path / "reports" / "run_t-max"
    assert (report / "summary.md").is_file() and (report / "fills.parquet").is_file() and (report / "run.log").is_file()
    status = cli(run.db, "status", "--json")
    assert status.returncode == 0, status.stderr
    info = json.loads(status.stdout)
    assert info["run"]["run_id"] == "t-max" and info["run"]["status"] == "stopped"
    assert [f["health"] for f in info["feeds"]] == [-1]
    assert info["pending_plans"] == []
    text = cli(run.db, "status").stdout
    assert "feed_health=-1 (paused)" in text and "pending plans: 0" in text


def test_exporter_lingers_with_final_state_after_stop(tmp_path: Path) -> None:
    """After «Paper-loop остановлен» the exporter still serves feed_health -1 and 0 pending plans.

    The linger is long (120 s) so the scrapes never race its end; a Ctrl+C ends it once they are done."""
    run = PaperProcess(tmp_path, "--max-seconds", "3", "--bar-interval", "0.05", "--linger", "120")
    try:
        run.wait_for_line("Paper-loop остановлен")
        assert run.sample("feed_health", feed="sim") == -1
        assert run.sample("pending_plans") == 0
        assert run.sample("runner_up") == 0
        run.interrupt()  # a signal ends the linger
        assert run.wait() == 0
    finally:
        run.kill()


def test_sigint_to_process_group_stops_within_seconds(tmp_path: Path) -> None:
    """Ctrl+C (SIGINT to the script's process group) stops the loop within seconds, exit 0, run closed."""
    run = PaperProcess(tmp_path, "--bar-interval", "0.05", "--linger", "0", "--run-id", "t-int")
    try:
        run.wait_for_line("Фид sim зарегистрирован")
        run.wait_for(lambda: (run.sample_or_none("bars_total", symbol="BTC/USDT") or 0) > 0, "a first bar")
        t0 = time.time()
        run.interrupt()
        rc = run.wait()
        elapsed = time.time() - t0
    finally:
        run.kill()
    assert rc == 0, run.output
    assert elapsed < 10, f"took {elapsed:.1f}s to stop"
    assert "Paper-loop остановлен" in run.output
    with Storage(str(run.db)) as storage:
        row = storage.get_run("t-int")
        assert row["status"] == "stopped" and row["ended_at"] is not None
        assert storage.pending_plans("t-int") == []


def test_sigterm_stops_cleanly(tmp_path: Path) -> None:
    """SIGTERM (e.g. from a process manager) is handled like Ctrl+C."""
    import signal

    run = PaperProcess(tmp_path, "--bar-interval", "0.05", "--linger", "0")
    try:
        run.wait_for_line("Фид sim зарегистрирован")
        run.proc.send_signal(signal.SIGTERM)
        rc = run.wait()
    finally:
        run.kill()
    assert rc == 0 and "Paper-loop остановлен" in run.output


def test_broken_governance_stops_runner_naming_file_field_value(tmp_path: Path) -> None:
    """A negative limit in governance.yaml makes the runner exit non-zero; the last line names file, field, value."""
    configs = tmp_path / "configs"
    shutil.copytree(REPO / "configs", configs)
    gov = yaml.safe_load((configs / "governance.yaml").read_text())
    gov["portfolio"]["max_open_positions"] = -2
    (configs / "governance.yaml").write_text(yaml.safe_dump(gov))
    run = PaperProcess(tmp_path, "--max-seconds", "5", env={"CONFIG_DIR": str(configs)})
    rc = run.wait()
    assert rc != 0
    last = run.lines[-1]
    assert "governance.yaml" in last and "portfolio.max_open_positions=-2" in last, run.output


def test_non_paper_mode_is_refused(tmp_path: Path) -> None:
    """MODE=live is refused at start with a clear message."""
    run = PaperProcess(tmp_path, "--max-seconds", "5", env={"MODE": "live"})
    rc = run.wait()
    assert rc != 0
    assert "only MODE=paper is supported" in run.lines[-1]


def test_feed_outage_turns_health_to_zero_and_heartbeat_continues(tmp_path: Path) -> None:
    """In the feed_outage scenario feed_health drops to 0 while runner_last_cycle_ts keeps moving."""
    run = PaperProcess(
        tmp_path, "--scenario", "feed_outage", "--bar-interval", "0.1", "--linger", "0", "--max-seconds", "300",
        env={"CONFIG_DIR": str(_configs_with(tmp_path, scenario_start_bar=5, scenario_bars=1200))},
    )  # the outage lasts 120 s of bars, the run is ended by Ctrl+C once both events are seen
    try:
        run.wait_for_line("Фид sim зарегистрирован")
        run.wait_for(lambda: run.sample("feed_health", feed="sim") == 0, "feed_health 0 in the outage")
        ts1 = run.sample("runner_last_cycle_ts")
        run.wait_for(lambda: run.sample("runner_last_cycle_ts") > ts1, "runner_last_cycle_ts moving in the outage")
        assert run.sample("feed_health", feed="sim") == 0  # still in the outage when the heartbeat moved
        run.interrupt()
        assert run.wait() == 0
    finally:
        run.kill()


def test_alert_test_daily_lock_overlay_is_loud_and_feeds_the_gauge(tmp_path: Path) -> None:
    """ALERT_TEST_DAILY_LOCK=max_daily_loss sets daily_lock_state{reason=max_daily_loss} 1 and is logged loudly."""
    run = PaperProcess(tmp_path, "--bar-interval", "0.05", "--linger", "0", "--max-seconds", "300",
                       env={"ALERT_TEST_DAILY_LOCK": "max_daily_loss"})  # ended by Ctrl+C below
    try:
        run.wait_for_line("ALERT_TEST_DAILY_LOCK=max_daily_loss")
        assert run.sample("daily_lock_state", reason="max_daily_loss") == 1
        assert run.sample("daily_lock_state", reason="limits_ok") == 0
        assert run.sample("alert_test_overlay", variable="ALERT_TEST_DAILY_LOCK", value="max_daily_loss") == 1
        run.interrupt()
        assert run.wait() == 0
    finally:
        run.kill()
    with Storage(str(run.db)) as storage:
        assert (storage.load_governance_state() or {}).get("lock_reason", "limits_ok") == "limits_ok"


def _configs_with(tmp_path: Path, **sim: object) -> Path:
    configs = tmp_path / "configs"
    if not configs.exists():
        shutil.copytree(REPO / "configs", configs)
    data = yaml.safe_load((configs / "symbols.yaml").read_text())
    data["sim"].update(sim)
    (configs / "symbols.yaml").write_text(yaml.safe_dump(data))
    return configs


def test_runner_module_help_runs() -> None:
    """`python -m prod_core.runner --help` documents --max-seconds."""
    import subprocess

    out = subprocess.run([sys.executable, "-m", "prod_core.runner", "--help"], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and "--max-seconds" in out.stdout


def _family_total(families: dict, name: str) -> float:
    return sum(s.value for s in families[name].samples if s.name == name + "_total")


def test_paper_run_trades_and_r_bookkeeping_balances(tmp_path: Path) -> None:
    """A paper run plans and fills; equity/pnl_cum_r move between scrapes; closed trade R sums to the ledger."""
    run = PaperProcess(tmp_path, "--bar-interval", "0.02", "--linger", "0", "--max-seconds", "300", "--seed", "42")
    try:
        run.wait_for_line("Фид sim зарегистрирован")
        time.sleep(2.0)
        first = run.scrape()

        def progressed() -> dict | None:
            second = run.scrape()
            # a worked order fills in parts (participation cap): wait for new plans AND fills
            if (_family_total(second, "fills") >= _family_total(first, "fills") + 2
                    and _family_total(second, "plans") > _family_total(first, "plans")):
                return second
            return None

        second = run.wait_for(progressed, "new plans and at least 2 new fills")
        assert _family_total(second, "plans") > _family_total(first, "plans")
        assert _family_total(second, "fills") > _family_total(first, "fills")
        moved = [n for n in ("equity_usd", "pnl_cum_r") if first[n].samples[0].value != second[n].samples[0].value]
        assert moved == ["equity_usd", "pnl_cum_r"]
        run.interrupt()
        assert run.wait() == 0
    finally:
        run.kill()
    with Storage(str(run.db)) as storage:
        state = storage.load_governance_state()
        trades = storage.closed_trades()
        fills = storage.fills()
    assert trades, "no closed trade"
    assert abs(sum(t["trade_r"] for t in trades) - state["closed_r"]) < 1e-9
    assert all(f["fee_usd"] > 0 for f in fills)


def test_execution_other_than_sim_is_refused(tmp_path: Path) -> None:
    """EXECUTION=sandbox is refused at start: this build only has the paper fill simulator."""
    run = PaperProcess(tmp_path, "--max-seconds", "5", env={"EXECUTION": "sandbox"})
    assert run.wait() == 2
    assert "EXECUTION=sandbox" in run.lines[-1] and "EXECUTION=sim" in run.lines[-1]


def test_secrets_never_reach_logs_reports_metrics_or_database(tmp_path: Path) -> None:
    """Sandbox keys from the environment appear in no log, report, metric or database byte."""
    key, secret = "KEYzz81Qw7Lm", "SECRETyy42Pt9Vn"
    run = PaperProcess(tmp_path, "--bar-interval", "0.02", "--linger", "1", "--max-seconds", "300",
                       env={"EXCHANGE_API_KEY": key, "EXCHANGE_API_SECRET": secret, "LOG_LEVEL": "DEBUG"})
    try:  # scraped once bars flow (no race with a --max-seconds end), then a Ctrl+C writes the reports
        run.wait_for_line("Prometheus exporter слушает порт")
        run.wait_for(lambda: (run.sample_or_none("bars_total", symbol="BTC/USDT") or 0) > 0, "a first bar")
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{run.port}/metrics", timeout=30).read().decode()
        run.interrupt()
        assert run.wait() == 0
    finally:
        run.kill()
    assert key not in metrics and secret not in metrics
    assert key not in run.output and secret not in run.output
    for path in [*tmp_path.rglob("*")]:
        if path.is_file():
            data = path.read_bytes()
            assert key.encode() not in data and secret.encode() not in data, path


def test_busy_exporter_port_is_a_clear_error(tmp_path: Path) -> None:
    """When PROMETHEUS_PORT is taken the runner exits 2 naming the port and the variable to change."""
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        run = PaperProcess(tmp_path, "--max-seconds", "5", port=port)
        assert run.wait() == 2
    last = run.lines[-1]
    assert str(port) in last and "PROMETHEUS_PORT" in last, run.output
    with Storage(str(run.db)) as storage:
        assert storage.list_runs(1)[0]["status"] == "failed"


def test_bad_command_line_value_is_refused_by_name(tmp_path: Path) -> None:
    """A non-positive --max-seconds is refused with the flag and the value."""
    run = PaperProcess(tmp_path, "--max-seconds", "-3")
    assert run.wait() == 2
    assert "--max-seconds" in run.output and "-3" in run.output
