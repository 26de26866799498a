"""Base model for configuration sections: frozen, unknown keys refused, strict types.

YAML configs are typed by their syntax, so sections validate strictly: a number field
refuses a boolean (``max_trades: true`` is not 1), a quoted string (``"0.5"``) and a
float where an integer is meant; every number must be finite (``.inf`` / ``.nan`` are
refused). Sequences are the exception (YAML gives lists; fields of tuples accept them
with ``Field(strict=False)``). Settings read from the environment are strings by nature
and opt out of strict mode (see ``prod_core.configs.settings``), keeping finite numbers.
"""

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True, strict=True, allow_inf_nan=False)
