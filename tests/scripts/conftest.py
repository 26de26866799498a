"""Builders for the maintenance-script tests: real SQLite files written through ``Storage``."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from prod_core.domain.types import Fill, FillReason, Order, OrderStatus, Position, Side
from prod_core.storage import Storage
from prod_core.testing.builders import close_write, open_write

REPO = Path(__file__).resolve().parents[2]
DAY = 86400.0


def run_script(name: str, *args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``scripts/<name>`` of this checkout with ``sys.executable`` from ``cwd``."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("DB_PATH", "DB_URL", "REPORTS_DIR", "LOGS_DIR", "ENV_FILE")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / name), *args],
        cwd=cwd, env=full_env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def add_run(
    st: Storage,
    run_id: str,
    *,
    age_days: float,
    trades: int = 2,
    open_position: bool = False,
    running: bool = False,
    events: int = 5,
) -> None:
    """One run that started ``age_days`` ago with plans, orders, fills, closed trades, equity, events, feed state."""
    start = time.time() - age_days * DAY
    st.start_run(run_id, mode="paper", feed="sim", config_hash="cfg", code_version="test", ts=start)
    st.set_feed_state(run_id, "sim", 1, start + 1)
    ms = int(start * 1000)
    for i in range(trades + (1 if open_position else 0)):
        pid, oid, pos_id = f"{run_id}-p{i}", f"{run_id}-o{i}", f"{run_id}-pos{i}"
        st.add_plan(
            run_id, plan_id=pid, ts_ms=ms + i, strategy="trend_following", symbol="BTC/USDT", side=Side.BUY,
            entry=100.0, stop=95.0, target=110.0, reason="test", regime=1, decision="approved", qty=1.0,
            risk_usd=5.0, nominal_r_usd=5.0, status="filled",
        )  # fmt: skip
        st.add_order(run_id, Order(oid, pid, ms + i, "BTC/USDT", Side.BUY, 1.0, "market", FillReason.ENTRY,
                                   OrderStatus.FILLED))  # fmt: skip
        entry = Fill(f"{run_id}-f{i}", oid, ms + i, "BTC/USDT", Side.BUY, 1.0, 100.0, 0.05, FillReason.ENTRY)
        pos = Position(pos_id, pid, "trend_following", "BTC/USDT", Side.BUY, 1.0, 100.0, 95.0, 110.0, ms + i, 5.0,
                       0.05, 100.0)  # fmt: skip
        st.commit_account(open_write(entry, pos, run_id=run_id))
        if i < trades:
            exit_fill = Fill(f"{run_id}-x{i}", oid, ms + i + 60_000, "BTC/USDT", Side.SELL, 1.0, 110.0, 0.05,
                             FillReason.TARGET)  # fmt: skip
            st.commit_account(close_write(exit_fill, pos_id, run_id=run_id, pnl_usd=9.9, trade_r=1.98))
    for i in range(3):
        st.add_equity(
            run_id, ts_ms=ms + i * 1000, equity_usd=10_000.0 + i, cash_usd=9_000.0, pnl_cum_r=0.1 * i,
            dd_state=0.0, max_dd_r=0.0, exposure_gross_pct=0.1, exposure_net_pct=0.1,
        )  # fmt: skip
    for i in range(events):
        st.add_event(run_id, ts=start + i, kind="info", severity="info", component="runner",
                     message=f"event {i} " + "x" * 300, fields={"i": i})  # fmt: skip
    if running:
        st.heartbeat(run_id, time.time())
        st.flush()
    else:
        st.end_run(run_id, status="stopped", ts=start + 3600)


def account_rows(db: Path) -> dict[str, list]:
    """Rows of the account-level tables, to prove they are never touched."""
    conn = sqlite3.connect(db)
    try:
        return {
            t: conn.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall()  # noqa: S608
            for t in ("governance_state", "audit", "commands")
        }
    finally:
        conn.close()
