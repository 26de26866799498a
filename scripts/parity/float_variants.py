#!/usr/bin/env python3
"""The SMA parity rule with each peer's float arithmetic and crossover definition.

Needs: python3 + numpy. Optional: pandas (pandas_rolling variants), TA-Lib (checks the talib
reproduction against the real talib.SMA). E.g. /tmp/peers/bin/python (see docs/PARITY.md).

Run:
    /tmp/peers/bin/python scripts/parity/float_variants.py            # summary + zero-bar table
    /tmp/peers/bin/python scripts/parity/float_variants.py --detail   # + flips and trade diffs
                                                                      #   of the peer combos
    /tmp/peers/bin/python scripts/parity/float_variants.py --detail-all  # ... of every combo

A combo = an arithmetic for SMA(10), SMA(30) (floats) x a crossover definition on
d = sma10 - sma30. Trades are then simulated and valued EXACTLY (exact_rule.simulate), so each
combo's equity gap to the exact rule is due to its trades only.

Arithmetics (closes parsed with float(str) unless said):
  fsum            math.fsum(window) / n                 backtrader Average (indicators/basicops.py)
  seq_sum_nt      left-to-right sum(window) / n of the
                  closes as Nautilus doubles (raw int
                  at 1e16 scale / 1e16)                 NautilusTrader SimpleMovingAverage
                                                        (indicators/averages.pyx, core/stats.pyx
                                                        fast_mean)
  seq_sum         the same on float(str) closes
  talib           TA-Lib TA_SMA: running total, add the new close, emit total/n, subtract the
                  trailing close                        talib.SMA (freqtrade strategies)
  run_add_sub     s = s + new - old, sma = s / n        the naive rolling sum
  np_mean         np.mean(window) each bar (pairwise summation)
  pandas_rolling  pd.Series.rolling(n).mean()           backtesting.test.SMA, pandas strategies
  pandas_rolling_u1e-8
                  the same on closes * 1e-8             backtesting.py FractionalBacktest (default
                                                        fractional_unit) feeding SMA its scaled
                                                        Close
Crossover definitions (buy when flat on "up", sell when long on "down"):
  rule     up: d > 0 >= d_prev; down: d < 0 <= d_prev   the scenario; = freqtrade's
           qtpylib.crossed_above(a, b) = (a > b) & (a.shift(1) <= b.shift(1))
  strict   up: d_prev < 0 < d (a[-2] < b[-2] and a[-1] > b[-1])   backtesting.lib.crossover
  nzd      up: last non-zero d before this bar < 0 and d > 0      backtrader bt.ind.CrossOver
           (NonZeroDifference, seeded with d on the first bar where both SMAs exist)
`sma10 - sma30 > 0` and `sma10 > sma30` are the same test in IEEE doubles (a - b of two distinct
finite doubles is never 0): the script checks this on every bar of every arithmetic.
"""
import argparse
import math
import os
import sys
from datetime import datetime, timezone
from decimal import Decimal
from fractions import Fraction

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from exact_rule import (DATA_DIR, START_CASH, exact_d, load_symbols, run_exact,  # noqa: E402
                        signals_from_d, simulate)
from compare_trades import compare  # noqa: E402

FAST, SLOW = 10, 30


def utc(ms):
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M")


# ---------------------------------------------------------------- arithmetics: closes -> (f, s)
def sma_fsum(c, n):
    return [math.fsum(c[i - n + 1:i + 1]) / n if i >= n - 1 else None for i in range(len(c))]


def sma_seq(c, n):
    out = [None] * len(c)
    for i in range(n - 1, len(c)):
        t = 0.0
        for x in c[i - n + 1:i + 1]:
            t += x
        out[i] = t / n
    return out


def sma_talib(c, n):
    """TA-Lib ta_SMA.c (TA_INT_SMA): periodTotal over the first n-1 closes, then per bar
    periodTotal += in[i]; tempReal = periodTotal; periodTotal -= in[trailingIdx++];
    out = tempReal / n."""
    out = [None] * len(c)
    total = 0.0
    for i in range(n - 1):
        total += c[i]
    trailing = 0
    for i in range(n - 1, len(c)):
        total += c[i]
        temp = total
        total -= c[trailing]
        trailing += 1
        out[i] = temp / n
    return out


def sma_run_add_sub(c, n):
    out = [None] * len(c)
    s = 0.0
    for i in range(len(c)):
        s = s + c[i]
        if i >= n:
            s = s - c[i - n]
        if i >= n - 1:
            out[i] = s / n
    return out


