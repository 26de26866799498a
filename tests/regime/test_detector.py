"""Tests for the incremental regime detector (prod_core.regime.detector)."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest

from prod_core.configs.loader import ConfigLoader
from prod_core.configs.symbols import SimConfig
from prod_core.domain import Bar, Regime
from prod_core.feeds.sim import SimFeed
from prod_core.regime import RegimeDetector
from prod_core.testing.builders import make_bar

REPO = Path(__file__).resolve().parents[2]
SKIP_BARS = 200
N_BARS = 8000
SEEDS = (1, 2)


def synthetic(
    n: int, *, sigma: float = 0.001, drift_from: int | None = None, drift_sigmas: float = 0.0,
    jump_at: int | None = None, jump_sigmas: float = 0.0, vol_from: int | None = None, vol_mult: float = 1.0,
    seed: int = 0, symbol: str = "X/USDT",
) -> list[Bar]:
    """A Gaussian random-walk series with an optional drift, one jump, or a volatility step."""
    rng = random.Random(seed)
    price = 100.0
    bars = []
    for i in range(n):
        s = sigma * (vol_mult if vol_from is not None and i >= vol_from else 1.0)
        mean = drift_sigmas * s if drift_from is not None and i >= drift_from else 0.0
        r = rng.gauss(mean, s)
        if i == jump_at:
            r = jump_sigmas * sigma
        prev, price = price, price * math.exp(r)
        wick = 1 + 0.3 * s
        bars.append(make_bar(symbol, i * 60_000, prev, max(prev, price) * wick, min(prev, price) / wick, price))
    return bars


def regimes(bars: list[Bar]) -> list[Regime]:
    det = RegimeDetector()
    return [det.update(b).regime for b in bars]


def confusion_table(cm: np.ndarray) -> str:
    names = [r.name for r in Regime]
    width = max(len(n) for n in names) + 2
    lines = ["truth \\ detected".ljust(width + 6) + "".join(n.rjust(width) for n in names) + "   recall"]
    for i, name in enumerate(names):
        row = cm[i]
        recall = f"{row[i] / row.sum():8.1%}" if row.sum() else "       -"
        lines.append(name.ljust(width + 6) + "".join(str(v).rjust(width) for v in row) + " " + recall)
    return "\n".join(lines)


def test_detector_agrees_with_sim_labels_on_at_least_80_percent_of_bars() -> None:
    """Over 2 seeds x 8000 bars x all configured symbols the detector matches the sim's regime labels >= 80% after warm-up."""
    symbols = ConfigLoader(REPO / "configs").load_symbols()
    cm = np.zeros((len(Regime), len(Regime)), dtype=np.int64)
    for seed in SEEDS:
        batch = SimFeed(symbols.symbols, SimConfig(seed=seed), start_ms=0, paced=False).generate(N_BARS)
        ts = batch.ts_ms.tolist()
        truth = batch.regime[SKIP_BARS:]
        for s, sym in enumerate(batch.symbols):
            det = RegimeDetector()
            cols = [a[s].tolist() for a in (batch.open, batch.high, batch.low, batch.close, batch.volume)]
            detected = [int(det.update(Bar(sym, t, *row)).regime) for t, *row in zip(ts, *cols)]
            np.add.at(cm, (truth, np.array(detected[SKIP_BARS:])), 1)
    agreement = np.trace(cm) / cm.sum()
    print(f"\nregime confusion, seeds {SEEDS} x {N_BARS} bars x {len(batch.symbols)} symbols, first {SKIP_BARS} skipped")
    print(confusion_table(cm))
    print(f"agreement {agreement:.1%}")
    assert cm.sum() == len(SEEDS) * len(batch.symbols) * (N_BARS - SKIP_BARS)
    assert agreement >= 0.80


def test_detector_labels_the_first_bars_warmup() -> None:
    """Until warmup_bars returns have been seen every bar is labelled WARMUP, then a real regime."""
    det = RegimeDetector()
    labels = [det.update(b).regime for b in synthetic(det.params.warmup_bars + 5)]
    assert set(labels[: det.params.warmup_bars - 1]) == {Regime.WARMUP}
    assert Regime.WARMUP not in labels[det.params.warmup_bars :]


def test_detector_first_bar_on_a_symbol_does_not_touch_other_symbols() -> None:
    """Features are kept per symbol: a new symbol starts in warm-up while another is labelled."""
    det = RegimeDetector()
    for b in synthetic(300, symbol="A/USDT"):
        det.update(b)
    assert det.get("A/USDT").regime is not Regime.WARMUP
    assert det.update(make_bar("B/USDT", 0, 5.0)).regime is Regime.WARMUP
    assert det.get("A/USDT").n == 300


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("jump_sigmas", [10.0, -10.0])
def test_single_ten_sigma_jump_in_calm_series_flips_to_volatile_for_at_most_a_few_bars(seed: int, jump_sigmas: float) -> None:
    """One 10-sigma return in a calm series leaves the label VOLATILE for at most 3 of the next 60 bars."""
    labels = regimes(synthetic(700, jump_at=500, jump_sigmas=jump_sigmas, seed=seed))
    assert labels[499] is not Regime.VOLATILE
    assert sum(r is Regime.VOLATILE for r in labels[500:560]) <= 3


@pytest.mark.parametrize("seed", range(8))
def test_tripled_volatility_turns_volatile_within_30_bars(seed: int) -> None:
    """A sustained 3x volatility step (the sim's volatile regime) is labelled VOLATILE within 30 bars and stays so."""
    labels = regimes(synthetic(800, vol_from=400, vol_mult=3.0, seed=seed))
    first = next(i for i, r in enumerate(labels[400:]) if r is Regime.VOLATILE)
    assert first <= 30
    assert sum(r is Regime.VOLATILE for r in labels[450:800]) / 350 >= 0.9


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize(("drift", "trend"), [(0.5, Regime.TREND_UP), (-0.5, Regime.TREND_DOWN)])
def test_clear_drift_turns_to_trend_within_100_bars(seed: int, drift: float, trend: Regime) -> None:
    """A drift of half a sigma per bar after a calm stretch is labelled a trend in its direction within 100 bars."""
    labels = regimes(synthetic(500, drift_from=300, drift_sigmas=drift, seed=seed))
    lag = next((i for i, r in enumerate(labels[300:]) if r is trend), None)
    assert lag is not None and lag <= 100, f"lag {lag}"
    assert sum(r is trend for r in labels[400:500]) >= 80
