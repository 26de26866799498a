"""Report folder of one run."""

from __future__ import annotations

import csv
import shutil
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

REPORT_TABLES = ("plans", "orders", "fills", "positions", "equity", "events", "feed_states")


def _write_table(rows: list[dict[str, Any]], folder: Path, name: str) -> None:
    if rows:
        columns = list(rows[0].keys())
    else:
        columns = []
    with (folder / f"{name}.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([row[c] for c in columns])
    table = pa.Table.from_pylist([{k: (v if not isinstance(v, dict) else str(v)) for k, v in r.items()} for r in rows])
    pq.write_table(table, folder / f"{name}.parquet")


def run_summary(storage, run_id: str) -> dict[str, Any]:
    """Figures of one run computed from storage."""
    run = storage.get_run(run_id) or {}
    trades = storage.closed_trades(run_id)
    fills = storage.fills(run_id)
    plans = storage.plans(run_id)
    equity = storage.equity_curve(run_id)
    wins = [t for t in trades if (t.get("trade_r") or 0) > 0]
    total_r = sum(t.get("trade_r") or 0.0 for t in trades)
    decisions: dict[str, int] = {}
    for p in plans:
        decisions[p["decision"]] = decisions.get(p["decision"], 0) + 1
    return {
        "run_id": run_id,
        "status": run.get("status"),
        "feed": run.get("feed"),
        "started_at": run.get("started_at"),
        "ended_at": run.get("ended_at"),
        "config_hash": run.get("config_hash"),
        "plans": len(plans),
        "decisions": decisions,
        "fills": len(fills),
        "fees_usd": sum(f["fee_usd"] for f in fills),
        "closed_trades": len(trades),
        "win_rate": len(wins) / len(trades) if trades else 0.0,
        "closed_r": total_r,
        "equity_start": equity[0]["equity_usd"] if equity else None,
        "equity_end": equity[-1]["equity_usd"] if equity else None,
        "pnl_cum_r_end": equity[-1]["pnl_cum_r"] if equity else None,
        "max_dd_r_end": equity[-1]["max_dd_r"] if equity else None,
    }


def _fmt_ts(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts)) if ts else "-"


def _summary_md(s: dict[str, Any]) -> str:
    def num(v: Any, fmt: str) -> str:
        return format(v, fmt) if isinstance(v, (int, float)) else "-"

    decisions = ", ".join(f"{k}={v}" for k, v in sorted(s["decisions"].items())) or "-"
    return "\n".join(
        [
            f"# Run {s['run_id']}",
            "",
            "| field | value |",
            "|---|---|",
            f"| status | {s['status']} |",
            f"| feed | {s['feed']} |",
            f"| started | {_fmt_ts(s['started_at'])} |",
            f"| ended | {_fmt_ts(s['ended_at'])} |",
            f"| config hash | {s['config_hash']} |",
            f"| plans | {s['plans']} ({decisions}) |",
            f"| fills | {s['fills']} (fees {num(s['fees_usd'], '.2f')} USD) |",
            f"| closed trades | {s['closed_trades']} (win rate {num(s['win_rate'], '.0%')}) |",
            f"| closed R | {num(s['closed_r'], '.3f')} |",
            f"| equity start / end, USD | {num(s['equity_start'], '.2f')} / {num(s['equity_end'], '.2f')} |",
            f"| pnl_cum_r at end | {num(s['pnl_cum_r_end'], '.3f')} |",
            f"| max_dd_r at end | {num(s['max_dd_r_end'], '.3f')} |",
            "",
            "Tables: " + ", ".join(f"`{t}.csv`/`{t}.parquet`" for t in REPORT_TABLES) + "; log: `run.log`.",
            "",
        ]
    )


def write_run_report(storage, run_id: str, reports_dir: Path, log_path: Path | None = None) -> Path:
    """Write ``reports_dir/run_<run_id>/`` and refresh ``reports_dir/summary_latest.md``."""
    folder = Path(reports_dir) / f"run_{run_id}"
    folder.mkdir(parents=True, exist_ok=True)
    storage.flush()
    for name in REPORT_TABLES:
        _write_table(storage.table_rows(name, run_id), folder, name)
    summary = _summary_md(run_summary(storage, run_id))
    (folder / "summary.md").write_text(summary, encoding="utf-8")
    if log_path is not None and Path(log_path).is_file():
        shutil.copyfile(log_path, folder / "run.log")
    (Path(reports_dir) / "summary_latest.md").write_text(summary, encoding="utf-8")
    return folder
