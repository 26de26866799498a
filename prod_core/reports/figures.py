"""The figures of a run report, read back from storage (never from the runner's memory).

Everything here is recomputed from the database, so a crashed or SIGKILLed run gets the same
report as a finished one: performance (USD and R), breakdowns by strategy / regime / symbol,
rejects, the governance timeline (from the journal, in bar time) and the downsampled series
the pictures are drawn from. Long runs are aggregated in SQL or streamed; no table is loaded
whole.
"""

from __future__ import annotations

import csv
import json
import math
import re
import shlex
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from prod_core.domain.types import Regime

__all__ = [
    "MAX_POINTS",
    "breakdowns",
    "equity_series",
    "performance",
    "price_series",
    "redact_args",
    "rejects",
    "timeline",
    "write_series",
]

# Points per picture series: a month of 1m bars or a week of paper marks draws the same.
MAX_POINTS = 1_500
# Markers per symbol on a price picture (a long run's every fill would hide the price).
MAX_MARKERS = 4_000

_URL_SECRET = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]+)@")
_SECRET_FLAG = re.compile(r"^--?[\w-]*(secret|password|passwd|token|api[_-]?key|apikey)[\w-]*$", re.I)


def redact_args(args: str) -> str:
    """A command line with URL passwords and the values of secret-looking flags replaced by ``***``."""
    out: list[str] = []
    try:
        words = shlex.split(args)
    except ValueError:
        words = args.split()
    hide_next = False
    for word in words:
        if hide_next:
            out.append("***")
            hide_next = False
            continue
        flag, eq, value = word.partition("=")
        if _SECRET_FLAG.match(flag):
            if eq:
                out.append(f"{flag}=***")
            else:
                out.append(word)
                hide_next = True
            continue
        out.append(_URL_SECRET.sub(lambda m: f"{m['scheme']}{m['user']}:***@", word))
    return shlex.join(out)


# ------------------------------------------------------------------ numbers
def performance(storage, run_id: str) -> dict[str, Any]:
    """Equity and pnl in USD and R, drawdown, win rate, expectancy, profit factor, fees, funding."""
    q = storage.query
    t = q(f"SELECT {_TRADE_AGG} FROM positions p WHERE p.status = 'closed' AND p.run_id = ?", (run_id,))[0]  # noqa: S608
    f = q("SELECT COUNT(*) AS n, COALESCE(SUM(fee_usd), 0.0) AS fees FROM fills WHERE run_id = ?", (run_id,))[0]
    funding = q("SELECT COUNT(*) AS n, COALESCE(SUM(fee_usd), 0.0) AS paid FROM journal "
                "WHERE run_id = ? AND kind = 'funding'", (run_id,))[0]
    ends = q("SELECT ts_ms, equity_usd, pnl_cum_r FROM equity WHERE run_id = ? AND rowid IN "
             "((SELECT MIN(rowid) FROM equity WHERE run_id = ?), (SELECT MAX(rowid) FROM equity WHERE run_id = ?)) "
             "ORDER BY rowid", (run_id, run_id, run_id))
    dd = q("SELECT MAX(max_dd_r) AS max_dd_r, MIN(dd_state) AS min_dd_state, COUNT(*) AS n FROM equity "
           "WHERE run_id = ?", (run_id,))[0]
    first, last = (ends[0], ends[-1]) if ends else (None, None)
    n = t["n"]
    return {
        "closed_trades": n,
        "wins": t["wins"],
        "closed_r": t["r"],
        "closed_pnl_usd": t["pnl"],
        **_ratios(t),
        "fills": f["n"],
        "fees_usd": f["fees"],
        "funding_payments": funding["n"],
        "funding_usd": funding["paid"],
        "equity_start": first["equity_usd"] if first else None,
        "equity_end": last["equity_usd"] if last else None,
        "pnl_usd": (last["equity_usd"] - first["equity_usd"]) if first else None,
        "pnl_cum_r_end": last["pnl_cum_r"] if last else None,
        "max_dd_r": dd["max_dd_r"],
        "equity_rows": dd["n"],
        "first_ts_ms": first["ts_ms"] if first else None,
        "last_ts_ms": last["ts_ms"] if last else None,
    }


