#!/usr/bin/env python3
"""The SMA(10)/SMA(30) parity scenario, computed exactly (integer ticks + Fraction cash).

Needs: any python3 (>= 3.8), standard library only.

Run:
    python3 scripts/parity/exact_rule.py                      # fills, equity, per symbol
    python3 scripts/parity/exact_rule.py --trades trades.csv  # + the trade list as CSV
    python3 scripts/parity/exact_rule.py --zeros              # + the bars where d == 0 exactly
    python3 scripts/parity/exact_rule.py --data DIR           # data dir (default /work/shared/data)

The rule (fixed by the product owner, docs/PARITY.md):
  * prices as integer ticks: 10**k, k = the most decimals among the file's open/high/low/close;
  * d = SMA(10) - SMA(30) of closes; sign(d) = sign(3 * S10 - S30), S10/S30 = sum of the last
    10/30 closes in ticks (an exact integer); d is first defined on a symbol's 30th bar;
  * a signal needs the previous bar's d too:
      flat and d > 0 >= d_prev  -> buy q = 100 USDT / first close, rounded to 3 significant digits
      long and d < 0 <= d_prev  -> sell all
  * fill at the NEXT bar's open, no slippage, fee 0.1% on every fill (buy costs q*open*1.001,
    sell yields q*open*0.999); a signal on a symbol's last bar is not filled;
  * 10,000 USDT in one cash account; final equity = cash + open positions at their last close.

Expected: 5009 fills, 9522.67286 USDT.

The module is also imported by float_variants.py and the peer scripts: load_symbol(),
simulate() (the fill/fee/equity model driven by any per-bar sign series) and write_trades().
"""
import argparse
import csv
import glob
import os
import sys
from decimal import Decimal, ROUND_HALF_EVEN
from fractions import Fraction

DATA_DIR = "/work/shared/data"
START_CASH = Fraction(10000)
FEE = Fraction(1, 1000)
NOTIONAL = Decimal(100)
FAST, SLOW = 10, 30


class Symbol:
    """One symbol's bars: decimal strings as in the file, closes in integer ticks."""

    def __init__(self, path):
        self.path = path
        self.name = os.path.basename(path).split("_")[1]  # BYBIT_BTCUSDT_5m.csv -> BTCUSDT
        with open(path, newline="") as fh:
            rows = list(csv.reader(fh))[1:]
        self.ts = [int(r[0]) for r in rows]
        self.open = [r[1] for r in rows]
        self.close = [r[4] for r in rows]
        self.k = max(len(x.split(".")[1]) if "." in x else 0 for r in rows for x in r[1:5])
        self.close_ticks = [int(Decimal(c).scaleb(self.k)) for c in self.close]
        self.qty = quantity(self.close[0])

    def __len__(self):
        return len(self.ts)


def quantity(first_close):
    """100 USDT / first close, rounded half-even to 3 significant digits, as a Decimal."""
    q = NOTIONAL / Decimal(first_close)
    return q.quantize(Decimal(1).scaleb(q.adjusted() - 2), rounding=ROUND_HALF_EVEN)


def load_symbols(data_dir=DATA_DIR):
    files = sorted(glob.glob(os.path.join(data_dir, "BYBIT_*_5m.csv")))
    if not files:
        sys.exit("no BYBIT_*_5m.csv in %s" % data_dir)
    return [Symbol(f) for f in files]


def exact_d(sym):
    """Per bar: 3*S10 - S30 in ticks (an int with the sign of d, d = value / (30 * 10**k)),
    None before the 30th bar."""
    c = sym.close_ticks
    pre = [0]
    for x in c:
        pre.append(pre[-1] + x)  # pre[j] = sum(c[:j])
    out = [None] * len(c)
    for i in range(SLOW - 1, len(c)):
        out[i] = 3 * (pre[i + 1] - pre[i + 1 - FAST]) - (pre[i + 1] - pre[i + 1 - SLOW])
    return out


def signals_from_d(d):
    """The rule's signal per bar from any per-bar d series (None = undefined): +1 buy
    candidate (d > 0 >= prev), -1 sell candidate (d < 0 <= prev), 0 none."""
    sig = [0] * len(d)
    for i in range(1, len(d)):
        cur, prev = d[i], d[i - 1]
        if cur is None or prev is None:
            continue
        if cur > 0 >= prev:
            sig[i] = 1
        elif cur < 0 <= prev:
            sig[i] = -1
    return sig


def simulate(sym, sig, qty=None):
    """Flat/long state machine + fills at the next open with the 0.1% fee, exact.

    sig: per bar +1 (buy if flat), -1 (sell if long), 0.  Returns (trades, pnl) where
    trades = [(symbol, signal_ts, fill_ts, side, price_str, cash_flow Fraction)] and pnl =
    sum of cash flows + the open position at the last close (so equity = 10000 + sum pnl).
    """
    q = Fraction(qty if qty is not None else sym.qty)
    trades = []
    pnl = Fraction(0)
    long_ = False
    n = len(sym)
    for i in range(n - 1):  # a signal on the last bar is not filled
        s = sig[i]
        if s == 1 and not long_:
            px = sym.open[i + 1]
            cf = -q * Fraction(Decimal(px)) * (1 + FEE)
            trades.append((sym.name, sym.ts[i], sym.ts[i + 1], "BUY", px, cf))
            pnl += cf
            long_ = True
        elif s == -1 and long_:
            px = sym.open[i + 1]
            cf = q * Fraction(Decimal(px)) * (1 - FEE)
            trades.append((sym.name, sym.ts[i], sym.ts[i + 1], "SELL", px, cf))
            pnl += cf
            long_ = False
    if long_:
        pnl += q * Fraction(Decimal(sym.close[-1]))
    return trades, pnl


def run_exact(symbols):
    """{symbol name: (trades, pnl, d)} under the exact rule."""
    out = {}
    for sym in symbols:
        d = exact_d(sym)
        trades, pnl = simulate(sym, signals_from_d(d))
        out[sym.name] = (trades, pnl, d)
    return out


def write_trades(path, trades):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["symbol", "signal_ts", "fill_ts", "side", "price"])
        for t in trades:
            w.writerow(t[:5])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=DATA_DIR)
    ap.add_argument("--trades", metavar="CSV", help="write the trade list here")
    ap.add_argument("--zeros", action="store_true", help="list the bars where d == 0 exactly")
    a = ap.parse_args(argv)
    symbols = load_symbols(a.data)
    res = run_exact(symbols)
    fills = 0
    equity = START_CASH
    all_trades = []
    print("%-8s %2s %9s %6s %12s" % ("symbol", "k", "qty", "fills", "pnl"))
    for sym in symbols:
        trades, pnl, _ = res[sym.name]
        fills += len(trades)
        equity += pnl
        all_trades += trades
        print("%-8s %2d %9s %6d %12.5f" % (sym.name, sym.k, sym.qty, len(trades), float(pnl)))
    print("fills %d  equity %.5f USDT" % (fills, float(equity)))
    if a.zeros:
        from datetime import datetime, timezone
        n = 0
        for sym in symbols:
            for i, v in enumerate(res[sym.name][2]):
                if v == 0:
                    n += 1
                    t = datetime.fromtimestamp(sym.ts[i] / 1000, timezone.utc)
                    print("d=0  %s  %s  bar %d" % (sym.name, t.strftime("%Y-%m-%d %H:%M"), i))
        print("bars with d == 0: %d" % n)
    if a.trades:
        write_trades(a.trades, all_trades)
        print("trades -> %s" % a.trades)


if __name__ == "__main__":
    main()
