#!/usr/bin/env python3
"""The SMA parity scenario in backtrader (a peer engine, docs/PARITY.md).

Needs: backtrader, in a separate venv (never the project's .venv):
    python3 -m venv /tmp/peers && /tmp/peers/bin/pip install backtrader
Run:
    /tmp/peers/bin/python scripts/parity/peer_backtrader.py [--trades bt.csv] [--data DIR]
    /tmp/peers/bin/python scripts/parity/peer_backtrader.py --no-skip-stale   # see below
Then diff against the exact rule:
    python3 scripts/parity/compare_trades.py /tmp/exact_trades.csv bt.csv

The strategy is written the way backtrader's docs write an SMA crossover: bt.ind.SMA(10) and
bt.ind.SMA(30) on each data, bt.ind.CrossOver(fast, slow), buy a fixed size when flat on
crossover > 0, close when long on crossover < 0; market orders (filled at the next bar's
open), commission 0.1% of the traded value (setcommission(commission=0.001)), one broker with
10,000 cash for the five datas, final equity = broker.getvalue() (cash + positions at the last
close). XRP's bars start and end 5 minutes after the others: strategy.next() runs on the union
of timestamps, so a data without a new bar shows its previous crossover value again. By default
a data is only looked at when it has a new bar (len(data) grew); --no-skip-stale drops that
guard (the naive script); on this data both give 5009 fills and 9521.91108.
"""
import argparse
import csv
import glob
import os
import sys
from datetime import datetime, timezone

import backtrader as bt

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from exact_rule import DATA_DIR, load_symbols  # noqa: E402


def ms_to_dt(x):
    return datetime.fromtimestamp(int(x) / 1000, timezone.utc).replace(tzinfo=None)


class SmaCross(bt.Strategy):
    params = dict(qty=None, skip_stale=True)

    def __init__(self):
        self.cross = {}
        for d in self.datas:
            fast = bt.ind.SMA(d.close, period=10)
            slow = bt.ind.SMA(d.close, period=30)
            self.cross[d] = bt.ind.CrossOver(fast, slow)
        self.seen = {d: 0 for d in self.datas}
        self.fills = []

    def prenext(self):  # XRP lags one bar: the others may already have a crossover value
        self.next()

    def next(self):
        for d in self.datas:
            if len(d) <= 30:  # CrossOver's first value is on the 31st bar
                continue
            if self.p.skip_stale and len(d) == self.seen[d]:
                continue
            self.seen[d] = len(d)
            pos = self.getposition(d).size
            x = self.cross[d][0]
            if not pos and x > 0:
                o = self.buy(data=d, size=self.p.qty[d._name])
                o.addinfo(signal_ts=d.datetime.datetime(0))
            elif pos and x < 0:
                o = self.close(data=d)
                o.addinfo(signal_ts=d.datetime.datetime(0))

    def notify_order(self, order):
        if order.status == order.Completed:
            d = order.data
            self.fills.append((d._name, order.info.signal_ts, bt.num2date(order.executed.dt),
                               "BUY" if order.isbuy() else "SELL", order.executed.price,
                               abs(order.executed.size), order.executed.comm))


def ts_ms(dt):
    return int(dt.replace(tzinfo=timezone.utc).timestamp() * 1000)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=DATA_DIR)
    ap.add_argument("--trades", metavar="CSV")
    ap.add_argument("--no-skip-stale", action="store_true")
    a = ap.parse_args()
    qty = {s.name: float(s.qty) for s in load_symbols(a.data)}
    cerebro = bt.Cerebro(stdstats=False)
    for f in sorted(glob.glob(os.path.join(a.data, "BYBIT_*_5m.csv"))):
        name = os.path.basename(f).split("_")[1]
        data = bt.feeds.GenericCSVData(
            dataname=f, dtformat=ms_to_dt, datetime=0, open=1, high=2, low=3, close=4,
            volume=5, openinterest=-1, timeframe=bt.TimeFrame.Minutes, compression=5)
        cerebro.adddata(data, name=name)
    cerebro.broker.setcash(10000.0)
    cerebro.broker.setcommission(commission=0.001)
    cerebro.addstrategy(SmaCross, qty=qty, skip_stale=not a.no_skip_stale)
    strat = cerebro.run()[0]
    print("backtrader %s: fills %d  equity %.5f USDT" % (
        bt.__version__, len(strat.fills), cerebro.broker.getvalue()))
    by = {}
    for t in strat.fills:
        by[t[0]] = by.get(t[0], 0) + 1
    print("  per symbol: " + ", ".join("%s %d" % kv for kv in sorted(by.items())))
    if a.trades:
        with open(a.trades, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["symbol", "signal_ts", "fill_ts", "side", "price", "size", "fee"])
            for name, sts, fts, side, px, size, fee in strat.fills:
                w.writerow([name, ts_ms(sts), ts_ms(fts), side, repr(px), repr(size), repr(fee)])
        print("trades -> %s" % a.trades)


if __name__ == "__main__":
    main()