def sma_np_mean(c, n):
    a = np.asarray(c, dtype=np.float64)
    return [float(np.mean(a[i - n + 1:i + 1])) if i >= n - 1 else None for i in range(len(a))]


def sma_pandas(c, n):
    import pandas as pd
    r = pd.Series(np.asarray(c, dtype=np.float64)).rolling(n).mean().values
    return [None if math.isnan(x) else float(x) for x in r]


def closes_float(sym):
    return [float(x) for x in sym.close]


def closes_nautilus(sym):
    # Price.as_double(): the raw fixed-point integer (1e16 scale, HIGH_PRECISION) / 1e16
    return [float(int(Decimal(x).scaleb(16))) / 1e16 for x in sym.close]


def closes_scaled(unit):
    return lambda sym: [float(x) * unit for x in sym.close]


ARITHMETICS = {
    "fsum": (closes_float, sma_fsum),
    "seq_sum_nt": (closes_nautilus, sma_seq),
    "seq_sum": (closes_float, sma_seq),
    "talib": (closes_float, sma_talib),
    "run_add_sub": (closes_float, sma_run_add_sub),
    "np_mean": (closes_float, sma_np_mean),
    "pandas_rolling": (closes_float, sma_pandas),
    "pandas_rolling_u1e-8": (closes_scaled(1e-8), sma_pandas),
}


# ---------------------------------------------------------------- crossover definitions
def cross_rule(d):
    return signals_from_d(d)


def cross_strict(d):
    sig = [0] * len(d)
    for i in range(1, len(d)):
        if d[i] is None or d[i - 1] is None:
            continue
        if d[i - 1] < 0 < d[i]:
            sig[i] = 1
        elif d[i - 1] > 0 > d[i]:
            sig[i] = -1
    return sig


def cross_nzd(d):
    sig = [0] * len(d)
    nz = None
    for i in range(len(d)):
        if d[i] is None:
            continue
        if nz is not None:
            if nz < 0 and d[i] > 0:
                sig[i] = 1
            elif nz > 0 and d[i] < 0:
                sig[i] = -1
        nz = d[i] if (d[i] or nz is None) else nz
    return sig


CROSSES = {"rule": cross_rule, "strict": cross_strict, "nzd": cross_nzd}

PEERS = {  # the combo that reproduces each peer's arithmetic (docs/PARITY.md)
    "backtrader": ("fsum", "nzd"),
    "NautilusTrader": ("seq_sum_nt", "rule"),
    "freqtrade": ("pandas_rolling", "rule"),  # + freqtrade_end(); ("talib", "rule") with ta.SMA
    "backtesting.py": ("pandas_rolling_u1e-8", "strict"),
}


def sign(x):
    return (x > 0) - (x < 0)


def float_d(sym, arith):
    closes_of, sma = ARITHMETICS[arith]
    c = closes_of(sym)
    f, s = sma(c, FAST), sma(c, SLOW)
    d = [None if (a is None or b is None) else a - b for a, b in zip(f, s)]
    for a, b, x in zip(f, s, d):  # `a - b > 0` is `a > b`
        if x is not None:
            assert (x > 0) == (a > b) and (x < 0) == (a < b)
    return d


def float_equity(symbols, trades_by):
    """Cash summed in floats the way the peers do: cash -= q*o*1.001 / += q*o*0.999."""
    cash = 10000.0
    for sym in symbols:
        q = float(sym.qty)
        pos = 0
        for t in trades_by[sym.name]:
            o = float(t[4])
            if t[3] == "BUY":
                cash -= q * o * 1.001
                pos += 1
            else:
                cash += q * o * 0.999
                pos -= 1
        cash += pos * q * float(sym.close[-1])
    return cash


