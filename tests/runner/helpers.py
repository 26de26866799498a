"""Run the real paper loop as a subprocess (scripts/run_paper.sh) in a temp workspace."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from prod_core.testing.waiting import EVENT_TIMEOUT_S, wait_until

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PaperProcess:
    """`scripts/run_paper.sh` in its own process group, output collected line by line."""

    def __init__(self, tmp: Path, *args: str, env: dict[str, str] | None = None, port: int | None = None) -> None:
        self.tmp = tmp
        self.port = port or free_port()
        self.db = tmp / "crupto.db"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("ALERT_TEST_") and k != "DB_URL"}
        full_env.update(
            PYTHON=sys.executable,
            ENV_FILE=str(tmp / "no.env"),
            REPORTS_DIR=str(tmp / "reports"),
            LOGS_DIR=str(tmp / "logs"),
            DB_PATH=str(self.db),
            PROMETHEUS_PORT=str(self.port),
        )
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [str(REPO / "scripts" / "run_paper.sh"), *args],
            cwd=REPO,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            self._queue.put(line)

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for_line(self, text: str, timeout: float = EVENT_TIMEOUT_S) -> str:
        deadline = time.time() + timeout
        while time.time() < deadline:
            for line in list(self.lines):
                if text in line:
                    return line
            if self.proc.poll() is not None and not self._reader.is_alive():  # exited, all its output read
                time.sleep(0.1)
                for line in list(self.lines):
                    if text in line:
                        return line
                raise AssertionError(f"process exited ({self.proc.returncode}) before {text!r}:\n{self.output}")
            time.sleep(0.05)
        raise AssertionError(f"no {text!r} within {timeout}s:\n{self.output}")

    def scrape(self) -> dict[str, list]:
        body = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5).read().decode()
        return {fam.name: fam for fam in text_string_to_metric_families(body)}

    def sample(self, name: str, **labels: str) -> float:
        families = self.scrape()
        for fam in families.values():
            for s in fam.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    return s.value
        raise AssertionError(f"{name}{labels} not exported")

    def sample_or_none(self, name: str, **labels: str) -> float | None:
        """``sample`` for a poll: None while the metric is not exported yet."""
        try:
            return self.sample(name, **labels)
        except AssertionError:
            return None

    def wait_for(self, predicate, what: str, timeout: float = EVENT_TIMEOUT_S):
        """Poll ``predicate`` (e.g. a metric or DB condition) while this runner is up; its value once truthy."""
        return wait_until(predicate, timeout, what, interval=0.2, proc=self.proc, output=lambda: self.output[-4000:])

    def interrupt(self) -> None:
        """Ctrl+C in a terminal: SIGINT to the whole foreground process group."""
        os.killpg(self.proc.pid, signal.SIGINT)

    def wait(self, timeout: float = EVENT_TIMEOUT_S) -> int:
        try:
            rc = self.proc.wait(timeout=timeout)
        finally:
            self.kill()
        self._reader.join(timeout=5)
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)


def cli(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "prod_core.cli", "--db", str(db), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "ENV_FILE": "/nonexistent"},
    )


def active_governance(config_dir: Path, **execution) -> None:
    """Strategies that trade often, limits that never stop them (many plans to compare);
    ``execution`` keys are set on the execution section."""
    import yaml

    path = config_dir / "governance.yaml"
    gov = yaml.safe_load(path.read_text())
    gov["strategies"]["trend_following"].update(fast_bars=3, slow_bars=8, stop_atr=1.0, target_atr=1.5)
    gov["strategies"]["mean_reversion"].update(lookback_bars=10, entry_z=1.0)
    gov["enable_map"] = {k: ["trend_following", "mean_reversion"] for k in ("calm", "trend_up", "trend_down", "volatile")}
    gov["daily_lock"].update(max_trades=100_000, max_consecutive_losses=100_000, max_daily_loss_r=1000.0)
    gov["drawdown"].update(throttle_at_r=-500.0, no_entries_at_r=-1000.0, critical_max_dd_r=1000.0)
    gov["execution"].update(execution)
    path.write_text(yaml.safe_dump(gov, sort_keys=False))
