"""fetch-history against a local fake Binance: pagination, resume, errors, CLI, and replay of its output."""

from __future__ import annotations

import io
import random
import time

import pytest

from prod_core.cli.fetch_history import main as cli_main
from prod_core.feeds.ccxt_rest import Backoff
from prod_core.feeds.history import HistoryError, fetch_history, parse_time, terminal_progress
from prod_core.feeds.replay import ReplayFeed
from prod_core.testing.fake_exchange import running_fake

TF = 60_000


@pytest.fixture
def fake():
    with running_fake({"BTC/USDT": 65000.0, "ETH/USDT": 3400.0}, max_lifetime_s=60.0) as server:
        yield server


def window(hours_back: float, minutes: int) -> tuple[int, int]:
    start = (int(time.time() * 1000) // TF - int(hours_back * 60)) * TF
    return start, start + minutes * TF


def fetch(fake, out, since, until, **kw):
    kw.setdefault("limit", 50)
    kw.setdefault("backoff", Backoff(base_s=0.05, max_s=0.2, rng=random.Random(1)))
    return fetch_history("binance", "BTC/USDT", "1m", since, until, out, api_url=fake.url,
                         enable_rate_limit=False, timeout_ms=3000, **kw)


def expected(fake, since, until):
    return fake.closed_bars("BTC/USDT", since, until - 1, TF)



def rows_of(path):
    feed = ReplayFeed.from_paths([str(path)])
    assert feed.symbols == ("BTC/USDT",)  # from the symbol column
    feed.start(0.0)
    out = []
    while not feed.exhausted:
        out.extend([b.ts_ms, b.open, b.high, b.low, b.close, b.volume] for b in feed.poll(0.0))
    return out


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_paginated_download_is_exact_and_replayable(fake, tmp_path, suffix):
    since, until = window(5, 230)
    out = tmp_path / f"btc{suffix}"
    res = fetch(fake, out, since, until)
    assert res.written == 230 and res.first_ts == since and res.last_ts == until - TF
    assert fake.count("/api/v3/klines") >= 5  # 50 bars per page
    assert rows_of(out) == expected(fake, since, until)
    assert set(fake.paths()) == {"/api/v3/exchangeInfo", "/api/v3/klines"}


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_resume_continues_after_the_last_bar(fake, tmp_path, suffix):
    since, until = window(5, 200)
    out = tmp_path / f"btc{suffix}"
    first = fetch(fake, out, since, since + 120 * TF)
    assert first.written == 120
    second = fetch(fake, out, since, until)
    assert second.resumed_from == since + 119 * TF and second.written == 80 and second.total == 200
    assert rows_of(out) == expected(fake, since, until)


def test_interrupted_download_leaves_a_valid_file_and_resumes(fake, tmp_path):
    since, until = window(5, 200)
    out = tmp_path / "btc.csv"
    calls = {"n": 0}

    class Interrupt(Exception):
        pass

    def progress(done, start, end, bars):
        calls["n"] += 1
        if calls["n"] == 2:
            raise Interrupt  # like Ctrl+C in the middle of a download

    with pytest.raises(Interrupt):
        fetch(fake, out, since, until, progress=progress)
    partial = rows_of(out)
    assert partial == expected(fake, since, since + len(partial) * TF) and 0 < len(partial) < 200
    fetch(fake, out, since, until)
    assert rows_of(out) == expected(fake, since, until)


def test_rate_limit_and_5xx_are_retried(fake, tmp_path):
    since, until = window(3, 120)
    fake.fail(429, count=2)
    fake.fail(502, count=1)
    res = fetch(fake, tmp_path / "btc.csv", since, until)
    assert res.written == 120
    assert rows_of(tmp_path / "btc.csv") == expected(fake, since, until)


def test_persistent_failure_gives_up_with_a_clear_error(fake, tmp_path):
    since, until = window(3, 120)
    fake.fail(503, count=50)
    with pytest.raises(HistoryError, match="giving up after 3 failures"):
        fetch(fake, tmp_path / "btc.csv", since, until, max_retries=2)


def test_bad_symbol_is_a_clear_error(fake, tmp_path):
    since, until = window(3, 10)
    with pytest.raises(HistoryError, match="DOGE/USDT is not listed on binance"):
        fetch_history("binance", "DOGE/USDT", "1m", since, until, tmp_path / "x.csv", api_url=fake.url,
                      enable_rate_limit=False)


def test_resume_refuses_a_file_of_another_symbol(fake, tmp_path):
    since, until = window(3, 10)
    out = tmp_path / "x.csv"
    fetch(fake, out, since, until)
    with pytest.raises(HistoryError, match="holds BTC/USDT, not ETH/USDT"):
        fetch_history("binance", "ETH/USDT", "1m", since, until, out, api_url=fake.url, enable_rate_limit=False)


def test_only_closed_bars_before_now(fake, tmp_path):
    since = (int(time.time() * 1000) // TF - 30) * TF
    res = fetch(fake, tmp_path / "btc.csv", since, None)
    assert res.last_ts + TF <= time.time() * 1000
    assert rows_of(tmp_path / "btc.csv") == expected(fake, since, res.last_ts + TF)


def test_cli(fake, tmp_path, capsys):
    since, until = window(3, 60)
    out = tmp_path / "cli.csv"
    argv = ["fetch-history", "--exchange", "binance", "--symbol", "BTC/USDT", "--timeframe", "1m",
            "--since", str(since), "--until", str(until), "--out", str(out), "--api-url", fake.url]
    assert cli_main(argv) == 0
    assert "wrote 60 bars" in capsys.readouterr().out
    assert cli_main(argv) == 0
    assert "wrote 0 bars (resumed after" in capsys.readouterr().out
    assert cli_main(argv[:-2] + ["--since", "yesterday-ish"]) == 2
    bad = argv[:]
    bad[bad.index("BTC/USDT")] = "NOPE/USDT"
    bad[bad.index(str(out))] = str(tmp_path / "nope.csv")
    assert cli_main(bad) == 1
    assert "NOPE/USDT is not listed" in capsys.readouterr().err


def test_parse_time():
    assert parse_time("2025-03-01") == 1740787200000
    assert parse_time("2025-03-01T00:01:00Z") == 1740787260000
    assert parse_time("1740787200000") == 1740787200000
    assert parse_time("now", now_ms=5) == 5
    with pytest.raises(ValueError, match="expected a date"):
        parse_time("March")


def test_progress_bar_only_on_a_terminal(monkeypatch):
    """Not a TTY: no callback at all; a TTY: a tqdm bar over the span with the bars written as postfix."""
    monkeypatch.delenv("CRUPTO_PROGRESS", raising=False)
    assert terminal_progress(io.StringIO()) is None

    class Tty(io.StringIO):
        def isatty(self):
            return True

    tty = Tty()
    show = terminal_progress(tty, mininterval=0)
    show(50 * TF, 0, 100 * TF, 10)
    show(100 * TF, 0, 100 * TF, 20)
    show.close()
    out = tty.getvalue()
    assert " 50%|" in out and "100%|" in out and "50/100" in out
    assert "20 bars, 1970-01-01 01:40" in out and out.endswith("\n")
    monkeypatch.setenv("CRUPTO_PROGRESS", "0")
    assert terminal_progress(Tty()) is None
