"""Process settings with the precedence flag > environment variable > `.env` > default.

Scripts never `source` `.env`: the process reads it here, so an exported variable
always wins over the file. Secrets are `SecretStr` and never printed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import ConfigDict, Field, SecretStr, ValidationError, field_validator

from prod_core.configs.base import Section
from prod_core.configs.errors import ConfigError, format_validation_error

# Environment variable -> settings field.
ENV_KEYS: dict[str, str] = {
    "MODE": "mode",
    "FEED": "feed",
    "EXECUTION": "execution",
    "PROMETHEUS_PORT": "prometheus_port",
    "PROMETHEUS_BIND": "prometheus_bind",
    "DB_PATH": "db_path",
    "DB_URL": "db_url",
    "LOG_LEVEL": "log_level",
    "EXCHANGE_API_KEY": "exchange_api_key",
    "EXCHANGE_API_SECRET": "exchange_api_secret",
    "CONFIG_DIR": "config_dir",
    "REPORTS_DIR": "reports_dir",
    "LOGS_DIR": "logs_dir",
    "EXPORTER_LINGER_S": "exporter_linger_s",
    "SIM_BAR_INTERVAL_S": "sim_bar_interval_s",
    "ALERT_TEST_FEED_HEALTH": "alert_test_feed_health",
    "ALERT_TEST_DAILY_LOCK": "alert_test_daily_lock",
    "ALERT_TEST_SAFE_MODE": "alert_test_safe_mode",
    "ACCOUNT": "account",
    "PROMETHEUS_SD_DIR": "prometheus_sd_dir",
    "PROMETHEUS_SD_HOST": "prometheus_sd_host",
}

# An account name: what runs, leases, journal rows, commands and metrics are keyed by, and the
# name of the runner's Prometheus file_sd file. ``replay...`` is reserved for replays
# (``replay:<run_id>``), so a paper account can never be mistaken for one.
ACCOUNT_PATTERN = re.compile(r"[a-z0-9][a-z0-9_.-]{0,31}")


def check_account(value: str) -> str:
    """``value`` if it is a valid paper account name, else ValueError saying what is allowed."""
    if not isinstance(value, str) or not ACCOUNT_PATTERN.fullmatch(value):
        raise ValueError(f"account name {value!r} is not valid: use 1-32 characters a-z, 0-9, '_', '.', '-', "
                         "starting with a letter or digit (e.g. paper, fund-a)")
    if value.startswith("replay"):
        raise ValueError(f"account name {value!r} is reserved: names starting with 'replay' are the replays' own "
                         "accounts (replay:<run_id>)")
    return value


class Settings(Section):
    # Environment values are strings: "9108" must become 9108 (lax), but a number must
    # still be finite (allow_inf_nan=False is inherited from Section).
    model_config = ConfigDict(strict=False)

    mode: str = Field("paper", description="Only `paper` exists; anything else is refused.")
    feed: Literal["sim", "replay", "ccxt", "ccxt_ws"] = Field("sim", description="Market data source.")
    execution: Literal["sim", "sandbox"] = Field("sim", description="Paper fill simulator or exchange sandbox.")
    prometheus_port: int = Field(9108, ge=0, le=65535, description="Exporter port (0 picks a free one).")
    prometheus_bind: str = Field("127.0.0.1", description="Exporter bind address.")
    db_path: str = Field("storage/crupto.db", min_length=1, description="SQLite database path.")
    db_url: SecretStr = Field(SecretStr(""), description="postgresql://user:password@host:port/db selects "
                              "PostgreSQL (wins over DB_PATH; the password is never printed).")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")
    exchange_api_key: SecretStr = Field(SecretStr(""), description="Sandbox API key (never logged).")
    exchange_api_secret: SecretStr = Field(SecretStr(""), description="Sandbox API secret (never logged).")
    config_dir: str = Field("configs", description="Directory of governance.yaml and symbols.yaml.")
    reports_dir: str = Field("reports", description="Reports root.")
    logs_dir: str = Field("logs", description="Per-run log files.")
    exporter_linger_s: float = Field(10.0, ge=0, le=600, description="Seconds the exporter serves the final state after a stop.")
    sim_bar_interval_s: float | None = Field(None, gt=0, le=3600, description="Override of sim.bar_interval_s.")
    alert_test_feed_health: Literal["bad", "good"] | None = Field(None, description="ALERT_TEST_FEED_HEALTH overlay.")
    alert_test_daily_lock: Literal["max_daily_loss", "max_trades", "max_consecutive_losses", "manual"] | None = Field(
        None, description="ALERT_TEST_DAILY_LOCK overlay."
    )
    alert_test_safe_mode: Literal["on", "off"] | None = Field(None, description="ALERT_TEST_SAFE_MODE overlay.")
    account: str = Field("paper", description="The paper account this runner trades (one runner per account).")
    prometheus_sd_dir: str = Field("run/prometheus_sd", description="Directory of the runners' Prometheus file_sd "
                                   "files (<account>.json); empty: none written.")
    prometheus_sd_host: str = Field("localhost", min_length=1, description="Host name Prometheus reaches the "
                                    "exporter at (the file_sd target).")

    @field_validator("mode")
    @classmethod
    def _paper_only(cls, value: str) -> str:
        if value != "paper":
            raise ValueError(f"only MODE=paper is supported (was {value!r}); this build never trades real money")
        return value

    @field_validator("account")
    @classmethod
    def _account(cls, value: str) -> str:
        return check_account(value)

    @field_validator("db_url")
    @classmethod
    def _postgres_url(cls, value: SecretStr) -> SecretStr:
        raw = value.get_secret_value().strip()
        if raw and not raw.lower().startswith(("postgresql://", "postgres://")):
            # never echo the value: it may hold a password
            raise ValueError("DB_URL must be a postgresql://user:password@host:port/database URL (value not shown); "
                             "for SQLite set DB_PATH instead and leave DB_URL empty")
        return SecretStr(raw)

    def database(self, flag: str | None = None) -> str:
        """What ``Storage`` opens: the ``--db`` flag, else DB_URL (PostgreSQL) when set, else DB_PATH (SQLite)."""
        return flag or self.db_url.get_secret_value() or self.db_path

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("alert_test_feed_health", "alert_test_daily_lock", "alert_test_safe_mode", "sim_bar_interval_s", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value


def parse_env_file(path: Path) -> dict[str, str]:
    """Parse KEY=VALUE lines (comments, blank lines, `export ` prefixes and quotes allowed)."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text; save it as UTF-8 (KEY=VALUE lines)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror}); fix its permissions or set ENV_FILE") from None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].strip()
        if "=" not in line:
            # never echo the line: it may be a secret pasted on a line of its own
            raise ConfigError(
                f"{path}: line {number}: expected KEY=VALUE (content not shown: it may hold a secret); "
                "fix the line, prefix it with # to comment it out, or delete it"
            )
        key, value = line.split("=", 1)
        if not key.strip():
            raise ConfigError(
                f"{path}: line {number}: nothing before '=' (content not shown: it may hold a secret); "
                "write KEY=VALUE, prefix it with # to comment it out, or delete it"
            )
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def load_settings(
    flags: Mapping[str, object] | None = None,
    environ: Mapping[str, str] | None = None,
    env_file: str | Path | None = None,
) -> Settings:
    """Resolve settings: `flags` (field names, None = not given) > `environ` > env file > default."""
    environ = os.environ if environ is None else environ
    env_path = Path(env_file if env_file is not None else environ.get("ENV_FILE", ".env"))
    merged: dict[str, object] = {}
    sources: dict[str, str] = {}
    for key, value in parse_env_file(env_path).items():
        if key in ENV_KEYS:
            merged[ENV_KEYS[key]] = value
            sources[ENV_KEYS[key]] = f"{env_path} {key}"
    for key, field in ENV_KEYS.items():
        if key in environ:
            merged[field] = environ[key]
            sources[field] = f"environment {key}"
    for field, value in (flags or {}).items():
        if value is not None:
            merged[field] = value
            sources[field] = f"flag --{field.replace('_', '-')}"
    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first.get("loc") else ""
        origin = sources.get(field, "settings")
        raise ConfigError(format_validation_error(origin, exc)) from None
