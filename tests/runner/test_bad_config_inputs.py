"""Bad configs, flags and input files through the real runner: one clear line, exit 2, nothing half-written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prod_core.runner.cli_args import build_parser
from prod_core.testing import synthetic_rows, write_csv
from tests.runner.helpers import REPO, PaperProcess

SECRET = "sk-live-7f3a9c1e5b2d4a6f"


def _runner(tmp: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m prod_core.runner ...` with logs, reports and the DB inside ``tmp`` and no .env."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("ALERT_TEST_")}
    full.update(ENV_FILE=str(tmp / "missing.env"), LOGS_DIR=str(tmp / "logs"), REPORTS_DIR=str(tmp / "reports"))
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "prod_core.runner", "--db", str(tmp / "x.db"), "--port", "0", "--max-seconds", "20", *args],
        cwd=REPO, env=full, capture_output=True, text=True, timeout=120,
    )


def _last_line(result: subprocess.CompletedProcess[str]) -> str:
    return (result.stdout + result.stderr).strip().splitlines()[-1]


# ------------------------------------------------------------------- flags
@pytest.mark.parametrize(
    ("argv", "pattern"),
    [
        (["--seed", "-1"], r"argument --seed: must be in 0\.\.9223372036854775807 .*got '-1'"),
        (["--seed", str(2**64)], r"argument --seed: must be in 0\.\.9223372036854775807"),
        (["--seed", "1.5"], r"argument --seed: expected a whole number, got '1\.5'"),
        (["--run-id", "a/b"], r"argument --run-id: 'a/b' is not a safe run id: use 1-64 letters, digits"),
        (["--run-id", "../../../escape"], r"argument --run-id: '\.\./\.\./\.\./escape' is not a safe run id"),
        (["--run-id", ".hidden"], r"argument --run-id: '\.hidden' is not a safe run id"),
        (["--run-id=-rf"], r"argument --run-id: '-rf' is not a safe run id"),
        (["--run-id", "a" * 65], r"argument --run-id: 'a{65}' is not a safe run id"),
        (["--run-id", "x\\y"], r"argument --run-id: .* is not a safe run id"),
        (["--linger", "-1"], r"argument --linger: must be >= 0 \(0 = no linger\), got '-1'"),
        (["--linger", "nan"], r"argument --linger: must be a finite number, got 'nan'"),
        (["--port", "65536"], r"argument --port: must be in 0\.\.65535 \(0 picks a free port\), got '65536'"),
        (["--port", "-1"], r"argument --port: must be in 0\.\.65535"),
        (["--max-seconds", "nan"], r"argument --max-seconds: must be a finite number, got 'nan'"),
        (["--max-seconds", "inf"], r"argument --max-seconds: must be a finite number, got 'inf'"),
        (["--max-seconds", "0"], r"argument --max-seconds: must be > 0, got '0'"),
        (["--bar-interval=-inf"], r"argument --bar-interval: must be a finite number"),
    ],
)
def test_bad_runner_flag_exits_2_with_usage_and_one_error_line(capsys, argv: list[str], pattern: str) -> None:
    """argparse refuses the value before anything starts: usage, then one line naming the flag and value."""
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(argv)
    assert info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].startswith("usage: python -m prod_core.runner")
    assert lines[-1].startswith("python -m prod_core.runner: error: ")
    assert re.search(pattern, lines[-1]), lines[-1]


@pytest.mark.parametrize("value", ["dd-1", "t-max", "20250301T120000Z-ab12", "paper.2025_03", "a" * 64, "0"])
def test_safe_run_ids_are_accepted(value: str) -> None:
    assert build_parser().parse_args(["--run-id", value]).run_id == value


def test_good_numeric_flags_still_parse() -> None:
    args = build_parser().parse_args(["--seed", "0", "--port", "0", "--linger", "0", "--max-seconds", "2.5"])
    assert (args.seed, args.port, args.linger, args.max_seconds) == (0, 0, 0.0, 2.5)


def test_escaping_run_id_is_refused_by_the_real_runner_and_writes_nothing(tmp_path: Path) -> None:
    """`--run-id ../../../escape` used to write a log outside logs/: now exit 2 and no file at all."""
    work = tmp_path / "a" / "b" / "c"
    work.mkdir(parents=True)
    result = _runner(work, "--run-id", "../../../escape")
    assert result.returncode == 2
    assert "argument --run-id: '../../../escape' is not a safe run id" in _last_line(result)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


# ------------------------------------------------------------ configs at start
def test_duplicate_key_in_governance_stops_the_start_with_one_line(tmp_path: Path, config_dir: Path) -> None:
    """A second `risk:` section (5% per trade) is refused at start: exit 2, file/line/key named, no DB."""
    path = config_dir / "governance.yaml"
    path.write_text(path.read_text() + "\nrisk:\n  risk_per_trade_pct: 5.0\n  max_trade_risk_r: 1.0\n"
                    "  min_stop_distance_pct: 0.05\n")
    result = _runner(tmp_path, env={"CONFIG_DIR": str(config_dir)})
    assert result.returncode == 2
    last = _last_line(result)
    assert last.startswith(f"config error: {path}: line ")
    assert "duplicate key risk (first at line 8)" in last
    assert not (tmp_path / "x.db").exists()


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("max_trades: 30", "max_trades: true", "daily_lock.max_trades=True: a boolean is not a number"),
        ("max_daily_loss_r: 3.0", "max_daily_loss_r: .inf", "daily_lock.max_daily_loss_r=inf: must be a finite number"),
    ],
)
def test_wrong_type_in_governance_stops_the_start(tmp_path: Path, config_dir: Path, old: str, new: str,
                                                  expected: str) -> None:
    path = config_dir / "governance.yaml"
    path.write_text(path.read_text().replace(old, new))
    result = _runner(tmp_path, env={"CONFIG_DIR": str(config_dir)})
    assert result.returncode == 2
    assert expected in _last_line(result) and str(path) in _last_line(result)
    assert not (tmp_path / "x.db").exists()


def test_env_file_line_without_equals_is_refused_without_echoing_it(tmp_path: Path) -> None:
    """A secret pasted alone on a .env line: exit 2, file and line named, the secret printed nowhere."""
    env_file = tmp_path / "my.env"
    env_file.write_text(f"MODE=paper\nEXCHANGE_API_KEY=abc\n{SECRET}\n")
    result = _runner(tmp_path, env={"ENV_FILE": str(env_file)})
    assert result.returncode == 2
    assert _last_line(result) == (
        f"config error: {env_file}: line 3: expected KEY=VALUE (content not shown: it may hold a secret); "
        "fix the line, prefix it with # to comment it out, or delete it"
    )
    assert SECRET not in result.stdout + result.stderr
    assert not (tmp_path / "x.db").exists()


# ------------------------------------------------------------ runtime reload
def _replace(path: Path, text: str) -> None:
    """Write like an editor that saves atomically, so the watch never sees a half-written file."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_empty_or_truncated_governance_written_while_running_is_refused(tmp_path: Path, config_dir: Path) -> None:
    """An emptied, then truncated governance.yaml is refused on reload: the old config stays, the log says why."""
    path = config_dir / "governance.yaml"
    original = path.read_text()
    run = PaperProcess(tmp_path, "--bar-interval", "0.05", "--linger", "0", "--max-seconds", "300",
                       env={"CONFIG_DIR": str(config_dir)})
    try:
        run.wait_for_line("Фид sim зарегистрирован")
        assert run.sample("drawdown_critical_threshold_r") == 1.5
        _replace(path, "")
        line = run.wait_for_line("the file is empty")
        assert "Новая конфигурация governance отклонена (file change), работаю со старой: " in line
        assert f"{path}: the file is empty (no settings)" in line
        # a truncated file that would also have changed a threshold: nothing of it applies
        changed = original.replace("critical_max_dd_r: 1.5", "critical_max_dd_r: 0.7")
        _replace(path, changed[: changed.index("execution:")])
        line = run.wait_for_line("missing section(s)", timeout=30)
        assert "Новая конфигурация governance отклонена" in line
        assert f"{path}: missing section(s) execution, sla (the file looks truncated" in line
        bars = run.sample("bars_total", symbol="BTC/USDT")
        deadline = time.time() + 120
        while run.sample("bars_total", symbol="BTC/USDT") <= bars:  # still trading on the old config
            assert time.time() < deadline, "no new bar after the refused reload"
            time.sleep(0.1)
        assert run.sample("drawdown_critical_threshold_r") == 1.5
        run.interrupt()
        assert run.wait() == 0
    finally:
        run.kill()
    assert "Конфигурация governance применена" not in run.output


