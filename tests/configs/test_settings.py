"""Settings precedence: flag > environment > .env > default."""

from __future__ import annotations

from pathlib import Path

import pytest

from prod_core.configs import ConfigError, load_settings


def test_defaults_without_env_file(tmp_path: Path) -> None:
    s = load_settings(environ={}, env_file=tmp_path / "missing.env")
    assert (s.mode, s.feed, s.execution, s.prometheus_port, s.db_path) == (
        "paper",
        "sim",
        "sim",
        9108,
        "storage/crupto.db",
    )


def test_env_file_overrides_default(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("# comment\nPROMETHEUS_PORT=9300\nexport DB_PATH='x/y.db'\n")
    s = load_settings(environ={}, env_file=env)
    assert s.prometheus_port == 9300
    assert s.db_path == "x/y.db"


def test_environment_overrides_env_file(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("PROMETHEUS_PORT=9300\n")
    s = load_settings(environ={"PROMETHEUS_PORT": "9400"}, env_file=env)
    assert s.prometheus_port == 9400


def test_flag_overrides_environment(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("FEED=ccxt\n")
    s = load_settings(flags={"feed": "replay", "prometheus_port": None}, environ={"FEED": "ccxt_ws"}, env_file=env)
    assert s.feed == "replay"


def test_non_paper_mode_is_refused_naming_the_source(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("MODE=live\n")
    with pytest.raises(ConfigError, match=r"\.env MODE: .*mode='live'.*only MODE=paper"):
        load_settings(environ={}, env_file=env)


def test_bad_port_names_variable_and_value(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"environment PROMETHEUS_PORT: .*prometheus_port='http'"):
        load_settings(environ={"PROMETHEUS_PORT": "http"}, env_file=tmp_path / "none")


def test_secrets_are_not_printed(tmp_path: Path) -> None:
    s = load_settings(environ={"EXCHANGE_API_SECRET": "hunter2"}, env_file=tmp_path / "none")
    assert "hunter2" not in repr(s)
    assert s.exchange_api_secret.get_secret_value() == "hunter2"


def test_env_line_without_equals_names_file_and_line_but_never_its_content(tmp_path: Path) -> None:
    """A secret pasted on a line of its own is not echoed: the message gives file, line and the fix."""
    env = tmp_path / ".env"
    env.write_text("MODE=paper\n# comment\nsk-live-VERYSECRETVALUE\n")
    with pytest.raises(ConfigError) as info:
        load_settings(environ={}, env_file=env)
    message = str(info.value)
    assert message.startswith(f"{env}: line 3: expected KEY=VALUE")
    assert "comment it out" in message
    assert "VERYSECRET" not in message and "sk-live" not in message
    assert "\n" not in message


def test_env_line_with_nothing_before_equals_is_refused_without_content(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("=hunter2hunter2\n")
    with pytest.raises(ConfigError, match=r"line 1: nothing before '='") as info:
        load_settings(environ={}, env_file=env)
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "NaN", "Infinity"])
def test_non_finite_numbers_from_environment_are_refused(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match=r"environment EXPORTER_LINGER_S: .*must be a finite number"):
        load_settings(environ={"EXPORTER_LINGER_S": value}, env_file=tmp_path / "none")
    with pytest.raises(ConfigError, match=r"environment SIM_BAR_INTERVAL_S: .*must be a finite number"):
        load_settings(environ={"SIM_BAR_INTERVAL_S": value}, env_file=tmp_path / "none")


def test_environment_strings_still_coerce_to_numbers(tmp_path: Path) -> None:
    """Environment values are strings by nature: "9108" is the port 9108, "2.5" seconds 2.5."""
    env = tmp_path / ".env"
    env.write_text("PROMETHEUS_PORT=9108\nEXPORTER_LINGER_S=2.5\n")
    s = load_settings(environ={"SIM_BAR_INTERVAL_S": "0.5"}, env_file=env)
    assert (s.prometheus_port, s.exporter_linger_s, s.sim_bar_interval_s) == (9108, 2.5, 0.5)


@pytest.mark.parametrize("value", ["Fund", "-a", "a b", "a" * 33, "replay", "replay-1", "", "paper/x"])
def test_bad_account_names_the_variable_and_value(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(environ={"ACCOUNT": value}, env_file=tmp_path / "none")
    assert "ACCOUNT" in str(exc.value) and repr(value) in str(exc.value)


def test_account_defaults_to_paper_and_accepts_a_name(tmp_path: Path) -> None:
    assert load_settings(environ={}, env_file=tmp_path / "none").account == "paper"
    assert load_settings(environ={"ACCOUNT": "fund-a.2"}, env_file=tmp_path / "none").account == "fund-a.2"