# Closed trades aggregated in SQL (over ``positions p``): count, wins, R, pnl, gross won and lost.
_TRADE_AGG = ("COUNT(*) AS n, COALESCE(SUM(p.trade_r > 0), 0) AS wins, COALESCE(SUM(p.trade_r), 0.0) AS r, "
              "COALESCE(SUM(p.pnl_usd), 0.0) AS pnl, "
              "COALESCE(SUM(CASE WHEN p.pnl_usd > 0 THEN p.pnl_usd END), 0.0) AS won, "
              "COALESCE(-SUM(CASE WHEN p.pnl_usd < 0 THEN p.pnl_usd END), 0.0) AS lost")


def _ratios(agg: dict[str, Any]) -> dict[str, float | None]:
    """Win rate, expectancy in R and profit factor of a ``_TRADE_AGG`` row (None where undefined)."""
    n = agg["n"]
    return {"win_rate": agg["wins"] / n if n else None, "expectancy_r": agg["r"] / n if n else None,
            "profit_factor": agg["won"] / agg["lost"] if n and agg["lost"] > 0 else None}


def _group_rows(rows: Iterable[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    return [{key: r["k"], "trades": r["n"], "wins": r["wins"], "total_r": r["r"], "pnl_usd": r["pnl"], **_ratios(r)}
            for r in rows]


def breakdowns(storage, run_id: str) -> dict[str, list[dict[str, Any]]]:
    """Closed trades by strategy, by the regime at the plan, and by symbol."""
    agg = _TRADE_AGG
    base = "FROM positions p WHERE p.status = 'closed' AND p.run_id = ?"
    q = storage.query
    by_regime = q(f"SELECT COALESCE(pl.regime, -1) AS k, {agg} FROM positions p LEFT JOIN plans pl "  # noqa: S608
                  "ON pl.run_id = p.run_id AND pl.plan_id = p.plan_id WHERE p.status = 'closed' AND p.run_id = ? "
                  "GROUP BY k ORDER BY k", (run_id,))
    for r in by_regime:
        r["k"] = Regime(r["k"]).name.lower() if r["k"] in Regime._value2member_map_ else "unknown"
    return {
        "strategy": _group_rows(q(f"SELECT p.strategy AS k, {agg} {base} GROUP BY k ORDER BY k", (run_id,)), "strategy"),  # noqa: S608
        "regime": _group_rows(by_regime, "regime"),
        "symbol": _group_rows(q(f"SELECT p.symbol AS k, {agg} {base} GROUP BY k ORDER BY k", (run_id,)), "symbol"),  # noqa: S608
    }


def rejects(storage, run_id: str) -> dict[str, dict[str, int]]:
    """Plans vetoed by risk/portfolio (by decision) and orders rejected by the venue rules (by reason code)."""
    vetoes = {r["decision"]: r["n"] for r in storage.query(
        "SELECT decision, COUNT(*) AS n FROM plans WHERE run_id = ? AND decision LIKE 'vetoed%' "
        "GROUP BY decision ORDER BY decision", (run_id,))}
    orders: dict[str, int] = {}
    for r in storage.query("SELECT reject_reason, COUNT(*) AS n FROM orders WHERE run_id = ? AND status = 'rejected' "
                           "GROUP BY reject_reason", (run_id,)):
        code = (r["reject_reason"] or "unknown").split(":")[0]
        orders[code] = orders.get(code, 0) + r["n"]
    return {"plans_vetoed": vetoes, "orders_rejected": dict(sorted(orders.items()))}


# ----------------------------------------------------------------- timeline
_BLOCKING = ("lock", "drawdown_stop", "kill_switch")


def _state_flags(state: dict[str, Any]) -> dict[str, Any]:
    return {
        "lock": state.get("lock_reason", "limits_ok") != "limits_ok",
        "lock_reason": state.get("lock_reason", "limits_ok"),
        "drawdown_stop": bool(state.get("dd_stopped")),
        "throttled": bool(state.get("throttled")),
        "kill_switch": bool(state.get("kill_switch")),
        "holds": tuple(sorted(state.get("holds") or ())),
    }


def timeline(storage, run_id: str, events: list[dict[str, Any]], first_ms: int | None,
             end_ms: int | None) -> dict[str, Any]:
    """Locks, drawdown stops, throttling, kill-switch, holds and operator commands (from the journal, in
    bar time), safe mode (from the run's events); and the spans during which new entries were blocked
    and safe mode was on, for shading the pictures."""
    entries: list[dict[str, Any]] = []
    spans: list[dict[str, Any]] = []
    open_spans: dict[str, int] = {}
    prev: dict[str, Any] | None = None
    last_ms = 0

    def flip(kind: str, on: bool, ts: int, label: str) -> None:
        if on and kind not in open_spans:
            open_spans[kind] = ts
        elif not on and kind in open_spans:
            spans.append({"kind": kind, "start_ms": open_spans.pop(kind), "end_ms": ts})
        entries.append({"ts_ms": ts, "what": label})

    rows = storage.iter_rows("SELECT ts_ms, event, body_json FROM journal WHERE run_id = ? AND kind = 'governance' "
                             "ORDER BY seq", (run_id,))
    for batch in rows:
        for ts_ms, event, body_json in batch:
            try:
                body = json.loads(body_json or "{}")
            except ValueError:
                continue
            state = body.get("state") or {}
            details = body.get("details") or {}
            # the bar clock (journaled since bar_ts_ms exists); paper runs before that: the wall clock
            ts = int(body["bar_ts_ms"] if "bar_ts_ms" in body else ts_ms or 0)
            last_ms = max(last_ms, ts)
            if event.startswith("command:"):
                status = details.get("status", "")
                entries.append({"ts_ms": ts, "what": f"operator {event.split(':', 1)[1]} ({status}) by "
                                f"{details.get('actor', '?')}: {details.get('comment', '')}".rstrip(": ")})
            flags = _state_flags(state)
            if prev is None:
                for kind in ("lock", "drawdown_stop", "kill_switch"):
                    if flags[kind]:
                        flip(kind, True, ts, f"{kind.replace('_', ' ')} in force at start"
                             + (f" ({flags['lock_reason']})" if kind == "lock" else ""))
                if flags["holds"]:
                    entries.append({"ts_ms": ts, "what": "held at start: " + ", ".join(flags["holds"])})
                prev = flags
                continue
            if flags["lock"] != prev["lock"]:
                flip("lock", flags["lock"], ts, f"daily lock engaged ({flags['lock_reason']})" if flags["lock"]
                     else "daily lock lifted")
            if flags["drawdown_stop"] != prev["drawdown_stop"]:
                flip("drawdown_stop", flags["drawdown_stop"], ts,
                     "drawdown stop (no new entries)" if flags["drawdown_stop"] else "drawdown stop reset")
            if flags["throttled"] != prev["throttled"]:
                entries.append({"ts_ms": ts, "what": "drawdown throttle on" if flags["throttled"]
                                else "drawdown throttle off"})
            if flags["kill_switch"] != prev["kill_switch"]:
                flip("kill_switch", flags["kill_switch"], ts, "kill-switch ON" + (" (automatic)" if details.get("auto")
                                                                                  else "") if flags["kill_switch"]
                     else "kill-switch off")
            for name in sorted(set(flags["holds"]) - set(prev["holds"])):
                why = " (automatic: " + str(details.get("error", "")) + ")" if details.get("automatic") else ""
                entries.append({"ts_ms": ts, "what": f"hold {name}{why}"})
            for name in sorted(set(prev["holds"]) - set(flags["holds"])):
                entries.append({"ts_ms": ts, "what": f"release {name}"})
            prev = flags
    for e in events:
        kind = e.get("kind")
        if kind in ("safe_mode_engaged", "safe_mode_released"):
            fields = e.get("fields") or {}
            ts = int(fields.get("ts_ms") or e["ts"] * 1000)
            last_ms = max(last_ms, ts)
            flip("safe_mode", kind == "safe_mode_engaged", ts, "safe mode on: " + str(fields.get("reason", ""))
                 if kind == "safe_mode_engaged" else "safe mode off")
        elif kind == "replay_daily_reset":
            fields = e.get("fields") or {}
            entries.append({"ts_ms": int(fields.get("ts_ms") or 0), "what": "replay daily reset: "
                            + ", ".join(str(a) for a in fields.get("actions") or ()) })
    end = end_ms if end_ms is not None else last_ms
    for kind, start in sorted(open_spans.items(), key=lambda kv: kv[1]):
        spans.append({"kind": kind, "start_ms": start, "end_ms": end})
    if first_ms is not None:  # before the first bar (ts 0: at start) is the first bar
        for sp in spans:
            sp["start_ms"] = max(sp["start_ms"], first_ms)
            sp["end_ms"] = max(sp["end_ms"], sp["start_ms"])
    entries.sort(key=lambda e: e["ts_ms"])
    spans.sort(key=lambda s: (s["start_ms"], s["kind"]))
    return {"entries": entries, "spans": spans}


# ------------------------------------------------------------------- series
def _bucket_ms(first_ms: int, last_ms: int, points: int) -> int:
    return max(1, math.ceil((last_ms - first_ms + 1) / max(1, points)))


def equity_series(storage, run_id: str, first_ms: int | None, last_ms: int | None,
                  points: int = MAX_POINTS) -> list[dict[str, Any]]:
    """The equity table downsampled in SQL to at most ``points`` time buckets: per bucket the last
    equity, cash, pnl and net exposure, the deepest dd_state, the highest max_dd_r and gross exposure."""
    if first_ms is None or last_ms is None:
        return []
    b = _bucket_ms(first_ms, last_ms, points)
    rows = storage.query(
        "SELECT (ts_ms - ?) / ? AS bucket, MAX(ts_ms) AS ts_ms, MIN(dd_state) AS dd_state_min, "
        "MAX(max_dd_r) AS max_dd_r, MAX(exposure_gross_pct) AS gross_pct_max FROM equity WHERE run_id = ? "
        "GROUP BY bucket ORDER BY bucket", (first_ms, b, run_id))
    last = storage.query(
        "SELECT (e.ts_ms - ?) / ? AS bucket, e.equity_usd, e.cash_usd, e.pnl_cum_r, e.exposure_net_pct FROM equity e "
        "WHERE e.run_id = ? AND e.rowid IN (SELECT MAX(rowid) FROM equity WHERE run_id = ? GROUP BY (ts_ms - ?) / ?)",
        (first_ms, b, run_id, run_id, first_ms, b))
    by_bucket = {r["bucket"]: r for r in last}
    out = []
    for r in rows:
        tail = by_bucket[r["bucket"]]
        out.append({"ts_ms": r["ts_ms"], "equity_usd": tail["equity_usd"], "cash_usd": tail["cash_usd"],
                    "pnl_cum_r": tail["pnl_cum_r"], "dd_state_min": r["dd_state_min"], "max_dd_r": r["max_dd_r"],
                    "gross_pct_max": r["gross_pct_max"], "net_pct": tail["exposure_net_pct"]})
    return out


class _Downsampler:
    """Per time bucket: the last close and the lowest low / highest high, fed chunk by chunk."""

    def __init__(self, first_ms: int, bucket_ms: int) -> None:
        self.first_ms, self.bucket_ms = first_ms, bucket_ms
        self.buckets: dict[int, list[float]] = {}

    def add(self, ts: np.ndarray, low: np.ndarray, high: np.ndarray, close: np.ndarray) -> None:
        ok = np.isfinite(close) & np.isfinite(low) & np.isfinite(high)
        if not ok.all():
            ts, low, high, close = ts[ok], low[ok], high[ok], close[ok]
        if len(ts) == 0:
            return
        keys = (ts - self.first_ms) // self.bucket_ms
        order = np.argsort(keys, kind="stable")
        keys, ts, low, high, close = keys[order], ts[order], low[order], high[order], close[order]
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        ends = np.r_[starts[1:], len(keys)] - 1
        lows = np.minimum.reduceat(low, starts)
        highs = np.maximum.reduceat(high, starts)
        for k, s, e, lo, hi in zip(keys[starts].tolist(), starts.tolist(), ends.tolist(), lows.tolist(), highs.tolist()):
            t, c = int(ts[e]), float(close[e])
            cur = self.buckets.get(k)
            if cur is None:
                self.buckets[k] = [t, c, lo, hi]
            else:
                if t >= cur[0]:
                    cur[0], cur[1] = t, c
                cur[2], cur[3] = min(cur[2], lo), max(cur[3], hi)

    def rows(self) -> list[dict[str, Any]]:
        return [{"ts_ms": v[0], "close": v[1], "low": v[2], "high": v[3]}
                for _, v in sorted(self.buckets.items())]


def data_files_of(args: str) -> list[str]:
    """The ``--data`` arguments of a replay's command line."""
    try:
        words = shlex.split(args or "")
    except ValueError:
        words = (args or "").split()
    out: list[str] = []
    taking = False
    for w in words:
        if w.startswith("--data="):
            out.append(w.split("=", 1)[1])
            taking = True
        elif w == "--data":
            taking = True
        elif w.startswith("-"):
            taking = False
        elif taking:
            out.append(w)
    return out


def price_series(storage, run_id: str, run: dict[str, Any], symbols: list[str], first_ms: int, last_ms: int,
                 points: int = MAX_POINTS) -> tuple[dict[str, list[dict[str, Any]]], str]:
    """Downsampled price of each symbol over the run and where it came from: a paper run's recorded
    session bars, a replay's ``--data`` files (read again, streamed). ``({}, why)`` when neither is there."""
    b = _bucket_ms(first_ms, last_ms, points)
    wanted = set(symbols)
    samplers = {s: _Downsampler(first_ms, b) for s in symbols}
    has_session = storage.query("SELECT COUNT(*) AS n FROM session_bars WHERE run_id = ?", (run_id,))[0]["n"]
    if has_session:
        for batch in storage.iter_rows("SELECT symbol, ts_ms, low, high, close FROM session_bars WHERE run_id = ? "
                                       "AND close IS NOT NULL ORDER BY seq", (run_id,)):
            cols = list(zip(*batch))
            sym = np.array(cols[0], dtype=object)
            ts = np.array(cols[1], dtype=np.int64)
            lo, hi, cl = (np.array(c, dtype=np.float64) for c in cols[2:5])
            for s in wanted & set(cols[0]):
                m = sym == s
                samplers[s].add(ts[m], lo[m], hi[m], cl[m])
        source = "the run's recorded session bars"
    else:
        data = data_files_of(run.get("args") or "")
        if run.get("feed") != "replay" or not data:
            return {}, "no price series: the run recorded no session bars and read no --data files"
        from prod_core.feeds.stream import open_data_args

        try:
            files = open_data_args(data, symbols)
        except Exception as exc:  # moved or deleted since the run
            return {}, f"no price series: the replay's data files cannot be read again ({exc})"
        for df in files:
            for part in df.parts:
                if part.symbol not in wanted:
                    continue
                for chunk in part.chunks():
                    o = chunk.ohlcv
                    in_run = (chunk.ts >= first_ms) & (chunk.ts <= last_ms)
                    samplers[part.symbol].add(chunk.ts[in_run], o[in_run, 2], o[in_run, 1], o[in_run, 3])
        source = "the replay's --data files: " + ", ".join(data)
    return {s: d.rows() for s, d in samplers.items() if d.buckets}, source


def fill_markers(storage, run_id: str, symbol: str, limit: int = MAX_MARKERS) -> Iterator[dict[str, Any]]:
    """Fills of one symbol for the price picture: entries and exits (evenly thinned past ``limit``)."""
    n = storage.query("SELECT COUNT(*) AS n FROM fills WHERE run_id = ? AND symbol = ?", (run_id, symbol))[0]["n"]
    step = max(1, math.ceil(n / limit))
    i = 0
    for batch in storage.iter_rows("SELECT ts_ms, side, price, reason FROM fills WHERE run_id = ? AND symbol = ? "
                                   "ORDER BY rowid", (run_id, symbol)):
        for ts_ms, side, price, reason in batch:
            if i % step == 0:
                yield {"ts_ms": ts_ms, "side": side, "price": price,
                       "role": "entry" if reason == "entry" else "exit", "reason": reason}
            i += 1


def write_series(path: Path, rows: Iterable[dict[str, Any]], columns: list[str]) -> int:
    """One CSV of a picture's series (the numbers the picture is drawn from)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(columns)
        for r in rows:
            w.writerow([r[c] for c in columns])
            n += 1
    return n
