"""ConfigLoader: shipped configs load; broken ones fail with file, field and value."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from prod_core.strategies import build_kinds

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


# ------------------------------------------------------------ bad files and types
def _write(config_dir: Path, text: str, name: str = "governance.yaml") -> Path:
    path = config_dir / name
    path.write_text(text)
    return path


def _shipped(config_dir: Path, name: str = "governance.yaml") -> str:
    return (config_dir / name).read_text()


def _refused(config_dir: Path, pattern: str, name: str = "governance.yaml") -> str:
    loader = ConfigLoader(config_dir)
    load = loader.load_governance if name == "governance.yaml" else loader.load_symbols
    with pytest.raises(ConfigError, match=pattern) as info:
        load()
    message = str(info.value)
    assert message.startswith(str(config_dir / name)), message
    assert "\n" not in message
    return message


def test_duplicate_top_level_section_is_refused_naming_line_and_key(config_dir: Path) -> None:
    """A second `risk:` section (which YAML would silently let win) is refused with both lines."""
    _write(config_dir, _shipped(config_dir) + "\nrisk:\n  risk_per_trade_pct: 5.0\n")
    _refused(config_dir, r": line \d+: duplicate key risk \(first at line 8\); .*delete or merge one")


def test_duplicate_key_inside_a_section_is_refused(config_dir: Path) -> None:
    """A key written twice inside a section names the dotted key and both lines."""
    text = _shipped(config_dir).replace("  max_trades: 30", "  max_trades: 30\n  max_trades: 300")
    _write(config_dir, text)
    _refused(config_dir, r": line 16: duplicate key daily_lock\.max_trades \(first at line 15\)")


def test_duplicate_key_in_a_list_item_of_symbols_is_refused(config_dir: Path) -> None:
    """Duplicates are found at any depth, list items included."""
    text = _shipped(config_dir, "symbols.yaml").replace("    kind: spot\n", "    kind: spot\n    kind: perp\n", 1)
    _write(config_dir, text, "symbols.yaml")
    _refused(config_dir, r"duplicate key symbols\[3\]\.kind", "symbols.yaml")


@pytest.mark.parametrize(
    ("text", "what"),
    [("", "empty"), ("  \n\n", "empty"), ("# all commented out\n# risk:\n#   risk_per_trade_pct: 0.5\n", "all comments")],
)
@pytest.mark.parametrize("name", ["governance.yaml", "symbols.yaml"])
def test_empty_or_comments_only_file_is_refused(config_dir: Path, name: str, text: str, what: str) -> None:
    """An empty or comments-only file would make every setting a default: refused."""
    _write(config_dir, text, name)
    _refused(config_dir, rf": the file is {what} \(no settings\).*restore it", name)


def test_truncated_governance_missing_sections_is_refused(config_dir: Path) -> None:
    """A file cut before `portfolio:` lists every missing section and says it looks truncated."""
    text = _shipped(config_dir)
    _write(config_dir, text[: text.index("portfolio:")])
    _refused(config_dir, r": missing section\(s\) portfolio, enable_map, safe_mode_enable_map, strategies, execution, sla "
                         r"\(the file looks truncated")


def test_truncated_symbols_missing_section_is_refused(config_dir: Path) -> None:
    text = _shipped(config_dir, "symbols.yaml")
    _write(config_dir, text[: text.index("\nsim:")], "symbols.yaml")
    _refused(config_dir, r": missing section\(s\) sim \(the file looks truncated", "symbols.yaml")


@pytest.mark.parametrize("section", ["account", "risk", "daily_lock", "drawdown", "kill_switch", "portfolio", "execution"])
def test_every_key_of_a_governance_critical_section_must_be_written(config_dir: Path, section: str) -> None:
    """Deleting the last key of a critical section (a file cut mid-section) is refused, not defaulted."""
    path = config_dir / "governance.yaml"
    data = yaml.safe_load(path.read_text())
    key = list(data[section])[-1]
    del data[section][key]
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    _refused(config_dir, rf": line \d+: section {section} lacks key\(s\) {key}; .*no silent defaults: add e\.g\. `{key}: ")


def test_empty_governance_section_is_refused(config_dir: Path) -> None:
    text = _shipped(config_dir).replace("kill_switch:\n  auto_at_max_dd_r: null", "kill_switch:")
    _write(config_dir, text)
    _refused(config_dir, r": line \d+: section kill_switch is empty; write out all of its keys \(auto_at_max_dd_r\)")


def test_keys_of_non_critical_sections_may_default(config_dir: Path) -> None:
    """Enable maps, strategies and sla must be present, but keys inside them may fall back (documented choice)."""
    path = config_dir / "governance.yaml"
    data = yaml.safe_load(path.read_text())
    del data["enable_map"]["volatile"]
    del data["strategies"]["trend_following"]["stop_atr"]
    path.write_text(yaml.safe_dump(data))
    gov = ConfigLoader(config_dir).load_governance()
    assert gov.enable_map.volatile == ()  # no strategy in that regime: the safe direction
    assert build_kinds(gov.strategies)["trend_following"].params.stop_atr == 2.0


@pytest.mark.parametrize(
    ("old", "new", "pattern"),
    [
        ("max_trades: 30", "max_trades: true", r"daily_lock\.max_trades=True: a boolean is not a number"),
        ("max_daily_loss_r: 3.0", "max_daily_loss_r: yes", r"daily_lock\.max_daily_loss_r=True: a boolean is not a number"),
        ("max_daily_loss_r: 3.0", "max_daily_loss_r: .inf", r"daily_lock\.max_daily_loss_r=inf: must be a finite number"),
        ("max_daily_loss_r: 3.0", "max_daily_loss_r: -.inf", r"daily_lock\.max_daily_loss_r=-inf: must be a finite number"),
        ("max_daily_loss_r: 3.0", "max_daily_loss_r: .nan", r"daily_lock\.max_daily_loss_r=nan: must be a finite number"),
        ("risk_per_trade_pct: 0.5", 'risk_per_trade_pct: "0.5"', r"risk\.risk_per_trade_pct='0\.5': text is not a number"),
        ("max_trades: 30", "max_trades: '30'", r"daily_lock\.max_trades='30': text is not a number"),
        ("max_daily_loss_r: 3.0", "max_daily_loss_r: 3e0", r"daily_lock\.max_daily_loss_r='3e0': text is not a number"),
        ("max_trades: 30", "max_trades: 30.0", r"daily_lock\.max_trades=30\.0: must be a whole number"),
        ("calm: [mean_reversion]", "calm: mean_reversion", r"enable_map\.calm='mean_reversion': expected a list"),
    ],
)
def test_wrong_types_are_refused_not_coerced(config_dir: Path, old: str, new: str, pattern: str) -> None:
    """No bool-as-number, no non-finite number, no number-looking string where a number is expected."""
    text = _shipped(config_dir)
    assert old in text
    _write(config_dir, text.replace(old, new, 1))
    _refused(config_dir, pattern)


@pytest.mark.parametrize(
    ("old", "new", "pattern"),
    [
        ("seed: 42", "seed: true", r"sim\.seed=True: a boolean is not a number"),
        ("seed: 42", "seed: -1", r"sim\.seed=-1"),
        ("seed: 42", f"seed: {2**63}", r"sim\.seed=9223372036854775808"),
        ("start_price: 150.0", "start_price: .inf", r"symbols\[2\]\.sim\.start_price=inf: must be a finite number"),
        ("bar_interval_s: 0.25", "bar_interval_s: '0.25'", r"sim\.bar_interval_s='0\.25': text is not a number"),
    ],
)
def test_wrong_types_in_symbols_are_refused(config_dir: Path, old: str, new: str, pattern: str) -> None:
    text = _shipped(config_dir, "symbols.yaml")
    assert old in text
    _write(config_dir, text.replace(old, new, 1), "symbols.yaml")
    _refused(config_dir, pattern, "symbols.yaml")


def test_yaml_tags_that_build_objects_are_refused(config_dir: Path) -> None:
    _write(config_dir, _shipped(config_dir).replace("max_trades: 30", "max_trades: !!python/object:os.system 1"))
    _refused(config_dir, r": line \d+ column \d+: not valid YAML")


def test_models_keep_their_defaults_for_builders() -> None:
    """Only FILES must be complete: code may still build configs from defaults."""
    from prod_core.configs.governance import GovernanceConfig

    assert GovernanceConfig().daily_lock.max_trades == 30


def test_firm_gross_cap_defaults_off_and_must_be_positive(repo_root: Path, config_dir: Path) -> None:
    """portfolio.firm_max_gross_exposure_usd: null (off) in the shipped and scenario configs; > 0 when set."""
    assert ConfigLoader(repo_root / "configs").load_governance().portfolio.firm_max_gross_exposure_usd is None
    scenario = ConfigLoader(repo_root / "configs" / "scenarios" / "sma_parity").load_governance()
    assert scenario.portfolio.firm_max_gross_exposure_usd is None
    _edit(config_dir, "portfolio", "firm_max_gross_exposure_usd", 250_000)
    assert ConfigLoader(config_dir).load_governance().portfolio.firm_max_gross_exposure_usd == 250_000.0
    for bad in (0, -5, "lots"):
        _edit(config_dir, "portfolio", "firm_max_gross_exposure_usd", bad)
        with pytest.raises(ConfigError, match=rf"portfolio\.firm_max_gross_exposure_usd={bad!r}"):
            ConfigLoader(config_dir).load_governance()
