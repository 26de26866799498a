"""PortfolioController: safe mode from correlation jumps and exposure breaches."""

from __future__ import annotations

import csv
import math

from prod_core.configs import ConfigLoader
from prod_core.feeds.sim import SimFeed
from prod_core.portfolio import PortfolioController
from tests.conftest import REPO, shared_data_dir


def _sim_flips(seed: int, scenario: str | None, start: int = 1500, length: int = 150, n: int = 4000):
    loader = ConfigLoader(REPO / "configs")
    gov, sym = loader.load_governance(), loader.load_symbols()
    sim = sym.sim.model_copy(update={"seed": seed, "scenario": scenario, "scenario_start_bar": start,
                                     "scenario_bars": length})
    b = SimFeed(sym.symbols, sim, start_ms=0, paced=False).generate(n)
    pc = PortfolioController(b.symbols, gov.portfolio)
    engaged_at: list[int] = []
    states = []
    for i in range(1, n):
        rets = [math.log(b.close[k, i] / b.close[k, i - 1]) for k in range(len(b.symbols))]
        pc.on_timestamp(rets)
        states.append(pc.safe_mode)
        if pc.safe_mode and (len(states) < 2 or not states[-2]):
            engaged_at.append(i)
    return sim.history_bars + start, states, engaged_at


def test_corr_spike_engages_safe_mode_in_its_window_and_releases_after() -> None:
    """In corr_spike safe mode engages within 60 bars of the spike start and is released within 150 bars after it."""
    for seed in (1, 2, 3):
        start, states, engaged_at = _sim_flips(seed, "corr_spike")
        assert any(start <= i <= start + 60 for i in engaged_at), (seed, engaged_at)
        end = start + 150
        assert states[end + 150 - 1] is False or any(i > end for i in engaged_at), (seed, engaged_at)
        assert any(not s for s in states[end : end + 150]), f"seed {seed}: never released after the spike"


def test_exposure_breach_engages_safe_mode_until_it_is_gone() -> None:
    """Gross exposure past its limit engages safe mode; it releases after the hold once exposure is back."""
    gov = ConfigLoader(REPO / "configs").load_governance()
    pc = PortfolioController(("A", "B"), gov.portfolio)
    breach = pc.exposure_breach(10_000.0, 20_000.0, 5_000.0)
    assert breach.startswith("gross exposure 200.0%")
    assert pc.on_timestamp([0.0, 0.0], breach) == "engaged"
    assert pc.safe_mode and "gross exposure" in pc.reason
    flips = [pc.on_timestamp([0.0, 0.0], "") for _ in range(gov.portfolio.safe_mode_min_hold_bars + 1)]
    assert "released" in flips and not pc.safe_mode
    assert pc.exposure_breach(10_000.0, 15_000.0, 10_000.0) == ""  # exactly at the limits: no breach


def test_safe_mode_engages_on_at_most_ten_percent_of_days_of_real_bybit_data() -> None:
    """Replaying the shared Bybit 5m majors through the controller, safe mode is on at most 10% of days."""
    data = shared_data_dir()
    files = sorted(data.glob("BYBIT_*USDT_5m.csv"))
    assert len(files) >= 4, files
    series = {}
    for f in files:
        with f.open() as fh:
            rows = csv.reader(fh)
            next(rows)
            series[f.name.split("_")[1]] = {int(r[0]): float(r[4]) for r in rows}
    symbols = sorted(series)
    gov = ConfigLoader(REPO / "configs").load_governance()
    pc = PortfolioController(symbols, gov.portfolio)
    prev: dict[str, float] = {}
    days: set[int] = set()
    engaged_days: set[int] = set()
    for ts in sorted(set().union(*series.values())):
        rets = []
        for s in symbols:
            c, p = series[s].get(ts), prev.get(s)
            rets.append(math.log(c / p) if c and p else None)
            if c:
                prev[s] = c
        pc.on_timestamp(rets)
        days.add(ts // 86_400_000)
        if pc.safe_mode:
            engaged_days.add(ts // 86_400_000)
    share = len(engaged_days) / len(days)
    print(f"safe mode engaged on {len(engaged_days)} of {len(days)} days ({share:.1%})")
    assert len(days) >= 80
    assert share <= 0.10
