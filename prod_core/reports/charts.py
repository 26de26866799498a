"""The pictures of a run report, drawn from the series CSVs the report wrote (``series/``).

    python -m prod_core.reports.charts reports/run_<id>

Run as its own process by ``write_run_report``: matplotlib (~45 MiB) never enters the
runner, whose memory stays bounded on long replays, and a drawing failure cannot take the
report's numbers with it. Each picture is drawn only from the CSV beside it, so the series
a reader sees in a picture are exactly the numbers in ``series/*.csv``.

Pictures (PNG, Agg backend):
- ``equity_drawdown.png``: equity in USD; cumulative pnl and drawdown in R; spans with new
  entries blocked (daily lock, drawdown stop, kill-switch) and with safe mode on are shaded;
- ``exposure.png``: gross and net exposure in % of equity;
- ``price_<symbol>.png``: each traded symbol's close (with the low-high band of each point)
  and its entries and exits.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

BLOCKED = ("lock", "drawdown_stop", "kill_switch")
SPAN_STYLE = {"blocked": ("#d62728", 0.15, "entries blocked (lock / dd stop / kill)"),
              "safe_mode": ("#ff7f0e", 0.18, "safe mode")}


def _read(path: Path) -> dict[str, np.ndarray]:
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return {}
    out: dict[str, np.ndarray] = {}
    for col in rows[0]:
        vals = [r[col] for r in rows]
        try:
            out[col] = np.array([float(v) if v not in ("", "None") else np.nan for v in vals])
        except ValueError:
            out[col] = np.array(vals, dtype=object)
    return out


def _times(ts_ms: np.ndarray) -> np.ndarray:
    return ts_ms.astype("int64").astype("datetime64[ms]")


def _shade(axes, spans: dict[str, np.ndarray]) -> None:
    if not spans:
        return
    seen: set[str] = set()
    for kind, start, end in zip(spans["kind"], spans["start_ms"], spans["end_ms"]):
        style = "safe_mode" if kind == "safe_mode" else "blocked" if kind in BLOCKED else None
        if style is None:
            continue
        color, alpha, label = SPAN_STYLE[style]
        t0, t1 = _times(np.array([start, max(end, start)]))
        for ax in axes:
            ax.axvspan(t0, t1, color=color, alpha=alpha, lw=0, label=None if style in seen else label)
        seen.add(style)


def _finish(fig: Figure, ax, title: str, ylabel: str, out: Path) -> None:
    """Title, label, legend and grid of the main axes; dates slanted; the PNG written."""
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(out)


def equity_drawdown(series: Path, spans_csv: Path, out: Path, title: str) -> None:
    e = _read(series)
    spans = _read(spans_csv) if spans_csv.is_file() else {}
    fig = Figure(figsize=(11, 6.5), dpi=100)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    if e:
        t = _times(e["ts_ms"])
        top.plot(t, e["equity_usd"], color="#1f77b4", lw=1.2, label="equity, USD")
        bottom.plot(t, e["pnl_cum_r"], color="#2ca02c", lw=1.0, label="cumulative pnl, R")
        bottom.fill_between(t, e["dd_state_min"], 0, color="#d62728", alpha=0.35, step="post",
                            label="drawdown from peak, R")
        bottom.axhline(0, color="grey", lw=0.6)
    _shade((top, bottom), spans)
    bottom.set_ylabel("R")
    bottom.legend(loc="lower left", fontsize=8)
    bottom.grid(alpha=0.3)
    _finish(fig, top, title, "USD", out)


def exposure(series: Path, spans_csv: Path, out: Path, title: str) -> None:
    e = _read(series)
    spans = _read(spans_csv) if spans_csv.is_file() else {}
    fig = Figure(figsize=(11, 3.5), dpi=100)
    ax = fig.subplots()
    if e:
        t = _times(e["ts_ms"])
        ax.plot(t, e["net_pct"], color="#8c564b", lw=1.0, ls="--", label="net exposure, % of equity", zorder=2)
        ax.plot(t, e["gross_pct_max"], color="#9467bd", lw=1.6, label="gross exposure (max per point), % of equity",
                zorder=3)
        ax.axhline(0, color="grey", lw=0.6)
    _shade((ax,), spans)
    _finish(fig, ax, title, "% of equity", out)


def price(series: Path, fills_csv: Path, out: Path, title: str) -> None:
    p = _read(series)
    f = _read(fills_csv) if fills_csv.is_file() else {}
    fig = Figure(figsize=(11, 4.5), dpi=100)
    ax = fig.subplots()
    if p:
        t = _times(p["ts_ms"])
        ax.fill_between(t, p["low"], p["high"], color="#1f77b4", alpha=0.15, lw=0, label="low-high")
        ax.plot(t, p["close"], color="#1f77b4", lw=0.9, label="close")
    if f:
        t = _times(f["ts_ms"])
        entry = f["role"] == "entry"
        buy = f["side"] == "buy"
        for mask, marker, color, label in ((entry & buy, "^", "#2ca02c", "entry long"),
                                           (entry & ~buy, "v", "#d62728", "entry short"),
                                           (~entry, "x", "black", "exit")):
            if mask.any():
                ax.scatter(t[mask], f["price"][mask].astype(float), marker=marker, s=18, color=color,
                           label=label, zorder=3, linewidths=1)
    _finish(fig, ax, title, "price", out)


def draw(folder: Path) -> list[Path]:
    """Every picture whose series are in ``folder/series``; returns the PNGs written."""
    s = folder / "series"
    run = folder.name.removeprefix("run_")
    written = []
    if (s / "equity.csv").is_file():
        equity_drawdown(s / "equity.csv", s / "spans.csv", folder / "equity_drawdown.png",
                        f"Run {run}: equity and drawdown (R)")
        exposure(s / "equity.csv", s / "spans.csv", folder / "exposure.png", f"Run {run}: exposure")
        written += [folder / "equity_drawdown.png", folder / "exposure.png"]
    for series in sorted(s.glob("price_*.csv")):
        key = series.stem.removeprefix("price_")
        png = folder / f"price_{key}.png"
        price(series, s / f"fills_{key}.csv", png, f"{key.replace('-', '/')}: price, entries and exits")
        written.append(png)
    return written


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not Path(args[0]).is_dir():
        print("usage: python -m prod_core.reports.charts REPORT_FOLDER (a reports/run_<id> directory)",
              file=sys.stderr)
        return 2
    for png in draw(Path(args[0])):
        print(png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
