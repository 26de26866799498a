"""Loading and validating the YAML configuration files."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from prod_core.configs.errors import ConfigError, format_validation_error
from prod_core.configs.governance import EXPLICIT_SECTIONS, OPTIONAL_SECTIONS, GovernanceConfig
from prod_core.configs.symbols import SymbolsConfig

M = TypeVar("M", bound=BaseModel)


def default_config_dir() -> Path:
    """`CONFIG_DIR` if set, else ./configs (the runbook runs commands from the repo root)."""
    return Path(os.environ.get("CONFIG_DIR", "configs"))


def read_yaml(path: Path) -> dict:
    """The top-level mapping of a YAML config file, or a one-line ``ConfigError``.

    Refused: a missing file, invalid YAML, several documents, an empty or comments-only
    file, a top level that is not a mapping, and a key written twice in one mapping at
    any depth (plain YAML would keep the last one silently).
    """
    return _read_yaml(path)[0]


Lines = dict[tuple[str, ...], int]


def _read_yaml(path: Path) -> tuple[dict, Lines]:
    """``read_yaml`` plus the line of each top-level key and of each key one level below."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found; run from the repository root or set CONFIG_DIR") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    loader = yaml.SafeLoader(text)
    lines: Lines = {}
    try:
        node = loader.get_single_node()
        if node is None:
            what = "empty" if not text.strip() else "all comments"
            raise ConfigError(
                f"{path}: the file is {what} (no settings), so every setting would be a default; "
                "restore it from the repository copy or a backup"
            )
        _check_keys(node, path, (), lines, set())
        data = loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}:{where}: not valid YAML: {problem}") from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections, was {type(data).__name__}")
    return data, lines


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _check_keys(node: yaml.Node, path: Path, trail: tuple[str, ...], lines: Lines, seen: set[int]) -> None:
    """Refuse a key written twice in one mapping (any depth); record key lines of the top two levels."""
    if id(node) in seen:  # an alias points back to a node already checked
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[tuple[str, str], int] = {}
        for key, value in node.value:
            if key.tag == _MERGE_TAG:  # `<<: *anchor`: merged keys may be overridden by design
                _check_keys(value, path, trail, lines, seen)
                continue
            name = str(key.value) if isinstance(key, yaml.ScalarNode) else "<complex key>"
            line = key.start_mark.line + 1
            dotted = ".".join((*trail, name))
            if isinstance(key, yaml.ScalarNode):
                ident = (key.tag, key.value)
                if ident in first:
                    raise ConfigError(
                        f"{path}: line {line}: duplicate key {dotted} (first at line {first[ident]}); "
                        "YAML would silently keep only the last one: delete or merge one of them"
                    )
                first[ident] = line
            if len(trail) < 2:
                lines.setdefault((*trail, name), line)
            _check_keys(value, path, (*trail, name), lines, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_keys(item, path, (*trail[:-1], f"{trail[-1] if trail else ''}[{i}]"), lines, seen)


def require_keys(
    data: dict,
    lines: Lines,
    path: Path,
    model: type[BaseModel],
    explicit: Sequence[str] = (),
    optional: Sequence[str] = (),
) -> None:
    """Refuse a file that lacks a top-level section of ``model``, or a key of an ``explicit`` section.

    The models keep defaults (builders and tests use them); a config FILE must not
    silently fall back to them when it was truncated or a section was deleted.
    """
    missing = [name for name in model.model_fields if name not in data and name not in optional]
    if missing:
        raise ConfigError(
            f"{path}: missing section(s) {', '.join(missing)} (the file looks truncated or incomplete); "
            f"every section must be present: restore them from the repository copy of {path.name}"
        )
    for section in explicit:
        value = data[section]
        line = lines.get((section,), 0)
        sub = model.model_fields[section].annotation
        if value is None:
            raise ConfigError(
                f"{path}: line {line}: section {section} is empty; write out all of its keys "
                f"({', '.join(sub.model_fields)})"
            )
        if not isinstance(value, dict):
            continue  # the model reports the wrong type with the value
        absent = [key for key in sub.model_fields if key not in value]
        if absent:
            example = sub.model_fields[absent[0]].default
            shown = "null" if example is None else example
            raise ConfigError(
                f"{path}: line {line}: section {section} lacks key(s) {', '.join(absent)}; every key of "
                f"{', '.join(explicit)} must be written out, no silent defaults: add e.g. "
                f"`{absent[0]}: {shown}` (the built-in default)"
            )


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
        """Every section present and every key of ``EXPLICIT_SECTIONS`` written out."""
        path = self.governance_path
        data, lines = _read_yaml(path)
        require_keys(data, lines, path, GovernanceConfig, EXPLICIT_SECTIONS, OPTIONAL_SECTIONS)
        return parse_model(GovernanceConfig, data, str(path))

    def load_symbols(self) -> SymbolsConfig:
        """Every top-level section present (exchange, symbols, sim); keys inside may default."""
        path = self.symbols_path
        data, lines = _read_yaml(path)
        require_keys(data, lines, path, SymbolsConfig)
        return parse_model(SymbolsConfig, data, str(path))
