"""Dispatcher of the operator CLI."""

from __future__ import annotations

import argparse
import sys

from prod_core.cli import fetch_history, migrate_db, operator, reconcile, report, status, sweep
from prod_core.configs import ConfigError
from prod_core.storage import StorageError

COMMANDS = (status, reconcile, fetch_history, report, sweep, migrate_db)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m prod_core.cli", description="crupto operator commands")
    parser.add_argument("--db", default=None, help="SQLite path or postgresql:// URL (default: DB_URL, else DB_PATH from env/.env, "
                        "else storage/crupto.db)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.add_parser(sub)
    operator.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ConfigError, StorageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