def freqtrade_end(symbols, trades_by):
    """freqtrade's end of a backtest (optimize/backtesting.py handle_left_open): each trade
    still open is force-exited at the OPEN of the last candle, with the exit fee. Returns
    (fills incl. those exits, exact equity)."""
    n, eq = 0, START_CASH
    for s in symbols:
        tr = trades_by[s.name]
        n += len(tr)
        eq += sum(t[5] for t in tr)
        if len(tr) % 2:
            n += 1
            eq += Fraction(s.qty) * Fraction(Decimal(s.open[-1])) * Fraction(999, 1000)
    return n, eq


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=DATA_DIR)
    ap.add_argument("--detail", action="store_true", help="flips + trade diffs of the peer combos")
    ap.add_argument("--detail-all", action="store_true", help="... of every combo")
    a = ap.parse_args()
    try:
        import pandas  # noqa: F401
    except ImportError:
        for k in [k for k in ARITHMETICS if k.startswith("pandas")]:
            del ARITHMETICS[k]
        print("(pandas not importable: pandas_rolling variants skipped)")
    symbols = load_symbols(a.data)
    exact = run_exact(symbols)
    ex_trades = [(t[0], t[2], t[3], t[1]) for s in symbols for t in exact[s.name][0]]
    ex_equity = START_CASH + sum(exact[s.name][1] for s in symbols)
    ed = {s.name: exact_d(s) for s in symbols}
    zero_bars = [(s, i) for s in symbols for i, v in enumerate(ed[s.name]) if v == 0]

    try:  # the talib reproduction is bit-identical to talib.SMA where TA-Lib is installed
        import talib
        for s in symbols:
            c = np.asarray(closes_float(s))
            for n in (FAST, SLOW):
                ref, mine = talib.SMA(c, n), sma_talib(list(c), n)
                assert all(x == y for x, y in zip(ref[n - 1:], mine[n - 1:])), (s.name, n)
        print("talib %s: talib.SMA == the talib reproduction on every bar" % talib.__version__)
    except ImportError:
        pass

    fd = {}
    results = {}
    for arith in ARITHMETICS:
        fd[arith] = {s.name: float_d(s, arith) for s in symbols}
        for cname, cross in CROSSES.items():
            trades_by, eq = {}, START_CASH
            for s in symbols:
                tr, pnl = simulate(s, cross(fd[arith][s.name]))
                trades_by[s.name] = tr
                eq += pnl
            results[(arith, cname)] = (trades_by, eq)

    # flips: bars where the float sign of d differs from the exact one
    flips = {}
    for arith in ARITHMETICS:
        fl = []
        for s in symbols:
            for i, (e, f) in enumerate(zip(ed[s.name], fd[arith][s.name])):
                if e is not None and sign(e) != sign(f):
                    fl.append((s, i, e, f))
        flips[arith] = fl

    print("exact rule: %d fills, %.5f USDT; d == 0 exactly on %d bars" % (
        len(ex_trades), float(ex_equity), len(zero_bars)))
    print()
    print("%-22s %-7s %5s %6s %12s %10s %12s   %s" % (
        "arithmetic", "cross", "flips", "fills", "equity", "delta", "float-summed",
        "freqtrade end: fills, equity"))
    for (arith, cname), (trades_by, eq) in results.items():
        n = sum(len(v) for v in trades_by.values())
        fn, feq = freqtrade_end(symbols, trades_by)
        print("%-22s %-7s %5d %6d %12.5f %+10.5f %12.5f   %5d %11.5f" % (
            arith, cname, len(flips[arith]), n, float(eq), float(eq - ex_equity),
            float_equity(symbols, trades_by), fn, float(feq)))
    print()
    print("peer combos: " + "; ".join("%s = %s + %s" % (p, *c) for p, c in PEERS.items()))

    # the exact-zero bars: the sign each arithmetic gives d there
    print()
    print("d at the %d bars where it is exactly 0 (+/-: float d > 0 / < 0, 0: float d == 0):"
          % len(zero_bars))
    names = list(ARITHMETICS)
    print("%-8s %-16s %6s  %s" % ("symbol", "bar (UTC)", "index", " ".join(
        "%-3s" % ("a%d" % k) for k in range(len(names)))))
    for s, i in zero_bars:
        row = " ".join("%-3s" % "0+-"[sign(fd[n][s.name][i])] for n in names)
        print("%-8s %-16s %6d  %s" % (s.name, utc(s.ts[i]), i, row))
    print("columns: " + ", ".join("a%d=%s" % (k, n) for k, n in enumerate(names)))
    print("flips outside the zero bars: %d" % sum(
        1 for fl in flips.values() for s, i, e, f in fl if e != 0))

    combos = list(results) if a.detail_all else [c for c in PEERS.values()] if a.detail else []
    for arith, cname in combos:
        label = "%s+%s" % (arith, cname)
        peer = [p for p, c in PEERS.items() if c == (arith, cname)]
        print()
        print("=" * 100)
        print("%s%s" % (label, " (%s)" % peer[0] if peer else ""))
        print("flipped bars (float sign != exact sign):")
        for s, i, e, f in flips[arith]:
            print("   %s %s bar %d: exact 3*S10-S30 = %d, float d = %r" % (
                s.name, utc(s.ts[i]), i, e, f))
        trades_by, _ = results[(arith, cname)]
        pe = [(t[0], t[2], t[3], t[1]) for s in symbols for t in trades_by[s.name]]
        compare(symbols, ex_trades, pe, label=label[:10])


if __name__ == "__main__":
    main()
