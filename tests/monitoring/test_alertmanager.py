"""configs/alertmanager/config.sample.yml + scripts/render_alertmanager_config.sh.

Rendered config passes `amtool check-config`; missing/malformed values and leftover
placeholders are refused; a real Alertmanager with the rendered config delivers to a
(fake, loopback) Telegram Bot API and applies the inhibit rule.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from tests.conftest import require_tool
from tests.monitoring import AM_SAMPLE, RENDER_SCRIPT, alert_rules

TOKEN = "123456789:AAE-test_token"
CHAT = "-1001234567890"


def _render(out: Path, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("TELEGRAM_")}
    base.pop("ALERTMANAGER_SAMPLE", None)
    base.update(env)
    return subprocess.run(["bash", str(RENDER_SCRIPT), str(out)], env=base, capture_output=True, text=True, timeout=60)


@pytest.fixture(autouse=True)
def _tools() -> None:
    require_tool("envsubst")
    require_tool("amtool")


def test_sample_is_a_template_with_the_runbook_variables() -> None:
    text = AM_SAMPLE.read_text(encoding="utf-8")
    assert "${TELEGRAM_BOT_TOKEN}" in text and "${TELEGRAM_CHAT_ID}" in text


def test_rendered_sample_passes_amtool_check_config(tmp_path: Path) -> None:
    out = tmp_path / "am" / "alertmanager.yml"
    res = _render(out, TELEGRAM_BOT_TOKEN=TOKEN, TELEGRAM_CHAT_ID=CHAT)
    assert res.returncode == 0, res.stderr
    text = out.read_text(encoding="utf-8")
    assert "${" not in text
    cfg = yaml.safe_load(text)
    tg = cfg["receivers"][0]["telegram_configs"][0]
    assert tg["bot_token"] == TOKEN and tg["chat_id"] == int(CHAT)
    assert tg["api_url"] == "https://api.telegram.org"
    check = subprocess.run([require_tool("amtool"), "check-config", str(out)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert TOKEN not in res.stdout + res.stderr  # the token is never echoed
    assert (out.parent.stat().st_mode & 0o077) == 0  # private directory


def test_every_alert_routes_to_telegram(tmp_path: Path) -> None:
    out = tmp_path / "alertmanager.yml"
    assert _render(out, TELEGRAM_BOT_TOKEN=TOKEN, TELEGRAM_CHAT_ID=CHAT).returncode == 0
    for name in sorted({r["alert"] for r in alert_rules()}):
        res = subprocess.run([require_tool("amtool"), "config", "routes", "test", f"--config.file={out}",
                              f"alertname={name}"], capture_output=True, text=True)
        assert res.returncode == 0 and res.stdout.strip() == "telegram", (name, res.stdout, res.stderr)


@pytest.mark.parametrize("missing", ["TELEGRAM_BOT_TOKEN", "TELEGRAM_CHAT_ID"])
def test_missing_variable_is_refused(tmp_path: Path, missing: str) -> None:
    out = tmp_path / "alertmanager.yml"
    env = {"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_CHAT_ID": CHAT}
    env[missing] = ""  # set but empty counts as missing
    res = _render(out, **env)
    assert res.returncode != 0
    assert missing in res.stderr
    assert not out.exists()
    del env[missing]  # unset entirely
    res = _render(out, **env)
    assert res.returncode != 0 and missing in res.stderr and not out.exists()


@pytest.mark.parametrize(
    "env",
    [
        {"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_CHAT_ID": "@my_channel"},
        {"TELEGRAM_BOT_TOKEN": "not a token'", "TELEGRAM_CHAT_ID": CHAT},
        {"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_CHAT_ID": CHAT, "TELEGRAM_API_URL": "ftp://x"},
    ],
    ids=["chat-id", "token", "api-url"],
)
def test_malformed_values_are_refused(tmp_path: Path, env: dict) -> None:
    out = tmp_path / "alertmanager.yml"
    res = _render(out, **env)
    assert res.returncode != 0, res.stdout
    assert not out.exists()


def test_leftover_placeholder_is_refused(tmp_path: Path) -> None:
    sample = tmp_path / "sample.yml"
    sample.write_text(AM_SAMPLE.read_text(encoding="utf-8").replace(
        "resolve_timeout: 5m", "resolve_timeout: 5m\n  smtp_auth_password: '${SMTP_PASSWORD}'"), encoding="utf-8")
    out = tmp_path / "alertmanager.yml"
    res = _render(out, TELEGRAM_BOT_TOKEN=TOKEN, TELEGRAM_CHAT_ID=CHAT, ALERTMANAGER_SAMPLE=str(sample))
    assert res.returncode != 0
    assert "unrendered" in res.stderr and "SMTP_PASSWORD" in res.stderr
    assert not out.exists()


def test_config_rejected_by_amtool_is_refused(tmp_path: Path) -> None:
    sample = tmp_path / "sample.yml"
    sample.write_text(AM_SAMPLE.read_text(encoding="utf-8").replace("receiver: telegram", "receiver: nobody", 1),
                      encoding="utf-8")
    out = tmp_path / "alertmanager.yml"
    res = _render(out, TELEGRAM_BOT_TOKEN=TOKEN, TELEGRAM_CHAT_ID=CHAT, ALERTMANAGER_SAMPLE=str(sample))
    assert res.returncode != 0 and "amtool" in res.stderr
    assert not out.exists()


# ------------------------------------------------------------ real Alertmanager e2e
class _FakeTelegram(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _TelegramHandler)
        self.messages: list[dict] = []
        self.paths: list[str] = []


class _TelegramHandler(BaseHTTPRequestHandler):
    server: _FakeTelegram

    def do_POST(self) -> None:  # noqa: N802 - http.server API
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        self.server.paths.append(self.path)
        if self.path.endswith("/sendMessage"):
            if "json" in (self.headers.get("Content-Type") or ""):
                payload = json.loads(body)
            else:
                from urllib.parse import parse_qs
                payload = {k: v[0] for k, v in parse_qs(body).items()}
            self.server.messages.append(payload)
            result = {"message_id": len(self.server.messages), "date": int(time.time()),
                      "chat": {"id": int(CHAT), "type": "supergroup"}, "text": payload.get("text", "")}
        else:  # getMe
            result = {"id": 1, "is_bot": True, "first_name": "crupto", "username": "crupto_bot"}
        data = json.dumps({"ok": True, "result": result}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST  # noqa: N815

    def log_message(self, *_args) -> None:
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, deadline: float) -> None:
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not come up")


def test_real_alertmanager_delivers_to_telegram_and_inhibits(tmp_path: Path) -> None:
    # Debian names the binary prometheus-alertmanager; upstream tarballs alertmanager
    binary = shutil.which("alertmanager") or require_tool("prometheus-alertmanager")
    fake = _FakeTelegram()
    threading.Thread(target=fake.serve_forever, daemon=True).start()
    # the shipped template, with a 1 s group_wait so the test is quick
    sample = tmp_path / "sample.yml"
    sample.write_text(AM_SAMPLE.read_text(encoding="utf-8").replace("group_wait: 10s", "group_wait: 1s"),
                      encoding="utf-8")
    config = tmp_path / "alertmanager.yml"
    res = _render(config, TELEGRAM_BOT_TOKEN=TOKEN, TELEGRAM_CHAT_ID=CHAT, ALERTMANAGER_SAMPLE=str(sample),
                  TELEGRAM_API_URL=f"http://127.0.0.1:{fake.server_address[1]}")
    assert res.returncode == 0, res.stderr
    port = _free_port()
    proc = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_http(f"{base}/-/ready", time.time() + 120)
        now = datetime.now(timezone.utc).isoformat()
        rules = {(r["alert"], r["labels"].get("cause")): r for r in alert_rules()}
        alerts = []
        for name, cause in (("MetricsDeadman", None), ("RunnerHeartbeatLost", "metrics_absent")):
            rule = rules[(name, cause)]
            labels = {"alertname": name, **rule["labels"]}
            alerts.append({"labels": labels, "annotations": {**rule["annotations"], "summary": f"{name} test"},
                           "startsAt": now})
        req = urllib.request.Request(f"{base}/api/v2/alerts", data=json.dumps(alerts).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        urllib.request.urlopen(req, timeout=5).close()
        deadline = time.time() + 120  # an upper bound: the loop ends at the first delivered message
        while time.time() < deadline and not fake.messages:
            time.sleep(0.1)
        assert fake.messages, f"nothing delivered; requests: {fake.paths}"
        time.sleep(3)  # RunnerHeartbeatLost's group would have flushed by now
        texts = [m.get("text", "") for m in fake.messages]
        assert any("MetricsDeadman" in t for t in texts), texts
        assert not any("RunnerHeartbeatLost" in t for t in texts), texts  # inhibited
        msg = fake.messages[0]
        assert str(msg.get("chat_id")) == CHAT
        assert "Проверить Prometheus scraping и exporter" in msg["text"]
        assert "docs/RUNBOOK.md" in msg["text"]
        assert all(p.startswith(f"/bot{TOKEN}/") for p in fake.paths), fake.paths
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        fake.shutdown()
        fake.server_close()
