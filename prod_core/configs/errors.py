"""Configuration errors with one-line, actionable messages."""

from __future__ import annotations

from pydantic import ValidationError


class ConfigError(ValueError):
    """Bad configuration. The message is one line: file, field, value and what to do."""


def _field_path(loc: tuple[object, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "<root>"


def format_validation_error(source: str, exc: ValidationError) -> str:
    """Render every pydantic error as `source: field=value: problem` joined on one line."""
    items = []
    for err in exc.errors():
        loc = tuple(err.get("loc", ()))
        value = err.get("input")
        msg = err.get("msg", "invalid")
        if err.get("type") == "extra_forbidden":
            msg = "unknown key (remove it or check its spelling)"
        elif err.get("type") == "missing":
            items.append(f"{_field_path(loc)} is required but missing")
            continue
        shown = repr(value)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        items.append(f"{_field_path(loc)}={shown}: {msg}")
    return f"{source}: invalid config: " + "; ".join(items)
