"""Report folder of one run."""

from __future__ import annotations

import csv
import json
import shutil
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

REPORT_TABLES = ("plans", "orders", "fills", "positions", "equity", "events", "feed_states")


def _arrow_type(declared: str) -> pa.DataType:
    """The Parquet column type of a SQLite declared type (its affinity)."""
    t = declared.upper()
    if "INT" in t:
        return pa.int64()
    if any(k in t for k in ("REAL", "DOUB", "FLOA")):
        return pa.float64()
    return pa.string()


def _cell(value: Any, arrow: pa.DataType) -> Any:
    if value is None or arrow != pa.string() or isinstance(value, str):
        return value
    return str(value)


def _write_table(storage, name: str, run_id: str, folder: Path) -> int:
    """``<name>.csv`` and ``<name>.parquet`` of one run's table, written batch by batch (bounded memory)."""
    columns, batches = storage.iter_table(name, run_id)
    names = [c for c, _ in columns]
    schema = pa.schema([(c, _arrow_type(t)) for c, t in columns])
    rows = 0
    with (folder / f"{name}.csv").open("w", newline="", encoding="utf-8") as fh, \
            pq.ParquetWriter(folder / f"{name}.parquet", schema) as parquet:
        writer = csv.writer(fh)
        writer.writerow(names)
        for batch in batches:
            writer.writerows(batch)
            cols = list(zip(*batch))
            arrays = [pa.array([_cell(v, f.type) for v in col], type=f.type) for col, f in zip(cols, schema)]
            parquet.write_table(pa.Table.from_arrays(arrays, schema=schema))
            rows += len(batch)
    return rows


