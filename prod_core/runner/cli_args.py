"""Command-line arguments of the runner.

Every value is checked here, so that a bad flag ends with argparse's usage line and
one error line (exit 2) before anything is opened or written.
"""

from __future__ import annotations

import argparse
import math
import re

from prod_core.configs.symbols import SCENARIOS, SEED_MAX

# A run id names files (logs/<run_id>.log, reports/run_<run_id>/): no separators, no
# leading dot or dash, so it can never point outside those folders or look like a flag.
RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")


def _finite(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """Seconds > 0 (finite)."""
    value = _finite(text, "a number of seconds")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """Seconds >= 0 (finite)."""
    value = _finite(text, "a number of seconds")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 (0 = no linger), got {text!r}")
    return value


def seed(text: str) -> int:
    """A sim seed: a whole number in 0 .. 2**63-1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"must be in 0..{SEED_MAX} (a non-negative 64-bit integer), got {text!r}")
    return value


def port(text: str) -> int:
    """A TCP port 0..65535 (0 picks a free one)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be in 0..65535 (0 picks a free port), got {text!r}")
    return value


def run_id(text: str) -> str:
    """Letters, digits, '.', '_' and '-'; not starting with '.' or '-'; at most 64 characters."""
    if not RUN_ID_PATTERN.fullmatch(text):
        shown = text if len(text) <= 80 else text[:77] + "..."
        raise argparse.ArgumentTypeError(
            f"{shown!r} is not a safe run id: use 1-64 letters, digits, '.', '_' or '-', "
            "not starting with '.' or '-' (e.g. paper-2025-03-01)"
        )
    return text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m prod_core.runner",
        description="crupto paper loop: feed -> regime -> strategy -> risk -> portfolio -> execution -> storage -> telemetry",
    )
    p.add_argument("--max-seconds", type=positive_float, default=None, help="stop cleanly after this many seconds")
    p.add_argument("--feed", choices=["sim", "replay", "ccxt", "ccxt_ws"], default=None, help="market data source (env FEED)")
    p.add_argument("--scenario", choices=SCENARIOS, default=None, help="sim stress scenario")
    p.add_argument("--seed", type=seed, default=None, help="sim random seed (0..2**63-1)")
    p.add_argument("--run-id", type=run_id, default=None,
                   help="run identifier: letters, digits, '.', '_', '-', max 64 (default: UTC time + random suffix)")
    p.add_argument("--port", type=port, default=None, help="Prometheus exporter port 0..65535, 0 = any free (env PROMETHEUS_PORT)")
    p.add_argument("--db", default=None, help="SQLite path or postgresql:// URL (env DB_URL, else DB_PATH)")
    p.add_argument("--config-dir", default=None, help="directory of governance.yaml and symbols.yaml (env CONFIG_DIR)")
    p.add_argument("--bar-interval", type=positive_float, default=None, help="sim: wall seconds between bars")
    p.add_argument("--data", nargs="+", default=None, metavar="PATH",
                   help="replay: candle files (CSV/Parquet/Binance dumps), PATH or SYMBOL=PATH")
    p.add_argument("--speed", default=None, help="replay pace: max (default), realtime or Nx (e.g. 10x)")
    p.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], default=None)
    p.add_argument("--linger", type=non_negative_float, default=None,
                   help="seconds the exporter serves the final state after a stop (>= 0)")
    return p
