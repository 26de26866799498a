"""Loading and validating the YAML configuration files."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from prod_core.configs.errors import ConfigError, format_validation_error
from prod_core.configs.governance import GovernanceConfig
from prod_core.configs.symbols import SymbolsConfig

M = TypeVar("M", bound=BaseModel)


def default_config_dir() -> Path:
    """`CONFIG_DIR` if set, else ./configs (the runbook runs commands from the repo root)."""
    return Path(os.environ.get("CONFIG_DIR", "configs"))


def read_yaml(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found; run from the repository root or set CONFIG_DIR") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}:{where}: not valid YAML: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections, was {type(data).__name__}")
    return data


def parse_model(model: type[M], data: dict, source: str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(source, exc)) from None


def config_hash(*models: BaseModel) -> str:
    """A short stable fingerprint of validated configs (stored with each run)."""
    digest = hashlib.sha256()
    for m in models:
        digest.update(m.model_dump_json().encode())
    return digest.hexdigest()[:16]


class ConfigLoader:
    """Reads `governance.yaml` and `symbols.yaml` from a config directory."""

    def __init__(self, config_dir: str | Path | None = None) -> None:
        self.config_dir = Path(config_dir) if config_dir is not None else default_config_dir()

    @property
    def governance_path(self) -> Path:
        return self.config_dir / "governance.yaml"

    @property
    def symbols_path(self) -> Path:
        return self.config_dir / "symbols.yaml"

    def load_governance(self) -> GovernanceConfig:
        path = self.governance_path
        return parse_model(GovernanceConfig, read_yaml(path), str(path))

    def load_symbols(self) -> SymbolsConfig:
        path = self.symbols_path
        return parse_model(SymbolsConfig, read_yaml(path), str(path))
