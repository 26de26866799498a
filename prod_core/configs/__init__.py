"""Configuration: governance and symbols YAML files validated by pydantic, and settings.

``ConfigLoader().load_governance()`` / ``.load_symbols()`` read ``configs/*.yaml``;
``load_settings()`` resolves flag > environment > ``.env`` > default. Every error is a
``ConfigError`` whose one-line message names the file, the field and the bad value.
"""

from prod_core.configs.errors import ConfigError
from prod_core.configs.governance import GovernanceConfig
from prod_core.configs.loader import ConfigLoader, config_hash
from prod_core.configs.settings import Settings, load_settings
from prod_core.configs.symbols import SymbolsConfig

__all__ = [
    "ConfigError",
    "ConfigLoader",
    "GovernanceConfig",
    "Settings",
    "SymbolsConfig",
    "config_hash",
    "load_settings",
]
