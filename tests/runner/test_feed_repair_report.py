"""A paper run on an exchange that serves malformed bars: the log gives the true count of rejected
bars, the metric and summary.md list them by kind with the repairs, and no bar is missing."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from pathlib import Path

import yaml

from tests.feeds.test_feed_repair import _FlakyBinance
from tests.runner.helpers import PaperProcess


def test_paper_run_repairs_malformed_bars_and_reports_them(tmp_path: Path, config_dir: Path) -> None:
    """Malformed history and live bars (5%): one log line per burst with the true count, the same
    counts in data_anomalies_total and summary.md, repairs reported, the recorded series gap-free."""
    fake = _FlakyBinance({"BTC/USDT": 65000.0, "ETH/USDT": 3400.0}, max_lifetime_s=120.0).start()
    try:
        path = config_dir / "symbols.yaml"
        cfg = yaml.safe_load(path.read_text())
        cfg["exchange"].update({"id": "binance", "timeframe": "1s", "sandbox": False, "api_url": fake.url,
                                "ws_url": fake.ws_url})
        cfg["symbols"] = [dict(s, kind="spot") for s in cfg["symbols"] if s["symbol"] in ("BTC/USDT", "ETH/USDT")]
        path.write_text(yaml.safe_dump(cfg))
        proc = PaperProcess(tmp_path, "--max-seconds", "300", "--linger", "0",
                            env={"CONFIG_DIR": str(config_dir), "FEED": "ccxt"})
        try:
            proc.wait_for_line("отклонено баров")
            deadline = time.time() + 120  # the repairs follow the rejections (re-requested with backoff)
            while not re.search(r"восстановлено всего [1-9]", proc.output):
                assert time.time() < deadline and proc.proc.poll() is None, proc.output
                time.sleep(0.1)
            rejected = sum(s.value for s in proc.scrape()["data_anomalies"].samples
                           if s.name == "data_anomalies_total")
            assert rejected > 0
            proc.interrupt()
            assert proc.wait() == 0, proc.output
        finally:
            proc.kill()
    finally:
        fake.stop()
    logged = sum(int(m.group(1)) for m in re.finditer(r"Фид ccxt: отклонено баров (\d+)", proc.output))
    run_dir = next((tmp_path / "reports").glob("run_*"))
    summary = (run_dir / "summary.md").read_text(encoding="utf-8")
    assert "Data anomalies" in summary and "high_below_low" in summary and "nan" in summary, summary
    assert re.search(r"repaired \d+", summary), summary
    with sqlite3.connect(proc.db) as conn:
        (fields,) = conn.execute("SELECT fields_json FROM events WHERE kind = 'run_stopped'").fetchone()
        bars = conn.execute("SELECT symbol, ts_ms FROM session_bars ORDER BY seq").fetchall()
    stopped = json.loads(fields)
    total = sum(stopped["anomalies"].values())
    assert logged == total, (logged, total)  # every rejected bar is in exactly one log line
    assert stopped["repairs"]["repaired"] > 0 and stopped["repairs"]["given_up"] == 0, stopped["repairs"]
    for symbol in ("BTC/USDT", "ETH/USDT"):
        ts = [t for s, t in bars if s == symbol]
        assert ts == list(range(ts[0], ts[-1] + 1000, 1000)), f"{symbol}: a hole or a double in the received bars"