def _count_map(value: Any) -> dict[str, int]:
    """A {name: count} dict from an event field, ignoring anything malformed."""
    if not isinstance(value, dict):
        return {}
    return {str(k): int(v) for k, v in value.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def anomaly_summary(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Rejected bars by kind, anomaly lines and bar repairs of one run, from its events.

    The exact counts are the ``run_stopped`` event's ``anomalies`` {"feed:kind": n}; a run
    that did not stop cleanly has none, so the ``data_anomaly`` lines are summed instead
    (their ``kinds`` {kind: n}, or {kind: burst} for lines written before ``kinds`` existed).
    Repairs are ``run_stopped``'s ``repairs`` {"repaired", "given_up", "gaps"} when the feed
    repairs bars.
    """
    lines = [e for e in events if e.get("kind") == "data_anomaly"]
    stopped = [e for e in events if e.get("kind") == "run_stopped"]
    stop_fields = (stopped[-1].get("fields") or {}) if stopped else {}
    by_kind: dict[str, int] = {}
    if "anomalies" in stop_fields:
        source = "run_stopped"
        for key, n in _count_map(stop_fields["anomalies"]).items():
            kind = key.split(":", 1)[1] if ":" in key else key
            by_kind[kind] = by_kind.get(kind, 0) + n
    elif lines:
        source = "data_anomaly"
        for e in lines:
            f = e.get("fields") or {}
            kinds = _count_map(f.get("kinds")) or _count_map({str(f.get("kind") or "unknown"): f.get("burst") or 0})
            for kind, n in kinds.items():
                by_kind[kind] = by_kind.get(kind, 0) + n
    else:
        source = None
    bursts = [(e.get("fields") or {}).get("burst") for e in lines]
    largest = max((b for b in bursts if isinstance(b, int) and not isinstance(b, bool)), default=0)
    repairs = _count_map(stop_fields.get("repairs")) if isinstance(stop_fields.get("repairs"), dict) else None
    return {
        "anomalies": {k: n for k, n in sorted(by_kind.items(), key=lambda kv: (-kv[1], kv[0])) if n},
        "anomaly_source": source,
        "anomaly_lines": len(lines),
        "anomaly_largest_burst": largest,
        "repairs": repairs,
    }


def run_summary(storage, run_id: str) -> dict[str, Any]:
    """Figures of one run computed from storage (aggregated in SQL or streamed: a long run's tables are
    never loaded whole)."""
    run = storage.get_run(run_id) or {}
    q = storage.query
    trades = q("SELECT COUNT(*) AS n, COALESCE(SUM(trade_r > 0), 0) AS wins, COALESCE(SUM(trade_r), 0.0) AS total_r "
               "FROM positions WHERE status = 'closed' AND run_id = ?", (run_id,))[0]
    fills = q("SELECT COUNT(*) AS n, COALESCE(SUM(fee_usd), 0.0) AS fees FROM fills WHERE run_id = ?", (run_id,))[0]
    decisions = {r["decision"]: r["n"] for r in q(
        "SELECT decision, COUNT(*) AS n FROM plans WHERE run_id = ? GROUP BY decision", (run_id,))}
    ends = q("SELECT equity_usd, pnl_cum_r, max_dd_r FROM equity WHERE run_id = ? AND rowid IN "
             "((SELECT MIN(rowid) FROM equity WHERE run_id = ?), (SELECT MAX(rowid) FROM equity WHERE run_id = ?)) "
             "ORDER BY rowid", (run_id, run_id, run_id))
    first, last = (ends[0], ends[-1]) if ends else (None, None)
    n_trades = trades["n"]
    return {
        "run_id": run_id,
        "status": run.get("status"),
        "feed": run.get("feed"),
        "started_at": run.get("started_at"),
        "ended_at": run.get("ended_at"),
        "config_hash": run.get("config_hash"),
        "plans": sum(decisions.values()),
        "decisions": decisions,
        "fills": fills["n"],
        "fees_usd": fills["fees"],
        "closed_trades": n_trades,
        "win_rate": trades["wins"] / n_trades if n_trades else 0.0,
        "closed_r": trades["total_r"],
        "equity_start": first["equity_usd"] if first else None,
        "equity_end": last["equity_usd"] if last else None,
        "pnl_cum_r_end": last["pnl_cum_r"] if last else None,
        "max_dd_r_end": last["max_dd_r"] if last else None,
        **anomaly_summary(storage.events(run_id)),
        "manifest": next((e.get("fields") for e in reversed(storage.events(run_id)) if e.get("kind") == "run_manifest"),
                         None),
        "execution": execution_summary(storage, run_id),
        "funding": funding_summary(storage.funding_payments(run_id)),
        "daily_resets": [e.get("fields") or {} for e in storage.events(run_id) if e.get("kind") == "replay_daily_reset"],
    }


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def execution_summary(storage, run_id: str) -> dict[str, dict[str, Any]]:
    """Fill realism per symbol: slippage against the fill model's reference price (bps, >0 paid),
    fill ratio and bar time to fill of the orders that ended, rejections by reason code (streamed)."""
    out: dict[str, dict[str, Any]] = {}

    def row(symbol: str) -> dict[str, Any]:
        return out.setdefault(symbol, {"fills": 0, "partial_fills": 0, "slippage_bps": [], "ordered": 0.0,
                                       "filled": 0.0, "time_to_fill_s": [], "rejected": {}, "liquidations": 0})

    fills = storage.iter_rows(
        "SELECT f.symbol, f.side, f.price, f.qty, f.reason, f.ref_price, o.qty FROM fills f LEFT JOIN orders o "
        "ON o.run_id = f.run_id AND o.order_id = f.order_id WHERE f.run_id = ? ORDER BY f.rowid", (run_id,))
    for batch in fills:
        for symbol, side, price, qty, reason, ref_price, order_qty in batch:
            r = row(symbol)
            r["fills"] += 1
            if reason == "liquidation":
                r["liquidations"] += 1
            elif ref_price:
                sign = 1.0 if side == "buy" else -1.0
                r["slippage_bps"].append(sign * (price - ref_price) / ref_price * 10_000.0)
            if order_qty is not None and qty < order_qty * (1 - 1e-9):
                r["partial_fills"] += 1
    orders = storage.iter_rows("SELECT symbol, status, qty, filled_qty, ts_ms, done_ms, reject_reason FROM orders "
                               "WHERE run_id = ? ORDER BY rowid", (run_id,))
    for batch in orders:
        for symbol, status, qty, filled_qty, ts_ms, done_ms, reject_reason in batch:
            r = row(symbol)
            if status in ("filled", "cancelled", "rejected") and done_ms:
                r["ordered"] += qty
                r["filled"] += filled_qty or 0.0
            if status == "filled" and done_ms:
                r["time_to_fill_s"].append((done_ms - ts_ms) / 1000.0)
            if status == "rejected":
                code = (reject_reason or "unknown").split(":")[0]
                r["rejected"][code] = r["rejected"].get(code, 0) + 1
    summary = {}
    for symbol, r in sorted(out.items()):
        slips, times = r["slippage_bps"], r["time_to_fill_s"]
        summary[symbol] = {
            "fills": r["fills"], "partial_fills": r["partial_fills"], "liquidations": r["liquidations"],
            "slippage_bps_mean": sum(slips) / len(slips) if slips else 0.0, "slippage_bps_p95": _pct(slips, 0.95),
            "fill_ratio": r["filled"] / r["ordered"] if r["ordered"] > 0 else 1.0,
            "time_to_fill_s_mean": sum(times) / len(times) if times else 0.0, "rejected": r["rejected"],
        }  # fmt: skip
    return summary


def funding_summary(payments: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Funding per symbol: payments, USD paid (negative: received), funding times."""
    out: dict[str, dict[str, Any]] = {}
    for p in payments:
        r = out.setdefault(p["symbol"], {"payments": 0, "paid_usd": 0.0, "times_ms": []})
        r["payments"] += 1
        r["paid_usd"] += p["fee_usd"]
        r["times_ms"].append(p["ts_ms"])
    return dict(sorted(out.items()))


def _fmt_ts(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts)) if ts else "-"


def _anomalies_md(s: dict[str, Any]) -> list[str]:
    out = ["## Data anomalies", ""]
    anomalies = s.get("anomalies") or {}
    if anomalies:
        out += ["| kind | rejected bars |", "|---|---|"]
        out += [f"| {kind} | {n} |" for kind, n in anomalies.items()]
        out += [f"| total | {sum(anomalies.values())} |", ""]
        note = "" if s.get("anomaly_source") == "run_stopped" else " (summed from them: the run did not stop cleanly)"
        out += [f"Log lines: {s.get('anomaly_lines', 0)} (largest burst {s.get('anomaly_largest_burst', 0)}){note}.", ""]
    else:
        out += ["No bar was rejected.", ""]
    repairs = s.get("repairs")
    if repairs is None:
        out += ["Bar repairs: not recorded for this run.", ""]
    else:
        out += [f"Bar repairs: repaired {repairs.get('repaired', 0)}, given up {repairs.get('given_up', 0)}, "
                f"gaps {repairs.get('gaps', 0)}.", ""]
    return out


def _execution_md(s: dict[str, Any]) -> list[str]:
    out = ["## Execution by symbol", ""]
    rows = s.get("execution") or {}
    if not rows:
        return out + ["No order was placed.", ""]
    out += ["| symbol | fills | partial | slippage mean / p95, bps | fill ratio | time to fill, s | liquidations "
            "| rejected |", "|---|---|---|---|---|---|---|---|"]
    for symbol, r in rows.items():
        rejected = ", ".join(f"{k}: {n}" for k, n in sorted(r["rejected"].items())) or "-"
        out.append(f"| {symbol} | {r['fills']} | {r['partial_fills']} | {r['slippage_bps_mean']:.2f} / "
                   f"{r['slippage_bps_p95']:.2f} | {r['fill_ratio']:.1%} | {r['time_to_fill_s_mean']:.0f} | "
                   f"{r['liquidations']} | {rejected} |")
    return out + [""]


def _funding_md(s: dict[str, Any]) -> list[str]:
    out = ["## Funding", ""]
    rows = s.get("funding") or {}
    if not rows:
        return out + ["No funding was settled (no perp position was open at a funding time).", ""]
    out += ["| symbol | payments | paid, USD (negative: received) | first / last funding time |", "|---|---|---|---|"]
    for symbol, r in rows.items():
        first, last = r["times_ms"][0], r["times_ms"][-1]
        out.append(f"| {symbol} | {r['payments']} | {r['paid_usd']:.4f} | {_fmt_ts(first / 1000)} / "
                   f"{_fmt_ts(last / 1000)} |")
    total = sum(r["paid_usd"] for r in rows.values())
    return out + [f"| total | {sum(r['payments'] for r in rows.values())} | {total:.4f} | |", ""]


def _daily_resets_md(s: dict[str, Any]) -> list[str]:
    """Operator-equivalent actions of ``replay.daily_reset`` (none listed when it was off or never acted)."""
    resets = s.get("daily_resets") or []
    if not resets:
        return []
    out = ["## Operator-equivalent actions (replay.daily_reset)", "",
           "At each UTC day of the data the replay lifted the daily lock and reset an engaged drawdown ladder, "
           "as an operator would with `cli unlock` / `cli reset-dd`:", "",
           "| day | actions | lock before | dd_state before, R |", "|---|---|---|---|"]
    for r in resets:
        before = r.get("drawdown_before") or {}
        dd = before.get("dd_state")
        out.append(f"| {r.get('day')} | {', '.join(r.get('actions') or [])} | {r.get('lock_reason')} | "
                   f"{'-' if dd is None else format(dd, '.3f')} |")
    return out + [f"| total | {len(resets)} days | | |", ""]


def _fill_model(manifest: dict[str, Any] | None) -> str:
    if not manifest:
        return "- (not recorded)"
    ex = manifest.get("execution") or {}
    cap = ex.get("max_participation_pct")
    return (f"{ex.get('fill_model')} (spread {ex.get('slippage_bps')} bps, impact {ex.get('impact_coef')}, participation "
            f"{'none' if cap is None else f'{cap}%'}, latency {ex.get('latency_bars')} bars, limits "
            f"{ex.get('limit_fill')}); funding: {manifest.get('funding_source')}")


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
            f"| fill model | {_fill_model(s.get('manifest'))} |",
            f"| plans | {s['plans']} ({decisions}) |",
            f"| fills | {s['fills']} (fees {num(s['fees_usd'], '.2f')} USD) |",
            f"| closed trades | {s['closed_trades']} (win rate {num(s['win_rate'], '.0%')}) |",
            f"| closed R | {num(s['closed_r'], '.3f')} |",
            f"| equity start / end, USD | {num(s['equity_start'], '.2f')} / {num(s['equity_end'], '.2f')} |",
            f"| pnl_cum_r at end | {num(s['pnl_cum_r_end'], '.3f')} |",
            f"| max_dd_r at end | {num(s['max_dd_r_end'], '.3f')} |",
            "",
            *_anomalies_md(s),
            *_execution_md(s),
            *_funding_md(s),
            *_daily_resets_md(s),
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
        _write_table(storage, name, run_id, folder)
    figures = run_summary(storage, run_id)
    summary = _summary_md(figures)
    (folder / "summary.md").write_text(summary, encoding="utf-8")
    if figures.get("manifest"):
        run = storage.get_run(run_id) or {}
        manifest = {"run_id": run_id, "mode": run.get("mode"), "feed": run.get("feed"),
                    "config_hash": run.get("config_hash"), "code_version": run.get("code_version"),
                    "args": run.get("args"), **figures["manifest"]}
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if log_path is not None and Path(log_path).is_file():
        shutil.copyfile(log_path, folder / "run.log")
    (Path(reports_dir) / "summary_latest.md").write_text(summary, encoding="utf-8")
    return folder
