#!/usr/bin/env python3
"""Diff a trade list against the exact rule's, and split the equity gap into its trades.

Needs: any python3, standard library only (imports exact_rule.py beside it).

Run:
    python3 scripts/parity/compare_trades.py PEER.csv [--label NAME] [--peer-equity X]
                                             [--exact exact.csv] [--data DIR] [--all]

PEER.csv: a header row with at least symbol, fill_ts, side (BUY/SELL) and optionally
signal_ts (as written by exact_rule.py --trades and the peer_*.py scripts). Without --exact the
exact trade list is computed here. Trades match on (symbol, fill_ts, side).

Output: per symbol, the trades only in the exact list (-) and only in the peer's (+), each with
the exact 3*S10-S30 (ticks) at its signal bar and the bar before; then the equity gap split
into (a) the trades that differ, valued exactly (fills at the file's open with the 0.1% fee,
an open position at the last close) and (b) the rest = the peer's own arithmetic (float sums,
its price/fee rounding): peer equity - exact equity of the peer's trade list.
"""
import argparse
import csv
import os
import sys
from datetime import datetime, timezone
from decimal import Decimal
from fractions import Fraction

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from exact_rule import DATA_DIR, FEE, START_CASH, exact_d, load_symbols, run_exact  # noqa: E402


def utc(ms):
    return datetime.fromtimestamp(int(ms) / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M")


def read_trades(path):
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [(r["symbol"], int(r["fill_ts"]), r["side"].upper(), int(r["signal_ts"])
             if r.get("signal_ts") not in (None, "") else None) for r in rows]


def cash_flow(sym, idx, side):
    """Exact cash flow of a fill at bar idx's open."""
    px = Fraction(Decimal(sym.open[idx]))
    q = Fraction(sym.qty)
    return -q * px * (1 + FEE) if side == "BUY" else q * px * (1 - FEE)


def exact_value(sym, fills):
    """Exact pnl of a list of (fill_idx, side) on one symbol (open position at the last close)."""
    pnl = Fraction(0)
    pos = 0
    for idx, side in fills:
        pnl += cash_flow(sym, idx, side)
        pos += 1 if side == "BUY" else -1
    return pnl + pos * Fraction(sym.qty) * Fraction(Decimal(sym.close[-1]))


def compare(symbols, exact_trades, peer_trades, label="peer", peer_equity=None, show_all=False,
            out=sys.stdout):
    p = lambda *a: print(*a, file=out)  # noqa: E731
    ex_by = {}
    for t in exact_trades:
        ex_by.setdefault(t[0], []).append(t)
    pe_by = {}
    for t in peer_trades:
        pe_by.setdefault(t[0], []).append(t)
    total_ex = START_CASH
    total_pe = START_CASH
    summary = []
    for sym in symbols:
        idx_of = {ts: i for i, ts in enumerate(sym.ts)}
        d = exact_d(sym)
        ex = [(idx_of[int(t[1])], t[2]) for t in ex_by.get(sym.name, [])]
        pe = [(idx_of[t[1]], t[2]) for t in pe_by.get(sym.name, [])]
        v_ex = exact_value(sym, ex)
        v_pe = exact_value(sym, pe)
        total_ex += v_ex
        total_pe += v_pe
        only_ex = sorted(set(ex) - set(pe))
        only_pe = sorted(set(pe) - set(ex))
        summary.append((sym.name, len(ex), len(pe), len(only_ex), len(only_pe), v_pe - v_ex))
        if not only_ex and not only_pe:
            continue
        p("%s: exact %d fills, %s %d; only exact %d, only %s %d; pnl delta %+.5f USDT" % (
            sym.name, len(ex), label, len(pe), len(only_ex), label, len(only_pe),
            float(v_pe - v_ex)))
        diffs = sorted([(i, s, "-") for i, s in only_ex] + [(i, s, "+") for i, s in only_pe])
        for n, (i, side, mark) in enumerate(diffs):
            if n >= 12 and not show_all:
                p("   ... %d more (--all)" % (len(diffs) - n))
                break
            sig = i - 1
            p("   %s %-4s fill %s open %-10s signal bar %s: 3*S10-S30 = %s (bar before: %s)" % (
                mark, side, utc(sym.ts[i]), sym.open[i], utc(sym.ts[sig]), d[sig], d[sig - 1]))
    p("")
    p("%-8s %6s %6s %6s %6s %12s" % ("symbol", "exact", label[:6], "-only", "+only", "pnl delta"))
    for name, a, b, c, e, dv in summary:
        p("%-8s %6d %6d %6d %6d %+12.5f" % (name, a, b, c, e, float(dv)))
    p("fills: exact %d, %s %d" % (len(exact_trades), label, len(peer_trades)))
    p("equity: exact %.5f; %s's trades valued exactly %.5f -> trade effect %+.5f" % (
        float(total_ex), label, float(total_pe), float(total_pe - total_ex)))
    if peer_equity is not None:
        p("%s reported %.5f -> its own arithmetic %+.5f; total gap %+.5f" % (
            label, peer_equity, peer_equity - float(total_pe), peer_equity - float(total_ex)))
    return float(total_pe - total_ex)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("peer")
    ap.add_argument("--exact", help="exact trade list CSV (default: computed here)")
    ap.add_argument("--label", default="peer")
    ap.add_argument("--peer-equity", type=float)
    ap.add_argument("--data", default=DATA_DIR)
    ap.add_argument("--all", action="store_true", help="list every differing trade")
    a = ap.parse_args()
    symbols = load_symbols(a.data)
    if a.exact:
        ex = read_trades(a.exact)
    else:
        ex = [(t[0], t[2], t[3], t[1]) for v in run_exact(symbols).values() for t in v[0]]
    compare(symbols, ex, read_trades(a.peer), a.label, a.peer_equity, a.all)


if __name__ == "__main__":
    main()
