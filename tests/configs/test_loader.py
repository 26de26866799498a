"""ConfigLoader: shipped configs load; broken ones fail with file, field and value."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from prod_core.configs import ConfigError, ConfigLoader

RUNBOOK_STEP_2 = (
    "from prod_core.configs import ConfigLoader; ConfigLoader().load_governance(); ConfigLoader().load_symbols()"
)


def test_shipped_configs_load_with_sensible_defaults(repo_root: Path) -> None:
    loader = ConfigLoader(repo_root / "configs")
    gov = loader.load_governance()
    sym = loader.load_symbols()
    assert 0 < gov.risk.risk_per_trade_pct <= 2
    assert gov.drawdown.no_entries_at_r == -1.8
    assert gov.drawdown.critical_max_dd_r == 1.5
    assert 4 <= len(sym.symbols) <= 6
    assert all(s.symbol.endswith("/USDT") for s in sym.symbols)


def _edit(config_dir: Path, section: str, key: str, value: object) -> None:
    path = config_dir / "governance.yaml"
    data = yaml.safe_load(path.read_text())
    data[section][key] = value
    path.write_text(yaml.safe_dump(data))


@pytest.mark.parametrize(
    ("section", "key", "value", "pattern"),
    [
        ("risk", "risk_per_trade_pct", "lots", r"risk\.risk_per_trade_pct='lots'"),
        ("risk", "risk_per_trade_pct", -1, r"risk\.risk_per_trade_pct=-1: Input should be greater than 0"),
        ("daily_lock", "max_trades", -3, r"daily_lock\.max_trades=-3"),
        ("risk", "risk_per_trade_pc", 0.5, r"risk\.risk_per_trade_pc=0\.5: unknown key"),
        ("portfolio", "max_open_positions", 2.5, r"portfolio\.max_open_positions=2\.5"),
    ],
)
def test_broken_governance_names_file_field_and_value(
    config_dir: Path, section: str, key: str, value: object, pattern: str
) -> None:
    _edit(config_dir, section, key, value)
    with pytest.raises(ConfigError, match=pattern) as info:
        ConfigLoader(config_dir).load_governance()
    assert str(config_dir / "governance.yaml") in str(info.value)
    assert "\n" not in str(info.value)


def test_cross_field_rule_drawdown_ladder_order(config_dir: Path) -> None:
    _edit(config_dir, "drawdown", "no_entries_at_r", -0.5)
    with pytest.raises(ConfigError, match=r"no_entries_at_r \(-0\.5\) must be below throttle_at_r"):
        ConfigLoader(config_dir).load_governance()


def test_unknown_strategy_in_enable_map_is_refused(config_dir: Path) -> None:
    _edit(config_dir, "enable_map", "calm", ["moon_shot"])
    with pytest.raises(ConfigError, match=r"unknown strategy 'moon_shot'"):
        ConfigLoader(config_dir).load_governance()


def test_yaml_syntax_error_names_line(config_dir: Path) -> None:
    (config_dir / "symbols.yaml").write_text("symbols: [\n  - {symbol: BTC/USDT\n")
    with pytest.raises(ConfigError, match=r"symbols\.yaml:.* line \d+"):
        ConfigLoader(config_dir).load_symbols()


def test_duplicate_symbol_is_refused(config_dir: Path) -> None:
    path = config_dir / "symbols.yaml"
    data = yaml.safe_load(path.read_text())
    data["symbols"].append(dict(data["symbols"][0]))
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"BTC/USDT is listed twice"):
        ConfigLoader(config_dir).load_symbols()


def _runbook_step_2(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", RUNBOOK_STEP_2], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def test_runbook_step_2_passes_verbatim_on_shipped_configs(repo_root: Path) -> None:
    result = _runbook_step_2(repo_root)
    assert result.returncode == 0, result.stderr


def test_runbook_step_2_fails_with_last_line_naming_file_field_value(config_dir: Path) -> None:
    _edit(config_dir, "daily_lock", "max_daily_loss_r", -2)
    result = _runbook_step_2(config_dir.parent)
    assert result.returncode != 0
    last = (result.stdout + result.stderr).strip().splitlines()[-1]
    assert "configs/governance.yaml" in last
    assert "daily_lock.max_daily_loss_r=-2" in last
