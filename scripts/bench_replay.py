#!/usr/bin/env python3
"""Benchmark: push N simulated bars through the WHOLE pipeline as fast as possible.

All eight stages run (hygiene, regime, strategies, risk, portfolio, paper execution,
SQLite storage with buffered writes, live metrics with the exporter serving), on the
replay (bar) clock. Prints bars/s, per-stage p50/p95 (histogram estimates), peak RSS,
and a bare-loop SMA reference over the same bars in the same process.

    python scripts/bench_replay.py [--bars 500000] [--seed 7] [--scenario crash]
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prod_core.configs import ConfigLoader  # noqa: E402
from prod_core.domain import STAGES, Instrument, InstrumentKind  # noqa: E402
from prod_core.feeds.sim import SimFeed  # noqa: E402
from prod_core.runner.account import open_book  # noqa: E402
from prod_core.runner.pipeline import Pipeline  # noqa: E402
from prod_core.storage import Storage  # noqa: E402
from prod_core.telemetry import LiveMetrics, start_exporter  # noqa: E402


def bare_sma_loop(bars: list, fast: int = 20, slow: int = 60) -> tuple[float, int]:
    """Reference: a plain Python SMA-crossover loop over the same bars (no engine)."""
    t0 = time.perf_counter()
    state: dict[str, list] = {}
    signals = 0
    for bar in bars:
        st = state.get(bar.symbol)
        if st is None:
            st = state[bar.symbol] = [[], 0.0, 0.0, 0]
        window, fsum, ssum, above = st
        c = bar.close
        window.append(c)
        fsum += c
        ssum += c
        n = len(window)
        if n > fast:
            fsum -= window[n - 1 - fast]
        if n > slow:
            ssum -= window.pop(0)
            n -= 1
        st[1], st[2] = fsum, ssum
        if n >= slow:
            now_above = 1 if fsum / fast > ssum / slow else 0
            if now_above != above:
                signals += 1
            st[3] = now_above
    return time.perf_counter() - t0, signals


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bars", type=int, default=500_000, help="bars in total (all symbols)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--scenario", default=None, choices=["crash", "corr_spike", "feed_outage"])
    ap.add_argument("--config-dir", default="configs")
    args = ap.parse_args()

    loader = ConfigLoader(args.config_dir)
    gov, sym = loader.load_governance(), loader.load_symbols()
    # Benchmark the engine trading all along, not an account parked by its drawdown stop
    # or daily lock: widen those two limits (everything else is the shipped governance).
    relaxed = gov.model_dump()
    relaxed["drawdown"].update(throttle_at_r=-1e6, no_entries_at_r=-2e6)
    relaxed["daily_lock"].update(max_daily_loss_r=1e6, max_trades=10**9, max_consecutive_losses=10**9)
    gov = type(gov).model_validate(relaxed)
    sim = sym.sim.model_copy(update={"seed": args.seed, "scenario": args.scenario, "history_bars": 0})
    feed = SimFeed(sym.symbols, sim, start_ms=1_700_000_000_000, paced=False)
    t0 = time.perf_counter()
    bars = list(feed.iter_bars(args.bars // len(sym.symbols)))
    gen_s = time.perf_counter() - t0

    tmp = Path(tempfile.mkdtemp(prefix="crupto-bench-"))
    storage = Storage(str(tmp / "bench.db"))
    run_id = "bench"
    storage.start_run(run_id, mode="paper", feed="sim", config_hash="bench", code_version="bench", ts=time.time())
    instruments = {s.symbol: Instrument(symbol=s.symbol, kind=InstrumentKind(s.kind)) for s in sym.symbols}
    live = LiveMetrics(feeds=["sim"], symbols=list(instruments), strategies=["trend_following", "mean_reversion"])
    live.runner_up = 1
    exporter = start_exporter(live, port=0)
    # Bench the engine, not governance stops: a fresh account with no drawdown stop, journaled
    # like a replay (every fill and transition batched into the periodic flush).
    account = f"replay:{run_id}"
    book = open_book(storage, account, run_id, starting_cash=gov.account.starting_equity_usd, actor="bench")
    state = book.state
    state.cash_usd = book.cash_usd
    pipeline = Pipeline(run_id=run_id, gov=gov, instruments=instruments, storage=storage, live=live,
                        notify=lambda *a, **k: None, state=state, feed_name="sim", clock_mode="bar",
                        equity_every=60, timing_every=16, account=account, immediate=False)
    pipeline.mark_journaled()
    on_bar = pipeline.on_bar
    maybe_flush = storage.maybe_flush
    clock = time.monotonic

    gc.collect()
    t0 = time.perf_counter()
    for i, bar in enumerate(bars):
        on_bar(bar)
        if not i & 1023:
            maybe_flush(clock())
    pipeline.save_snapshot()
    storage.flush()
    engine_s = time.perf_counter() - t0
    journal_entries = storage.journal_size(account)
    body = urllib.request.urlopen(f"http://127.0.0.1:{exporter.port}/metrics", timeout=5).read()
    exporter.stop()
    storage.close()

    bare_s, _ = bare_sma_loop(bars)
    n = len(bars)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(f"bars: {n} ({len(instruments)} symbols, seed {args.seed}, scenario {args.scenario or '-'})")
    print(f"pipeline: {n / engine_s:,.0f} bars/s ({engine_s:.2f} s; storage + exporter on; "
          f"plans {pipeline.plans_seen}, fills {pipeline.fills_seen}, journal entries {journal_entries})")
    print(f"bare SMA loop: {n / bare_s:,.0f} bars/s ({bare_s:.2f} s); pipeline/bare = {bare_s / engine_s:.3f}")
    print(f"sim generation: {n / gen_s:,.0f} bars/s (not included above)")
    print(f"peak RSS: {rss_mb:.0f} MiB; exporter scrape {len(body)} bytes")
    print("stage latency (histogram estimate, every 16th bar; risk/portfolio only on bars with a plan):")
    for stage in STAGES:
        p50 = live.stage_times.quantile_ms(stage, 0.5) * 1000
        p95 = live.stage_times.quantile_ms(stage, 0.95) * 1000
        print(f"  {stage:<10} p50 {p50:8.2f} us   p95 {p95:8.2f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
