"""Configuration errors with one-line, actionable messages."""

from __future__ import annotations

from pydantic import ValidationError


class ConfigError(ValueError):
    """Bad configuration. The message is one line: file, field, value and what to do."""


# pydantic error types of number fields -> what the operator should write instead.
_NUMBER_TYPES = {"int_type": "a whole number", "float_type": "a number"}


def _field_path(loc: tuple[object, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "<root>"


# Settings whose value may hold a secret: an error names the field, never the value.
_SECRET_FIELDS = frozenset({"db_url", "exchange_api_key", "exchange_api_secret"})


def format_validation_error(source: str, exc: ValidationError) -> str:
    """Render every pydantic error as `source: field=value: problem` joined on one line."""
    items = []
    for err in exc.errors():
        loc = tuple(err.get("loc", ()))
        value = err.get("input")
        msg = err.get("msg", "invalid")
        kind = err.get("type")
        if kind == "extra_forbidden":
            msg = "unknown key (remove it or check its spelling)"
        elif kind == "missing":
            items.append(f"{_field_path(loc)} is required but missing")
            continue
        elif kind in _NUMBER_TYPES and isinstance(value, bool):
            msg = f"a boolean is not a number; write {_NUMBER_TYPES[kind]}"
        elif kind in _NUMBER_TYPES and isinstance(value, str):
            msg = f"text is not a number; write {_NUMBER_TYPES[kind]} without quotes (YAML reads 1e3 as text: write 1000)"
        elif kind == "int_type" and isinstance(value, float):
            msg = "must be a whole number (no decimal point)"
        elif kind == "finite_number":
            msg = "must be a finite number (.inf and .nan are refused)"
        elif kind == "tuple_type":
            msg = "expected a list, e.g. [a, b] or []"
        shown = repr(value) if not (loc and str(loc[-1]) in _SECRET_FIELDS) else "(value not shown)"
        if len(shown) > 60:
            shown = shown[:57] + "..."
        items.append(f"{_field_path(loc)}={shown}: {msg}")
    return f"{source}: invalid config: " + "; ".join(items)
