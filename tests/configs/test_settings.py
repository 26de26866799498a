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
