"""A whole paper run on the ccxt feeds against the fake exchange never calls an order endpoint.

The runner runs until the fake exchange has seen every request the test asserts on and the feed
is registered (no fixed wall-clock window: under load start-up alone takes seconds), then stops
on SIGINT like an operator's Ctrl+C; everything the exchange saw up to the clean stop is checked."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from prod_core.testing.fake_exchange import running_fake
from prod_core.testing.waiting import EVENT_TIMEOUT_S, wait_until

REPO = Path(__file__).resolve().parents[2]
FAKE_LIFETIME_S = 3 * EVENT_TIMEOUT_S  # the fake outlives the longest wait plus the stop


def _run_until(tmp_path: Path, config_dir: Path, feed: str, env: dict[str, str], seen: Callable[[], object],
               what: str) -> None:
    """Run the paper loop on ``feed`` until ``seen()`` and the feed's registration line, then SIGINT it;
    a clean stop (exit 0) is asserted. ``--max-seconds`` only bounds a runner the test lost."""
    out_path = tmp_path / "runner.out"
    with open(out_path, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "prod_core.runner", "--feed", feed, "--max-seconds", str(3 * EVENT_TIMEOUT_S),
             "--linger", "0", "--port", "0", "--db", str(tmp_path / "run.db"), "--config-dir", str(config_dir)],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, text=True,
        )
    output = lambda: out_path.read_text(errors="replace")[-4000:]  # noqa: E731
    try:
        wait_until(lambda: f"Фид {feed} зарегистрирован" in out_path.read_text(errors="replace") and seen(),
                   EVENT_TIMEOUT_S, f"{what} and the feed registered", proc=proc, output=output)
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=EVENT_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert rc == 0, output()
PUBLIC = {"/api/v3/exchangeInfo", "/api/v3/klines", "/api/v3/ticker/24hr", "/api/v3/depth",
          "/fapi/v1/exchangeInfo", "/fapi/v1/klines", "/fapi/v1/depth", "/fapi/v1/fundingRate"}


@pytest.mark.parametrize(("feed", "kind", "timeframe"), [
    ("ccxt", "spot", "1s"), ("ccxt_ws", "spot", "1s"),
    ("ccxt", "perp", "1m"), ("ccxt_ws", "perp", "1m"),  # Binance futures have no 1s candles
])
def test_paper_run_only_reads_market_data(tmp_path, config_dir, feed, kind, timeframe):
    prefix = "/api/v3/" if kind == "spot" else "/fapi/v1/"
    with running_fake({"BTC/USDT": 65000.0, "ETH/USDT": 3400.0}, max_lifetime_s=FAKE_LIFETIME_S) as fake:
        sym_path = config_dir / "symbols.yaml"
        cfg = yaml.safe_load(sym_path.read_text())
        cfg["exchange"].update({"id": "binance", "timeframe": timeframe, "sandbox": False, "api_url": fake.url,
                                "ws_url": fake.ws_url})
        cfg["symbols"] = [dict(s, kind=kind) for s in cfg["symbols"] if s["symbol"] in ("BTC/USDT", "ETH/USDT")]
        sym_path.write_text(yaml.safe_dump(cfg))
        env = {k: v for k, v in os.environ.items() if k not in ("FEED", "EXECUTION", "MODE")}
        env.update({
            "PYTHONPATH": str(REPO), "ENV_FILE": str(tmp_path / "no.env"), "REPORTS_DIR": str(tmp_path / "reports"),
            "LOGS_DIR": str(tmp_path / "logs"), "EXCHANGE_API_KEY": "", "EXCHANGE_API_SECRET": "",
        })
        wanted = {prefix + "exchangeInfo", prefix + "klines"} | ({"/fapi/v1/fundingRate"} if kind == "perp" else set())

        def seen() -> bool:
            got = {r.path for r in fake.rest_requests()} >= wanted
            return got and (feed != "ccxt_ws" or any(r.port == fake.ws_port for r in list(fake.requests)))

        _run_until(tmp_path, config_dir, feed, env, seen, f"requests {sorted(wanted)}"
                   + (" and a websocket" if feed == "ccxt_ws" else ""))
        rest = [r.path for r in fake.rest_requests()]
        ws = [r.path for r in fake.requests if r.port == fake.ws_port]
    assert prefix + "klines" in rest and prefix + "exchangeInfo" in rest
    assert set(rest) <= PUBLIC, f"non market-data endpoints called: {set(rest) - PUBLIC}"
    assert all(p.startswith(prefix) for p in rest), rest  # a perp reads the contract market only
    assert not any("order" in p.lower() and not p.endswith("/depth") for p in rest)
    # settled funding rates are read for the perps (the paper broker charges funding), never for spot
    assert ("/fapi/v1/fundingRate" in rest) is (kind == "perp")
    if feed == "ccxt_ws":
        assert ws and all(p.startswith("/stream/" if kind == "spot" else "/fstream/") for p in ws), ws


@pytest.mark.parametrize("feed", ["ccxt", "ccxt_ws"])
def test_paper_run_on_bybit_perps_reads_linear_market_data_only(tmp_path, config_dir, feed):
    from prod_core.testing.fake_bybit import running_fake_bybit

    with running_fake_bybit({"BTC/USDT": 65000.0, "ETH/USDT": 3400.0}, max_lifetime_s=FAKE_LIFETIME_S) as fake:
        sym_path = config_dir / "symbols.yaml"
        cfg = yaml.safe_load(sym_path.read_text())
        cfg["exchange"].update({"id": "bybit", "timeframe": "1m", "sandbox": False, "api_url": fake.url,
                                "ws_url": fake.ws_url})
        cfg["symbols"] = [dict(s, kind="perp") for s in cfg["symbols"] if s["symbol"] in ("BTC/USDT", "ETH/USDT")]
        sym_path.write_text(yaml.safe_dump(cfg))
        env = {k: v for k, v in os.environ.items() if k not in ("FEED", "EXECUTION", "MODE")}
        env.update({
            "PYTHONPATH": str(REPO), "ENV_FILE": str(tmp_path / "no.env"), "REPORTS_DIR": str(tmp_path / "reports"),
            "LOGS_DIR": str(tmp_path / "logs"), "EXCHANGE_API_KEY": "", "EXCHANGE_API_SECRET": "",
        })

        def seen() -> bool:
            got = any(r.path == "/v5/market/funding/history" for r in fake.rest_requests())
            return got and (feed != "ccxt_ws" or any(r.port == fake.ws_port for r in list(fake.requests)))

        _run_until(tmp_path, config_dir, feed, env, seen, "a funding-history request"
                   + (" and a websocket" if feed == "ccxt_ws" else ""))
        rest = fake.rest_requests()
        ws = {r.path for r in fake.requests if r.port == fake.ws_port}
    paths = {r.path for r in rest}
    assert paths <= {"/v5/market/instruments-info", "/v5/market/kline", "/v5/market/funding/history"}
    assert "/v5/market/funding/history" in paths  # the perps' settled funding rates
    assert {r.query.get("category") for r in rest} == {"linear"}
    if feed == "ccxt_ws":
        assert ws == {"/stream/v5/public/linear"}
