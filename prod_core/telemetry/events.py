"""Append-only CSV of notable telemetry events (`reports/telemetry_events.csv`).

Events are rare (run_started, feed_registered, lock_engaged, fill, ...), so each row is
flushed at once: a crash never loses the last event an operator needs.
"""

from __future__ import annotations

import csv
import json
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

EVENT_COLUMNS: tuple[str, ...] = ("ts_utc", "run_id", "kind", "severity", "component", "message", "fields")


def _iso_utc(ts: float | datetime | None) -> str:
    """ISO 8601 in UTC with a trailing Z and millisecond precision."""
    if ts is None:
        moment = datetime.now(UTC)
    elif isinstance(ts, datetime):
        moment = ts.astimezone(UTC) if ts.tzinfo else ts.replace(tzinfo=UTC)
    else:
        moment = datetime.fromtimestamp(ts, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class EventsCsv:
    """Appends event rows to a CSV file; the header is written only when the file is new or empty."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # newline="" lets the csv module own line endings (embedded newlines round-trip).
        self._fh = self.path.open("a", encoding="utf-8", newline="")
        self._writer = csv.writer(self._fh)
        self._lock = threading.Lock()
        if self._fh.tell() == 0:
            self._writer.writerow(EVENT_COLUMNS)
            self._fh.flush()

    def write(
        self,
        *,
        run_id: str,
        kind: str,
        message: str = "",
        severity: str = "info",
        component: str = "runner",
        fields: Mapping[str, Any] | None = None,
        ts: float | datetime | None = None,
    ) -> None:
        """Append one event (``ts`` as unix seconds or datetime; now when omitted) and flush it."""
        payload = json.dumps(dict(fields or {}), ensure_ascii=False, separators=(",", ":"), default=str)
        row = (_iso_utc(ts), run_id, kind, severity, component, message, payload)
        with self._lock:
            if self._fh.closed:
                raise ValueError(f"EventsCsv({self.path}) is closed; open a new one to write events")
            self._writer.writerow(row)
            self._fh.flush()

    def close(self) -> None:
        """Close the file; safe to call twice."""
        with self._lock:
            if not self._fh.closed:
                self._fh.close()

    def __enter__(self) -> EventsCsv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """All rows of an events CSV as dicts; ``fields`` decoded from JSON. Missing file -> []."""
    path = Path(path)
    if not path.exists():
        return []
    with path.open("r", encoding="utf-8", newline="") as fh:
        rows: list[dict[str, Any]] = list(csv.DictReader(fh))
    for row in rows:
        row["fields"] = json.loads(row["fields"]) if row.get("fields") else {}
    return rows
