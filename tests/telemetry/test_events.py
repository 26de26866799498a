"""EventsCsv: header once, flushed rows, round-trip of awkward text."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from prod_core.telemetry import EVENT_COLUMNS, EventsCsv, read_events


def test_round_trip_with_russian_text_commas_quotes_and_newlines(tmp_path: Path) -> None:
    """Messages and fields with commas, quotes, newlines and Cyrillic come back unchanged."""
    path = tmp_path / "reports" / "telemetry_events.csv"
    message = 'Блокировка: "max_daily_loss", лимит 3R,\nоператор уведомлён'
    fields = {"reason": "max_daily_loss", "комментарий": 'a, "b"\nc', "r": -3.1}
    with EventsCsv(path) as events:
        events.write(run_id="run_1", kind="lock_engaged", severity="warning", component="risk",
                     message=message, fields=fields, ts=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
        # Flushed at once: a reader sees the row before close().
        assert len(read_events(path)) == 1
    (row,) = read_events(path)
    assert row == {
        "ts_utc": "2026-01-02T03:04:05.000Z",
        "run_id": "run_1",
        "kind": "lock_engaged",
        "severity": "warning",
        "component": "risk",
        "message": message,
        "fields": fields,
    }
    assert path.read_text(encoding="utf-8").splitlines()[0] == ",".join(EVENT_COLUMNS)


def test_header_is_written_once_across_reopen(tmp_path: Path) -> None:
    """Reopening an existing file appends rows without a second header."""
    path = tmp_path / "telemetry_events.csv"
    first = EventsCsv(path)
    first.write(run_id="r1", kind="run_started", fields={"mode": "paper"})
    first.close()
    first.close()  # idempotent
    second = EventsCsv(path)
    second.write(run_id="r2", kind="feed_registered", message="sim", ts=0.0)
    second.close()
    rows = read_events(path)
    assert [r["kind"] for r in rows] == ["run_started", "feed_registered"]
    assert path.read_text(encoding="utf-8").count("ts_utc") == 1
    assert rows[1]["ts_utc"] == "1970-01-01T00:00:00.000Z"
    assert rows[0]["ts_utc"].endswith("Z") and rows[0]["fields"] == {"mode": "paper"}


def test_empty_existing_file_gets_a_header_and_missing_file_reads_empty(tmp_path: Path) -> None:
    """An empty pre-existing file is treated as new; reading a missing file gives no events."""
    path = tmp_path / "events.csv"
    assert read_events(path) == []
    path.touch()
    EventsCsv(path).close()
    assert path.read_text(encoding="utf-8").startswith("ts_utc,run_id,")
    assert read_events(path) == []
