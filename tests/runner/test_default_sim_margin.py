"""Ten minutes of the default sim market (2,400 live bars a symbol, run at a faster pace), shipped configs.

- fewer than 2% of the orders are rejected, none for margin or cash;
- every funding time a perp position lived through is charged exactly once, at that instant, in the
  journal and in summary.md; nothing else is charged;
- the account reconciles with its journal (``cli reconcile``).

The default 8 h interval gives five funding times in these 40 h of bars, and the default strategies
hold perps for minutes (the drawdown stop also halts entries after a losing streak), so a run may
straddle none of them; the second case shortens only the funding interval (15 min, 160 funding times)
so that funding is certainly charged. The gross exposure cap under margin is shown deterministically in
tests/runner/test_pipeline.py.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import pytest

from prod_core.storage import Storage
from tests.conftest import REPO
from tests.runner.helpers import PaperProcess, cli

LIVE_BARS = 2_400  # 10 minutes of the default 0.25 s bars
HISTORY_BARS = 300
PERPS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")


def _configs(tmp_path: Path, interval_h: float | None) -> Path:
    cfg = tmp_path / "configs"
    shutil.copytree(REPO / "configs", cfg)
    if interval_h is not None:
        path = cfg / "symbols.yaml"
        text = path.read_text(encoding="utf-8")
        assert text.count("    leverage: 3\n") == len(PERPS)
        path.write_text(text.replace("    leverage: 3\n", f"    leverage: 3\n    funding_interval_h: {interval_h}\n"),
                        encoding="utf-8")
    return cfg


@pytest.mark.parametrize("interval_h", [None, 0.25], ids=["default_8h", "funding_every_15min"])
def test_a_ten_minute_default_sim_run(tmp_path: Path, interval_h: float | None) -> None:
    cfg = _configs(tmp_path, interval_h)
    run = PaperProcess(tmp_path, "--bar-interval", "0.02", "--linger", "0", "--config-dir", str(cfg))
    try:
        run.wait_for_line("Фид sim зарегистрирован")
        deadline = time.time() + 600
        while run.sample("bars_total", symbol="BTC/USDT") < HISTORY_BARS + LIVE_BARS:
            assert time.time() < deadline, "the sim did not deliver 10 minutes of bars"
            time.sleep(0.5)
        reject_rate = run.sample("execution_reject_rate")
        run.interrupt()
        assert run.wait() == 0
    finally:
        run.kill()
    assert reject_rate < 0.02
    interval_ms = int(round((interval_h or 8.0) * 3_600_000))
    with Storage(str(run.db)) as storage:
        (run_row,) = storage.list_runs()
        run_id = run_row["run_id"]
        orders = storage.orders(run_id)
        positions = storage.closed_trades(run_id) + storage.open_positions("paper")
        journal = storage.journal("paper")
        last_ts = {r["symbol"]: r["ts_ms"] for r in storage.session_bars(run_id)}
    ended = [o for o in orders if o["status"] in ("filled", "rejected")]
    rejected = [o for o in ended if o["status"] == "rejected"]
    assert len(ended) >= 10 and len(rejected) / len(ended) < 0.02
    assert not [o for o in rejected if o["reject_reason"].startswith(("insufficient_margin", "insufficient_cash"))]

    fundings = [e for e in journal if e["kind"] == "funding"]
    assert all(e["ts_ms"] % interval_ms == 0 for e in fundings)  # at the funding instants only
    charged = sorted((e["position_id"], e["ts_ms"]) for e in fundings)
    held = []
    for p in positions:
        if p["symbol"] not in PERPS:
            continue
        end = p["ts_close_ms"] if p["status"] == "closed" else last_ts[p["symbol"]]
        t = (p["ts_open_ms"] // interval_ms + 1) * interval_ms
        while t <= end:
            held.append((p["position_id"], t))
            t += interval_ms
    assert charged == sorted(held), "each funding time a perp position lived through, charged once"
    if interval_h is not None:
        assert len(fundings) >= 3

    summary = (tmp_path / "reports" / f"run_{run_id}" / "summary.md").read_text(encoding="utf-8")
    if fundings:
        total = re.search(r"^\| total \| (\d+) \| (-?[\d.]+) \|", summary.split("## Funding")[1], re.M)
        assert total is not None, summary
        assert int(total.group(1)) == len(fundings)
        assert float(total.group(2)) == pytest.approx(sum(e["fee_usd"] for e in fundings), abs=1e-4)
    else:
        assert "No funding was settled" in summary
    assert "## Execution by symbol" in summary
    assert "| fill model | market (spread 2.0 bps, impact 0.5, participation 10.0%" in summary
    manifest = json.loads((tmp_path / "reports" / f"run_{run_id}" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["execution"]["fill_model"] == "market" and manifest["funding_source"] == "SimFunding"
    assert manifest["instruments"]["BTC/USDT"]["leverage"] == 3.0
    rec = cli(run.db, "reconcile")
    assert rec.returncode == 0, rec.stdout + rec.stderr
