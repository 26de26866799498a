"""fetch-history --funding: the settled funding rates of a perp into X.funding.csv, against the local fakes
(real ccxt client, loopback only): the exact format, pagination, resume, and spot refused."""

from __future__ import annotations

import random
import time

import pytest

from prod_core.feeds.ccxt_rest import Backoff
from prod_core.feeds.funding import funding_times
from prod_core.feeds.history import HistoryError, fetch_funding_history, funding_path
from prod_core.testing.fake_bybit import FakeBybit
from prod_core.testing.fake_exchange import FakeBinance
from tests.cli.helpers import REPO, one_error_line, run_cli

H8 = 8 * 3_600_000
DAY = 86_400_000
FAKES = {"binance": FakeBinance, "bybit": FakeBybit}


@pytest.fixture(params=["binance", "bybit"])
def fake(request):
    # stamps a few ms late, like the real exchanges (Binance ...000 / ...001)
    with FAKES[request.param]({"BTC/USDT": 65000.0}, max_lifetime_s=90.0,
                              funding_late_ms=lambda ts: (ts // H8) % 4) as server:
        yield server


def expected_lines(fake, since_ms: int, until_ms: int) -> list[str]:
    """The side file a correct download writes: every settled instant in [since, until), in order."""
    return ["timestamp,funding_rate"] + [f"{t},{fake.funding_rate_at('BTC/USDT', t)!r}"
                                         for t in funding_times(since_ms - 1, until_ms - 1, H8)]


def cli(tmp_path, fake, *args: str):
    return run_cli(tmp_path, "fetch-history", "--exchange", fake.name, "--api-url", fake.url, *args,
                   PYTHONPATH=str(REPO))


def test_cli_funding_writes_the_side_file_next_to_the_candles_and_resumes(fake, tmp_path):
    now = int(time.time() * 1000)
    since = (now // H8 - 9) * H8 + 3_600_000  # 3 days back, not on a funding time
    mid = since + DAY
    first = cli(tmp_path, fake, "--symbol", "BTC/USDT:USDT", "--timeframe", "1h", "--since", str(since),
                "--until", str(mid), "--out", "btc.csv", "--funding")
    assert first.returncode == 0, first.stderr
    side = tmp_path / "btc.funding.csv"
    assert side.read_text().splitlines() == expected_lines(fake, since, mid)
    assert "btc.funding.csv: wrote 3 funding rates, 3 in file" in first.stdout
    assert (tmp_path / "btc.csv").exists()

    second = cli(tmp_path, fake, "--symbol", "BTC/USDT:USDT", "--timeframe", "1h", "--since", str(since),
                 "--out", "btc.csv", "--funding")
    assert second.returncode == 0, second.stderr
    lines = side.read_text().splitlines()
    until = int(time.time() * 1000)
    assert lines == expected_lines(fake, since, until)
    ts = [int(line.split(",")[0]) for line in lines[1:]]
    assert ts == sorted(set(ts)) and all(t % H8 == 0 for t in ts)
    assert f"(resumed after {mid // H8 * H8})" in second.stdout  # the last instant before mid
    linear = "/fapi/v1/fundingRate" if fake.name == "binance" else "/v5/market/funding/history"
    assert fake.count(linear) >= 2


def test_cli_funding_with_parquet_candles_uses_the_same_side_file_name(fake, tmp_path):
    now = int(time.time() * 1000)
    since = (now // H8 - 3) * H8
    proc = cli(tmp_path, fake, "--symbol", "BTC/USDT:USDT", "--timeframe", "1h", "--since", str(since),
               "--out", "data/btc.parquet", "--funding")
    assert proc.returncode == 0, proc.stderr
    assert funding_path(tmp_path / "data/btc.parquet") == tmp_path / "data/btc.funding.csv"
    assert (tmp_path / "data/btc.funding.csv").read_text().splitlines() == expected_lines(fake, since, now)


def test_cli_funding_refuses_a_spot_symbol_with_one_line(fake, tmp_path):
    proc = cli(tmp_path, fake, "--symbol", "BTC/USDT", "--since", "2025-03-01", "--out", "btc.csv", "--funding")
    line = one_error_line(proc, "fetch-history: --funding needs a perpetual symbol like BTC/USDT:USDT")
    assert "spot" in line
    assert fake.requests == [] and not (tmp_path / "btc.csv").exists()


def test_paginated_funding_download_is_exact_and_a_torn_last_line_is_cut(fake, tmp_path):
    """Two settlements per request over 4 days; an interrupted write's partial line is dropped on resume."""
    now = int(time.time() * 1000)
    since, until = (now // H8 - 12) * H8, (now // H8) * H8
    out = tmp_path / "f.funding.csv"
    kw = dict(api_url=fake.url, limit=2, enable_rate_limit=False, timeout_ms=3000,
              backoff=Backoff(base_s=0.05, max_s=0.2, rng=random.Random(1)))
    res = fetch_funding_history(fake.name, "BTC/USDT:USDT", since, since + 5 * H8, out, **kw)
    assert res.written == 5 and res.requests >= 4
    with open(out, "a") as fh:
        fh.write(f"{since + 5 * H8},0.000")  # torn: no newline
    res = fetch_funding_history(fake.name, "BTC/USDT:USDT", since, until, out, **kw)
    assert res.resumed_from == since + 4 * H8 and res.written == 7 and res.total == 12
    assert out.read_text().splitlines() == expected_lines(fake, since, until)


def test_funding_download_refuses_spot_before_any_request(fake, tmp_path):
    with pytest.raises(HistoryError, match="is spot and has no funding"):
        fetch_funding_history(fake.name, "BTC/USDT", 0, None, tmp_path / "x.funding.csv", api_url=fake.url)
    assert fake.requests == []
