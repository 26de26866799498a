"""The exchange is down when the runner starts: the loop keeps cycling (fresh heartbeat), the feed
is degraded (0, not paused), «зарегистрирован» comes only once connected, --max-seconds holds."""

from __future__ import annotations

import time
from pathlib import Path

import yaml

from prod_core.testing.fake_exchange import FakeBinance
from tests.runner.helpers import PaperProcess, free_port


def _down_exchange_config(config_dir: Path, port: int, ws_port: int) -> None:
    path = config_dir / "symbols.yaml"
    cfg = yaml.safe_load(path.read_text())
    cfg["exchange"].update({"id": "binance", "timeframe": "1s", "sandbox": False,
                            "api_url": f"http://127.0.0.1:{port}", "ws_url": f"ws://127.0.0.1:{ws_port}"})
    cfg["symbols"] = [dict(s, kind="spot") for s in cfg["symbols"] if s["symbol"] in ("BTC/USDT", "ETH/USDT")]
    path.write_text(yaml.safe_dump(cfg))


def _wait(predicate, timeout: float, what: str, proc: PaperProcess):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        assert proc.proc.poll() is None, f"runner exited while waiting for {what}:\n{proc.output}"
        time.sleep(0.1)
    raise AssertionError(f"no {what} within {timeout} s:\n{proc.output}")


def test_exchange_down_at_start_cycles_degraded_then_registers(tmp_path: Path, config_dir: Path) -> None:
    """Down at start: feed_health 0 and a fresh runner_last_cycle_ts while it retries; the exchange
    comes up on the same ports: «зарегистрирован», health 1; Ctrl+C stops cleanly."""
    port, ws_port = free_port(), free_port()
    _down_exchange_config(config_dir, port, ws_port)
    proc = PaperProcess(tmp_path, "--max-seconds", "300", "--linger", "0",
                        env={"CONFIG_DIR": str(config_dir), "FEED": "ccxt"})
    fake = None
    try:
        proc.wait_for_line("биржа не отвечает")
        assert proc.sample("feed_health", feed="ccxt") == 0
        first = proc.sample("runner_last_cycle_ts")
        _wait(lambda: proc.sample("runner_last_cycle_ts") > first + 1.0, 120, "a fresh heartbeat", proc)
        assert time.time() - proc.sample("runner_last_cycle_ts") < 5.0
        assert "Фид ccxt зарегистрирован" not in proc.output
        fake = FakeBinance({"BTC/USDT": 65000.0, "ETH/USDT": 3400.0}, max_lifetime_s=120.0, port=port,
                           ws_port=ws_port).start()
        proc.wait_for_line("Фид ccxt зарегистрирован")
        _wait(lambda: proc.sample("feed_health", feed="ccxt") == 1, 120, "feed_health 1", proc)
        proc.interrupt()
        assert proc.wait() == 0, proc.output
    finally:
        proc.kill()
        if fake is not None:
            fake.stop()
    assert proc.output.count("Фид ccxt зарегистрирован") == 1


def test_max_seconds_holds_while_the_exchange_is_down(tmp_path: Path, config_dir: Path) -> None:
    """--max-seconds 4 with the exchange down the whole time: a clean stop, not a 30 s hang."""
    _down_exchange_config(config_dir, free_port(), free_port())
    t0 = time.time()
    proc = PaperProcess(tmp_path, "--max-seconds", "4", "--linger", "0",
                        env={"CONFIG_DIR": str(config_dir), "FEED": "ccxt"})
    rc = proc.wait()
    elapsed = time.time() - t0
    assert rc == 0, proc.output
    assert elapsed < 4 + 8, f"ran {elapsed:.1f} s for --max-seconds 4"
    assert "Фид ccxt зарегистрирован" not in proc.output and "Paper-loop остановлен" in proc.output


def test_wrong_timeframe_or_unknown_symbol_exits_2_naming_the_setting(tmp_path: Path, config_dir: Path) -> None:
    """A timeframe the exchange lacks (7m) or a symbol it does not list: exit 2 at start with one
    error line naming the setting, not an endless retry."""
    from prod_core.testing.fake_exchange import running_fake

    with running_fake({"BTC/USDT": 65000.0, "ETH/USDT": 3400.0}, max_lifetime_s=60.0) as fake:
        for case, edit, needle in (
            ("timeframe", {"timeframe": "7m"}, "exchange.timeframe"),
            ("symbol", {"symbols": [{"symbol": "DOGE/USDT", "kind": "spot"}]}, "DOGE/USDT"),
        ):
            _down_exchange_config(config_dir, 0, 0)
            path = config_dir / "symbols.yaml"
            cfg = yaml.safe_load(path.read_text())
            cfg["exchange"].update({"api_url": fake.url, "ws_url": fake.ws_url, **{k: v for k, v in edit.items()
                                                                                   if k != "symbols"}})
            if "symbols" in edit:
                cfg["symbols"] = edit["symbols"]
            path.write_text(yaml.safe_dump(cfg))
            proc = PaperProcess(tmp_path / case, "--max-seconds", "30", "--linger", "0",
                                env={"CONFIG_DIR": str(config_dir), "FEED": "ccxt"})
            assert proc.wait() == 2, proc.output
            errors = [line for line in proc.lines if " ERROR " in line]
            assert len(errors) >= 1 and needle in errors[-1] and "Traceback" not in proc.output, proc.output
            assert "Фид ccxt зарегистрирован" not in proc.output