# ------------------------------------------------------------------ replay input
def test_replay_of_timestamps_in_seconds_converts_them_and_says_so(tmp_path: Path) -> None:
    """A candle file with epoch SECONDS replays as the right dates, with one info line naming the unit."""
    rows = synthetic_rows(300)
    data = write_csv(tmp_path / "BTCUSDT-1m.csv", [(r[0] // 1000, *r[1:]) for r in rows])
    result = _runner(tmp_path, "--feed", "replay", "--data", str(data))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{data}: timestamps of column ts_ms detected in seconds (300 rows); converted to milliseconds" in result.stdout
    assert _last_line(result).startswith("replay: bars=300 ")


def test_replay_file_whose_every_row_is_rejected_exits_2_naming_file_and_counts(tmp_path: Path) -> None:
    """A file with no usable bar ends the start with exit 2 and one line; no DB, no report is written."""
    rows = synthetic_rows(60)
    bad = [(r[0], float("nan"), *r[2:]) for r in rows[:50]] + [(r[0], r[1], r[3] * 0.5, *r[3:]) for r in rows[50:]]
    data = write_csv(tmp_path / "ETHUSDT-1m.csv", bad)
    result = _runner(tmp_path, "--feed", "replay", "--data", str(data))
    assert result.returncode == 2, result.stdout + result.stderr
    last = _last_line(result)
    assert f"feed error: replay: {data}: all 60 rows rejected (nan=50, high_below_low=10); no bar to replay: " in last
    assert not (tmp_path / "x.db").exists()
    assert not (tmp_path / "reports").exists()
