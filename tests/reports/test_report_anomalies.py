"""summary.md of a run lists rejected bars by kind and bar repairs, read back from the run's events."""

from __future__ import annotations

from pathlib import Path

from prod_core.reports import run_summary, write_run_report
from prod_core.reports.report import anomaly_summary
from prod_core.storage import Storage


def _run(tmp_path: Path, events: list[tuple[str, dict]]) -> tuple[Storage, str]:
    storage = Storage(str(tmp_path / "r.db"))
    storage.start_run("r1", mode="paper", feed="ccxt", config_hash="x", code_version="t", ts=1.0)
    for i, (kind, fields) in enumerate(events):
        storage.add_event("r1", ts=2.0 + i, kind=kind, severity="warning", component="feed", message=kind,
                          fields=fields)
    storage.end_run("r1", status="stopped", ts=100.0)
    return storage, "r1"


def _line(burst: int, kinds: dict[str, int]) -> tuple[str, dict]:
    return ("data_anomaly", {"kind": next(iter(kinds)), "symbol": "BTC/USDT", "ts_ms": 0, "burst": burst,
                             "kinds": kinds})


def test_summary_lists_anomalies_by_kind_and_repairs_from_run_stopped(tmp_path: Path) -> None:
    """The run_stopped totals (exact) give the table; repairs come from its ``repairs`` field."""
    storage, run_id = _run(tmp_path, [
        _line(65, {"nan": 40, "duplicate": 25}),
        _line(3, {"nan": 3}),
        ("run_stopped", {"bars": 10, "anomalies": {"ccxt:nan": 43, "ccxt:duplicate": 25},
                         "repairs": {"repaired": 57, "given_up": 1, "gaps": 4}}),
    ])
    folder = write_run_report(storage, run_id, tmp_path / "reports")
    text = (folder / "summary.md").read_text(encoding="utf-8")
    assert "## Data anomalies" in text
    assert "| nan | 43 |" in text and "| duplicate | 25 |" in text and "| total | 68 |" in text
    assert text.index("| nan | 43 |") < text.index("| duplicate | 25 |")  # largest first
    assert "Log lines: 2 (largest burst 65)." in text
    assert "Bar repairs: repaired 57, given up 1, gaps 4." in text
    latest = (tmp_path / "reports" / "summary_latest.md").read_text(encoding="utf-8")
    assert latest.startswith("> Latest finished run: `run_r1` (stopped") and "| nan | 43 |" in latest
    storage.close()


def test_run_without_run_stopped_sums_its_anomaly_lines(tmp_path: Path) -> None:
    """A crashed run has no run_stopped: the data_anomaly lines are summed, and the summary says so."""
    storage, run_id = _run(tmp_path, [_line(65, {"nan": 40, "duplicate": 25}), _line(3, {"nan": 3}),
                                      ("data_anomaly", {"kind": "high_below_low", "burst": 2})])  # an older line
    s = run_summary(storage, run_id)
    assert s["anomalies"] == {"nan": 43, "duplicate": 25, "high_below_low": 2}
    assert s["anomaly_source"] == "data_anomaly" and s["repairs"] is None
    text = (write_run_report(storage, run_id, tmp_path / "reports") / "summary.md").read_text(encoding="utf-8")
    assert "the run did not stop cleanly" in text
    assert "Bar repairs: not recorded for this run." in text
    storage.close()


def test_clean_run_says_no_bar_was_rejected(tmp_path: Path) -> None:
    """A run with zero anomalies says so instead of an empty table."""
    storage, run_id = _run(tmp_path, [("run_stopped", {"anomalies": {}})])
    text = (write_run_report(storage, run_id, tmp_path / "reports") / "summary.md").read_text(encoding="utf-8")
    assert "No bar was rejected." in text and "| total |" not in text
    storage.close()


def test_anomaly_summary_sums_kinds_across_feeds_and_ignores_malformed_fields() -> None:
    """Counts for the same kind on two feeds add up; junk values in the fields are skipped."""
    s = anomaly_summary([{"kind": "run_stopped", "fields": {
        "anomalies": {"ccxt:nan": 2, "replay:nan": 1, "ccxt:gap": "x", "bad": True},
        "repairs": {"repaired": 3, "given_up": None}}}])
    assert s["anomalies"] == {"nan": 3}
    assert s["repairs"] == {"repaired": 3}
