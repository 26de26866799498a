"""Report folder of one run."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa

from prod_core.reports.figures import (
    breakdowns,
    equity_series,
    fill_markers,
    performance,
    price_series,
    redact_args,
    rejects,
    timeline,
    write_series,
)

REPORT_TABLES = ("plans", "orders", "fills", "positions", "equity", "events", "feed_states")


def _arrow_type(declared: str) -> pa.DataType:
    """The Parquet column type of a SQLite declared type (its affinity)."""
    t = declared.upper()
    if "INT" in t:
        return pa.int64()
    if any(k in t for k in ("REAL", "DOUB", "FLOA")):
        return pa.float64()
    return pa.string()


def _column(values: tuple, arrow: pa.DataType) -> pa.Array:
    """One column of a batch as its declared type: numbers as they are (fast path), anything else
    stored in a text column as its text."""
    if arrow == pa.string():
        return pa.array([v if v is None or isinstance(v, str) else str(v) for v in values], type=arrow)
    try:
        return pa.array(values, type=arrow)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):  # SQLite let a text value into a numeric column
        return pa.array([v if v is None or isinstance(v, (int, float)) else None for v in values], type=arrow)


def _write_table(storage, name: str, run_id: str, folder: Path) -> int:
    """``<name>.csv`` and ``<name>.parquet`` of one run's table, written batch by batch (bounded memory)."""
    import pyarrow.parquet as pq  # here, not at import: it brings pyarrow's filesystems and ssl (~4.5 MiB RSS)

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
            arrays = [_column(col, f.type) for col, f in zip(cols, schema)]
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
    decisions = {r["decision"]: r["n"] for r in q(
        "SELECT decision, COUNT(*) AS n FROM plans WHERE run_id = ? GROUP BY decision", (run_id,))}
    perf = performance(storage, run_id)
    events = storage.events(run_id)
    stopped = [e for e in events if e.get("kind") == "run_stopped"]
    return {
        "run_id": run_id,
        "status": run.get("status"),
        "mode": run.get("mode"),
        "feed": run.get("feed"),
        "started_at": run.get("started_at"),
        "ended_at": run.get("ended_at"),
        "heartbeat_at": run.get("heartbeat_at"),
        "config_hash": run.get("config_hash"),
        "code_version": run.get("code_version"),
        "args": redact_args(run.get("args") or ""),
        "plans": sum(decisions.values()),
        "decisions": decisions,
        **perf,
        **anomaly_summary(events),
        "manifest": next((e.get("fields") for e in reversed(events) if e.get("kind") == "run_manifest"), None),
        "execution": execution_summary(storage, run_id),
        "funding": funding_summary(storage.funding_payments(run_id)),
        "daily_resets": [e.get("fields") or {} for e in events if e.get("kind") == "replay_daily_reset"],
        "rejects": rejects(storage, run_id),
        "breakdowns": breakdowns(storage, run_id),
        "timeline": timeline(storage, run_id, events, perf["first_ts_ms"], perf["last_ts_ms"]),
        "stage_ms": (stopped[-1].get("fields") or {}).get("stage_ms") if stopped else None,
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


def _num(v: Any, fmt: str) -> str:
    return format(v, fmt) if isinstance(v, (int, float)) and not isinstance(v, bool) else "-"


def _fmt_ms(ts_ms: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(ts_ms / 1000)) if ts_ms else "start"


def _duration(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return "-"
    d, rest = divmod(int(seconds), 86_400)
    h, rest = divmod(rest, 3_600)
    m, sec = divmod(rest, 60)
    return (f"{d}d " if d else "") + f"{h:02d}:{m:02d}:{sec:02d}"


def _status(s: dict[str, Any], now: float) -> str:
    status = s["status"]
    if status != "running":
        return str(status)
    beat = s.get("heartbeat_at") or s.get("started_at")
    age = now - beat if beat else None
    return (f"running in the database (no clean stop recorded; last heartbeat {_num(age, '.0f')} s before this "
            f"report: the runner was killed, or is still running)")


def _symbols(s: dict[str, Any]) -> list[str]:
    manifest = s.get("manifest") or {}
    syms = list((manifest.get("instruments") or {}).keys())
    return syms or sorted((s.get("execution") or {}).keys())


def _group_md(title: str, key: str, rows: list[dict[str, Any]]) -> list[str]:
    out = [f"### By {title}", ""]
    if not rows:
        return out + ["No closed trade.", ""]
    out += [f"| {key} | trades | win rate | total R | expectancy R | pnl, USD | profit factor |",
            "|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r[key]} | {r['trades']} | {_num(r['win_rate'], '.0%')} | {_num(r['total_r'], '.3f')} | "
                   f"{_num(r['expectancy_r'], '.3f')} | {_num(r['pnl_usd'], '.2f')} | {_num(r['profit_factor'], '.2f')} |")
    return out + [""]


TIMELINE_ROWS = 60


def _timeline_md(s: dict[str, Any]) -> list[str]:
    tl = s.get("timeline") or {}
    entries = tl.get("entries") or []
    out = ["## Timeline (locks, drawdown stops, safe mode, kill-switch, holds, operator commands; bar time, UTC)", ""]
    if not entries:
        return out + ["Nothing happened to governance during the run: no lock, stop, safe mode, kill-switch, hold or "
                      "operator command.", ""]
    out += ["| time | what |", "|---|---|"]
    out += [f"| {_fmt_ms(e['ts_ms'])} | {e['what']} |" for e in entries[:TIMELINE_ROWS]]
    if len(entries) > TIMELINE_ROWS:
        out.append(f"| ... | {len(entries) - TIMELINE_ROWS} more in `summary.json` (timeline.entries) |")
    spans = tl.get("spans") or []
    blocked = sum(sp["end_ms"] - sp["start_ms"] for sp in spans if sp["kind"] != "safe_mode") / 3_600_000
    safe = sum(sp["end_ms"] - sp["start_ms"] for sp in spans if sp["kind"] == "safe_mode") / 3_600_000
    return out + ["", f"Entries blocked (lock / drawdown stop / kill-switch) for {blocked:.1f} h in all, safe mode on "
                      f"for {safe:.1f} h (bar time; spans may overlap).", ""]


def _rejects_md(s: dict[str, Any]) -> list[str]:
    r = s.get("rejects") or {}
    vetoed, rejected = r.get("plans_vetoed") or {}, r.get("orders_rejected") or {}
    out = ["## Rejects", ""]
    if not vetoed and not rejected:
        return out + ["No plan was vetoed and no order rejected.", ""]
    out += ["| where | reason | count |", "|---|---|---|"]
    out += [f"| plan vetoed (risk / portfolio) | {k} | {n} |" for k, n in vetoed.items()]
    out += [f"| order rejected (venue rules) | {k} | {n} |" for k, n in rejected.items()]
    return out + [""]


def _latency_md(s: dict[str, Any]) -> list[str]:
    out = ["## Stage latency", ""]
    stages = s.get("stage_ms")
    if not stages:
        return out + ["Not recorded: the run did not stop cleanly (the runner records it at its stop).", ""]
    out += ["| stage | p50, ms | p95, ms | samples |", "|---|---|---|---|"]
    out += [f"| {k} | {_num(v.get('p50'), '.3f')} | {_num(v.get('p95'), '.3f')} | {v.get('count', 0)} |"
            for k, v in stages.items()]
    return out + [""]


def _profit_factor(s: dict[str, Any]) -> str:
    if s.get("profit_factor") is None and s.get("closed_trades"):
        return "no losing trade"
    return _num(s.get("profit_factor"), ".2f")


def _summary_md(s: dict[str, Any], *, base: str = "", pictures: dict[str, Any] | None = None,
                now: float | None = None) -> str:
    """summary.md: manifest, result, pictures, timeline, breakdowns, rejects, latency, data, execution.

    ``base``: the path prefix of the pictures (``run_<id>/`` in summary_latest.md)."""
    now = time.time() if now is None else now
    pictures = pictures or {}
    decisions = ", ".join(f"{k}={v}" for k, v in sorted(s["decisions"].items())) or "-"
    ended = s.get("ended_at") or s.get("heartbeat_at")
    span = (s.get("last_ts_ms") or 0) - (s.get("first_ts_ms") or 0)
    funding = f"{_num(s.get('funding_usd'), '.2f')} USD ({s.get('funding_payments', 0)} payments; negative: received)"
    out = [
        f"# Run {s['run_id']}",
        "",
        "## Manifest",
        "",
        "| field | value |",
        "|---|---|",
        f"| status | {_status(s, now)} |",
        f"| mode / feed | {s.get('mode') or '-'} / {s['feed']} |",
        f"| symbols | {', '.join(_symbols(s)) or '-'} |",
        f"| started | {_fmt_ts(s['started_at'])} |",
        f"| ended | {_fmt_ts(s['ended_at'])} |",
        f"| duration | {_duration(ended - s['started_at'] if ended and s.get('started_at') else None)} wall clock; "
        f"bars from {_fmt_ms(s.get('first_ts_ms'))} to {_fmt_ms(s.get('last_ts_ms'))} UTC "
        f"({_duration(span / 1000 if s.get('first_ts_ms') else None)}) |",
        f"| config hash | {s['config_hash']} |",
        f"| code version | {s.get('code_version') or '-'} |",
        f"| fill model | {_fill_model(s.get('manifest'))} |",
        f"| command | `{s.get('args') or '-'}` |",
        "",
        "## Result",
        "",
        "| figure | value |",
        "|---|---|",
        f"| equity start / end, USD | {_num(s['equity_start'], '.2f')} / {_num(s['equity_end'], '.2f')} |",
        f"| pnl, USD | {_num(s.get('pnl_usd'), '+.2f')} |",
        f"| pnl, R (pnl_cum_r at end) | {_num(s['pnl_cum_r_end'], '+.3f')} |",
        f"| max drawdown, R | {_num(s.get('max_dd_r'), '.3f')} |",
        f"| closed trades | {s['closed_trades']} (win rate {_num(s['win_rate'], '.0%')}) |",
        f"| expectancy, R per trade | {_num(s.get('expectancy_r'), '+.3f')} |",
        f"| profit factor | {_profit_factor(s)} |",
        f"| closed R | {_num(s['closed_r'], '.3f')} |",
        f"| fills | {s['fills']} (fees {_num(s['fees_usd'], '.2f')} USD) |",
        f"| funding | {funding} |",
        f"| plans | {s['plans']} ({decisions}) |",
        "",
    ]
    if pictures.get("equity"):
        out += [f"![equity and drawdown]({base}equity_drawdown.png)", "", f"![exposure]({base}exposure.png)", ""]
    elif pictures.get("error"):
        out += [f"Pictures: not drawn ({pictures['error']}).", ""]
    out += _timeline_md(s)
    b = s.get("breakdowns") or {}
    out += ["## Trades", ""]
    out += _group_md("strategy", "strategy", b.get("strategy") or [])
    out += _group_md("regime (at the plan)", "regime", b.get("regime") or [])
    out += _group_md("symbol", "symbol", b.get("symbol") or [])
    out += _rejects_md(s)
    out += _latency_md(s)
    out += _anomalies_md(s)
    out += _execution_md(s)
    out += _funding_md(s)
    out += _daily_resets_md(s)
    prices = pictures.get("prices") or []
    if prices or pictures.get("price_note"):
        out += ["## Prices, entries and exits", ""]
        out += [f"![{sym}]({base}{png})" for sym, png in prices]
        out += ["", f"Price series: {pictures.get('price_note')}; pictures drawn from `series/*.csv` "
                    "(downsampled: per point the last close and the low-high band).", ""]
    out += ["Tables: " + ", ".join(f"`{t}.csv`/`{t}.parquet`" for t in REPORT_TABLES)
            + "; figures: `summary.json`; log: `run.log`.", ""]
    return "\n".join(out)


def _sym_key(symbol: str) -> str:
    return symbol.replace("/", "-").replace(":", "-")


def write_series_files(storage, run_id: str, figures: dict[str, Any], folder: Path) -> dict[str, Any]:
    """``series/*.csv``: the downsampled numbers every picture is drawn from."""
    series = folder / "series"
    if series.exists():
        shutil.rmtree(series)
    first, last = figures.get("first_ts_ms"), figures.get("last_ts_ms")
    out: dict[str, Any] = {"prices": [], "price_note": None}
    eq = equity_series(storage, run_id, first, last)
    if not eq:
        return out
    write_series(series / "equity.csv", eq, list(eq[0]))
    write_series(series / "spans.csv", figures["timeline"]["spans"], ["kind", "start_ms", "end_ms"])
    traded = [r["symbol"] for r in storage.query(
        "SELECT DISTINCT symbol FROM fills WHERE run_id = ? ORDER BY symbol", (run_id,))]
    if traded:
        run = storage.get_run(run_id) or {}
        prices, note = price_series(storage, run_id, run, traded, first, last)
        out["price_note"] = note
        for sym in traded:
            key = _sym_key(sym)
            if sym in prices:
                write_series(series / f"price_{key}.csv", prices[sym], ["ts_ms", "close", "low", "high"])
            write_series(series / f"fills_{key}.csv", fill_markers(storage, run_id, sym),
                         ["ts_ms", "side", "price", "role", "reason"])
            if sym in prices:
                out["prices"].append((sym, f"price_{key}.png"))
    out["equity"] = True
    return out


CHARTS_TIMEOUT_S = 300.0


def draw_pictures(folder: Path) -> str | None:
    """Draw the PNGs in a child process (``prod_core.reports.charts``); None, or why they were not drawn."""
    env = {**os.environ, "MPLBACKEND": "Agg"}
    env.setdefault("MPLCONFIGDIR", str(Path(tempfile.gettempdir()) / "crupto-mpl"))
    try:
        proc = subprocess.run([sys.executable, "-m", "prod_core.reports.charts", str(folder)], capture_output=True,
                              text=True, timeout=CHARTS_TIMEOUT_S, env=env,
                              cwd=str(Path(__file__).resolve().parents[2]))
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"the chart process failed: {exc}"
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return f"the chart process exited {proc.returncode}: {tail[0]}"
    return None


def _latest_finished(storage) -> dict[str, Any] | None:
    rows = storage.query("SELECT run_id, status, ended_at, started_at FROM runs WHERE status != 'running' "
                         "ORDER BY COALESCE(ended_at, started_at) DESC, rowid DESC LIMIT 1")
    return rows[0] if rows else None


def write_run_report(storage, run_id: str, reports_dir: Path, log_path: Path | None = None, *,
                     pictures: bool = True) -> Path:
    """Write ``reports_dir/run_<run_id>/`` (tables, summary.md, summary.json, series and pictures) and,
    when this run is the newest finished one, ``reports_dir/summary_latest.md``. A run still marked
    running (killed, or alive) gets its report but never becomes summary_latest."""
    folder = Path(reports_dir) / f"run_{run_id}"
    folder.mkdir(parents=True, exist_ok=True)
    storage.flush()
    for name in REPORT_TABLES:
        _write_table(storage, name, run_id, folder)
    figures = run_summary(storage, run_id)
    drawn: dict[str, Any] = write_series_files(storage, run_id, figures, folder)
    for stale in folder.glob("*.png"):
        stale.unlink()
    if pictures and drawn.get("equity"):
        error = draw_pictures(folder)
        if error is not None:
            drawn = {"error": error, "prices": [], "price_note": drawn.get("price_note")}
    elif not pictures:
        drawn = {"error": "pictures switched off for this report", "prices": [], "price_note": None}
    now = time.time()
    (folder / "summary.md").write_text(_summary_md(figures, pictures=drawn, now=now), encoding="utf-8")
    (folder / "summary.json").write_text(json.dumps(figures, indent=1, sort_keys=True, default=str) + "\n",
                                         encoding="utf-8")
    if figures.get("manifest"):
        run = storage.get_run(run_id) or {}
        manifest = {"run_id": run_id, "mode": run.get("mode"), "feed": run.get("feed"),
                    "config_hash": run.get("config_hash"), "code_version": run.get("code_version"),
                    "args": redact_args(run.get("args") or ""), **figures["manifest"]}
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if log_path is not None and Path(log_path).is_file():
        shutil.copyfile(log_path, folder / "run.log")
    latest = _latest_finished(storage)
    if latest is not None and latest["run_id"] == run_id:
        head = (f"> Latest finished run: `run_{run_id}` ({figures['status']}, ended {_fmt_ts(figures['ended_at'])}); "
                f"its folder: `run_{run_id}/`. Written {_fmt_ts(now)}.\n\n")
        text = head + _summary_md(figures, base=f"run_{run_id}/", pictures=drawn, now=now)
        tmp = Path(reports_dir) / ".summary_latest.md.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, Path(reports_dir) / "summary_latest.md")
    return folder
