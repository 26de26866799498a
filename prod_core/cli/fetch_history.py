"""`python -m prod_core.cli fetch-history`: download closed candles for replay."""

from __future__ import annotations

import argparse
import sys

from prod_core.feeds.history import (
    HistoryError,
    fetch_funding_history,
    fetch_history,
    funding_path,
    is_perp_symbol,
    parse_time,
    terminal_progress,
)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "fetch-history",
        help="download closed candles (paginated, resumable) into CSV/Parquet for --feed replay",
        description="Download closed candles from an exchange (public API) into a CSV or Parquet file that "
                    "`--feed replay --data FILE` reads. Re-running with the same --out resumes after its last bar.",
    )
    p.add_argument("--exchange", default="binance", help="ccxt exchange id (default binance)")
    p.add_argument("--symbol", required=True, help="unified symbol, e.g. BTC/USDT (spot) or BTC/USDT:USDT (perp)")
    p.add_argument("--timeframe", default="1m", help="candle timeframe, e.g. 1m, 5m, 1h (default 1m)")
    p.add_argument("--since", required=True, help="start (UTC): 2025-03-01, 2025-03-01T12:00:00Z or epoch ms")
    p.add_argument("--until", default=None, help="end, exclusive (default: now)")
    p.add_argument("--out", required=True, help="output file (.csv or .parquet)")
    p.add_argument("--limit", type=int, default=1000, help="bars per request (default 1000)")
    p.add_argument("--api-url", default=None, help="override the exchange API base URL (proxy, mirror, tests)")
    p.add_argument("--sandbox", action="store_true", help="use the exchange testnet")
    p.add_argument("--funding", action="store_true",
                   help="also download the perp's settled funding rates over the same span into the side file "
                        "X.funding.csv next to --out X.csv/X.parquet (timestamp,funding_rate; resumable)")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    try:
        since = parse_time(args.since)
        until = parse_time(args.until) if args.until else None
    except ValueError as exc:
        print(f"fetch-history: {exc}", file=sys.stderr)
        return 2
    if args.limit < 1:
        print("fetch-history: --limit must be >= 1", file=sys.stderr)
        return 2
    funding = getattr(args, "funding", False)
    if funding and not is_perp_symbol(args.symbol):
        print(f"fetch-history: --funding needs a perpetual symbol like {args.symbol}:USDT; {args.symbol} is spot "
              "and has no funding", file=sys.stderr)
        return 2
    bar = terminal_progress()  # None unless stderr is a terminal: piped output gets no bar at all
    try:
        result = fetch_history(
            args.exchange, args.symbol, args.timeframe, since, until, args.out,
            api_url=args.api_url, sandbox=args.sandbox, limit=args.limit, progress=bar,
        )
    except (HistoryError, ValueError) as exc:
        print(f"fetch-history: {exc}", file=sys.stderr)
        return 1
    finally:
        if bar is not None:
            bar.close()  # ends the bar's line before any message (an error, Ctrl+C)
    resumed = f" (resumed after {result.resumed_from})" if result.resumed_from is not None else ""
    print(f"fetch-history: {result.path}: wrote {result.written} bars{resumed}, {result.total} in file, "
          f"{result.requests} requests")
    if funding:
        try:
            fr = fetch_funding_history(args.exchange, args.symbol, since, until, funding_path(args.out),
                                       api_url=args.api_url, sandbox=args.sandbox)
        except (HistoryError, ValueError) as exc:
            print(f"fetch-history: {exc}", file=sys.stderr)
            return 1
        resumed = f" (resumed after {fr.resumed_from})" if fr.resumed_from is not None else ""
        print(f"fetch-history: {fr.path}: wrote {fr.written} funding rates{resumed}, {fr.total} in file, "
              f"{fr.requests} requests")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m prod_core.cli")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
