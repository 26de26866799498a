#!/usr/bin/env python3
"""The SMA parity scenario in backtesting.py (a peer engine, docs/PARITY.md).

Needs: backtesting (pulls numpy, pandas, bokeh), in a separate venv (never the project's .venv):
    python3 -m venv /tmp/peers && /tmp/peers/bin/pip install backtesting
Run:
    /tmp/peers/bin/python scripts/parity/peer_backtesting.py [--trades bp.csv] [--data DIR]
        [--unit U] [--sma-on-file-prices] [--cross rule]
Then diff against the exact rule:
    python3 scripts/parity/compare_trades.py bp.csv --label backtesting.py

backtesting.py trades one asset per Backtest and whole units only, so each symbol runs alone in
a FractionalBacktest (prices * unit, sizes / unit; unit default = 1e-8, the library's
default "satoshi") with 10,000 cash, and the combined equity is 10,000 + the sum of the five
runs' (final equity - 10,000): with 100 USDT positions the shared account never runs short, so
this equals one account. The strategy is the library's documented SmaCross: SMA = pandas
rolling(n).mean() (backtesting.test.SMA) of self.data.Close, buy the fixed size when
crossover(sma10, sma30) and flat, close when crossover(sma30, sma10) and long; market orders
fill at the next bar's open (trade_on_close=False), commission=0.001 (charged at entry and at
exit on the traded value), finalize_trades=False: an open trade is valued at the last close.

--sma-on-file-prices computes the SMAs on the file's closes instead of the unit-scaled ones;
--cross rule replaces lib.crossover (a[-2] < b[-2] and a[-1] > b[-1]) with the scenario's
(d > 0 >= d_prev on d = sma10 - sma30), to isolate the two differences.
"""
import argparse
import csv
import glob
import os
import sys
import warnings
from decimal import Decimal

import numpy as np
import pandas as pd
from backtesting import Strategy
from backtesting.lib import FractionalBacktest, crossover
from backtesting.test import SMA

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from exact_rule import DATA_DIR, quantity  # noqa: E402

warnings.filterwarnings("ignore")


def rule_up(fast, slow):
    d0, d1 = fast[-2] - slow[-2], fast[-1] - slow[-1]
    return d1 > 0 >= d0


def rule_down(fast, slow):
    d0, d1 = fast[-2] - slow[-2], fast[-1] - slow[-1]
    return d1 < 0 <= d0


class SmaCross(Strategy):
    units = 0  # order size in whole fractional units
    file_close = None  # unscaled closes, for --sma-on-file-prices
    rule_cross = False

    def init(self):
        src = self.data.Close if self.file_close is None else self.file_close
        self.sma1 = self.I(SMA, src, 10)
        self.sma2 = self.I(SMA, src, 30)

    def next(self):
        if self.rule_cross:
            up, down = rule_up(self.sma1, self.sma2), rule_down(self.sma1, self.sma2)
        else:
            up, down = crossover(self.sma1, self.sma2), crossover(self.sma2, self.sma1)
        if up and not self.position:
            self.buy(size=self.units)
        elif down and self.position:
            self.position.close()


def run_symbol(path, unit, file_prices, rule_cross):
    raw = pd.read_csv(path, dtype={"open": str, "close": str})
    first_close = raw["close"].iloc[0]
    qty = quantity(first_close)
    num = pd.read_csv(path)
    df = pd.DataFrame({"Open": num["open"].values, "High": num["high"].values,
                       "Low": num["low"].values, "Close": num["close"].values,
                       "Volume": num["volume"].values},
                      index=pd.to_datetime(num["ts_ms"].values, unit="ms"))
    if unit is None:  # "auto": the quantity's last digit, e.g. 0.00122 -> 1e-5
        unit = float(Decimal(1).scaleb(qty.as_tuple().exponent))
    units = int(round(float(qty) / unit))
    assert abs(units * unit - float(qty)) < 1e-12 * max(1.0, float(qty)), (qty, unit)
    bt = FractionalBacktest(df, SmaCross, cash=10000, commission=0.001,
                            trade_on_close=False, finalize_trades=False, fractional_unit=unit)
    st = bt.run(units=units, rule_cross=rule_cross,
                file_close=df["Close"].values if file_prices else None)
    name = os.path.basename(path).split("_")[1]
    ts = raw["ts_ms"].values
    fills = []
    for _, t in st["_trades"].iterrows():
        fills.append((name, ts[t.EntryBar - 1], ts[t.EntryBar], "BUY", t.EntryPrice))
        fills.append((name, ts[t.ExitBar - 1], ts[t.ExitBar], "SELL", t.ExitPrice))
    for t in st["_strategy"].trades:  # still open at the end
        fills.append((name, ts[t.entry_bar - 1], ts[t.entry_bar], "BUY", t.entry_price / unit))
    return name, float(st["Equity Final [$]"]), fills


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=DATA_DIR)
    ap.add_argument("--trades", metavar="CSV")
    ap.add_argument("--unit", default="1e-8", help="fractional unit, or 'auto'")
    ap.add_argument("--sma-on-file-prices", action="store_true")
    ap.add_argument("--cross", choices=["lib", "rule"], default="lib")
    a = ap.parse_args()
    import backtesting
    equity = 10000.0
    fills = []
    for f in sorted(glob.glob(os.path.join(a.data, "BYBIT_*_5m.csv"))):
        name, eq, fl = run_symbol(f, None if a.unit == "auto" else float(a.unit), a.sma_on_file_prices, a.cross == "rule")
        print("  %s: fills %d  equity %.5f" % (name, len(fl), eq))
        equity += eq - 10000.0
        fills += fl
    print("backtesting.py %s: fills %d  equity %.5f USDT" % (
        backtesting.__version__, len(fills), equity))
    if a.trades:
        fills.sort(key=lambda t: (t[0], t[2]))
        with open(a.trades, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["symbol", "signal_ts", "fill_ts", "side", "price"])
            for t in fills:
                w.writerow([t[0], int(t[1]), int(t[2]), t[3], repr(float(t[4]))])
        print("trades -> %s" % a.trades)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
