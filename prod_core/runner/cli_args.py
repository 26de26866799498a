"""Command-line arguments of the runner."""

from __future__ import annotations

import argparse

from prod_core.configs.symbols import SCENARIOS


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m prod_core.runner",
        description="crupto paper loop: feed -> regime -> strategy -> risk -> portfolio -> execution -> storage -> telemetry",
    )
    p.add_argument("--max-seconds", type=positive_float, default=None, help="stop cleanly after this many seconds")
    p.add_argument("--feed", choices=["sim", "replay", "ccxt", "ccxt_ws"], default=None, help="market data source (env FEED)")
    p.add_argument("--scenario", choices=SCENARIOS, default=None, help="sim stress scenario")
    p.add_argument("--seed", type=int, default=None, help="sim random seed")
    p.add_argument("--run-id", default=None, help="run identifier (default: UTC time + random suffix)")
    p.add_argument("--port", type=int, default=None, help="Prometheus exporter port (env PROMETHEUS_PORT)")
    p.add_argument("--db", default=None, help="SQLite path (env DB_PATH)")
    p.add_argument("--config-dir", default=None, help="directory of governance.yaml and symbols.yaml (env CONFIG_DIR)")
    p.add_argument("--bar-interval", type=positive_float, default=None, help="sim: wall seconds between bars")
    p.add_argument("--data", nargs="+", default=None, metavar="PATH",
                   help="replay: candle files (CSV/Parquet/Binance dumps), PATH or SYMBOL=PATH")
    p.add_argument("--speed", default=None, help="replay pace: max (default), realtime or Nx (e.g. 10x)")
    p.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], default=None)
    p.add_argument("--linger", type=float, default=None, help="seconds the exporter serves the final state after a stop")
    return p
