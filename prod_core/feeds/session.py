"""Recorded paper sessions: write them with the run, replay them bar for bar.

A paper run records every closed bar it receives, in arrival order, and the control events
that changed its decisions at the bar they took effect (``session_bars`` /
``session_events`` tables). At the end of the run they are written to
``reports/run_<id>/bars.parquet`` (one row per bar, ``seq`` = arrival number) and
``reports/run_<id>/session.json`` (the start state of the account, the configs in force and
the events). ``--feed replay --data reports/run_<id>/bars.parquet`` finds ``session.json``
beside the file and replays the session: the same start state, the same bars in the same
order, the same events at the same bars, so the session's plans and fills come out again.

Event kinds: ``start`` (after_bar 0: account, governance config, instruments, overlay),
``live_from`` ({live_from_ms}: the first bar that may trade), ``feed_health`` ({health}),
``command`` ({command, args, comment}), ``config`` ({governance}), ``day_roll`` ({day}).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prod_core.domain import Bar
from prod_core.feeds.base import FeedHealth
from prod_core.feeds.funding import FundingTable

SESSION_FILE = "session.json"
BARS_FILE = "bars.parquet"
FORMAT = "crupto-session-1"
_CHUNK = 2048


class SessionFormatError(ValueError):
    """A recording that cannot be replayed; the message names the file and what is wrong."""


@dataclass(frozen=True, slots=True)
class SessionEvent:
    after_bar: int
    kind: str
    payload: dict[str, Any]


def _num(x: Any) -> float:
    return math.nan if x is None else float(x)


def write_session(folder: Path, run_id: str, bars: Sequence[dict[str, Any]], events: Sequence[dict[str, Any]]) -> Path:
    """Write ``bars.parquet`` and ``session.json`` of a run into ``folder``; return the bars file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    columns = {
        "seq": pa.array([int(b["seq"]) for b in bars], pa.int64()),
        "symbol": pa.array([b["symbol"] for b in bars], pa.string()),
        "ts_ms": pa.array([int(b["ts_ms"]) for b in bars], pa.int64()),
    }
    for name in ("open", "high", "low", "close", "volume"):
        columns[name] = pa.array([_num(b[name]) for b in bars], pa.float64())
    path = folder / BARS_FILE
    pq.write_table(pa.table(columns), path)
    doc = {
        "format": FORMAT,
        "run_id": run_id,
        "bars": len(bars),
        "events": [{"after_bar": e["after_bar"], "kind": e["kind"], "payload": e["payload"]} for e in events],
    }
    (folder / SESSION_FILE).write_text(json.dumps(doc, indent=1, sort_keys=True, default=str), encoding="utf-8")
    return path


def is_recording(path: str | Path) -> bool:
    """A ``bars.parquet`` with a ``session.json`` beside it."""
    p = Path(path)
    return p.name == BARS_FILE and (p.parent / SESSION_FILE).is_file()


@dataclass(frozen=True)
class SessionRecording:
    run_id: str
    bars: list[Bar]
    events: list[SessionEvent]  # without the start event, in order
    start: dict[str, Any]

    @classmethod
    def load(cls, path: str | Path) -> SessionRecording:
        import pyarrow.parquet as pq

        bars_path = Path(path)
        meta_path = bars_path.parent / SESSION_FILE
        try:
            doc = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SessionFormatError(f"{meta_path}: cannot read the session ({exc})") from None
        if doc.get("format") != FORMAT:
            raise SessionFormatError(f"{meta_path}: format {doc.get('format')!r} is not {FORMAT}")
        try:
            table = pq.read_table(bars_path).to_pydict()
        except (OSError, ValueError) as exc:
            raise SessionFormatError(f"{bars_path}: cannot read the bars ({exc})") from None
        seqs = table.get("seq", [])
        if list(seqs) != list(range(len(seqs))) or len(seqs) != doc.get("bars"):
            raise SessionFormatError(
                f"{bars_path}: {len(seqs)} bars with arrival numbers that are not 0..n-1 (session says "
                f"{doc.get('bars')}): the recording is incomplete"
            )
        bars = [
            Bar(s, int(t), _num(o), _num(h), _num(lo), _num(c), _num(v))
            for s, t, o, h, lo, c, v in zip(table["symbol"], table["ts_ms"], table["open"], table["high"],
                                            table["low"], table["close"], table["volume"], strict=True)
        ]
        events = [SessionEvent(int(e["after_bar"]), str(e["kind"]), dict(e["payload"])) for e in doc["events"]]
        starts = [e for e in events if e.kind == "start"]
        if len(starts) != 1:
            raise SessionFormatError(f"{meta_path}: expected one start event, found {len(starts)}")
        start = dict(starts[0].payload)
        for e in events:
            if e.kind == "live_from":
                start["live_from_ms"] = int(e.payload["live_from_ms"])
        return cls(run_id=str(doc["run_id"]), bars=bars, start=start,
                   events=[e for e in events if e.kind not in ("start", "live_from")])


class SessionReplayFeed:
    """Replays a recording at max speed, bars in their recorded arrival order."""

    name = "replay"

    def __init__(self, recording: SessionRecording) -> None:
        self.recording = recording
        symbols = list(recording.start.get("symbols") or [])
        for bar in recording.bars:
            if bar.symbol not in symbols:
                symbols.append(bar.symbol)
        self.symbols = tuple(symbols)
        self.live_from_ms = int(recording.start.get("live_from_ms", 0))
        self.rejected: dict[str, int] = {}
        self._pos = 0
        self._started = False

    @classmethod
    def from_path(cls, path: str | Path) -> SessionReplayFeed:
        return cls(SessionRecording.load(path))

    def start(self, now_s: float) -> None:
        self._started = True

    def poll(self, now_s: float) -> list[Bar]:
        bars = self.recording.bars
        chunk = bars[self._pos:self._pos + _CHUNK]
        self._pos += len(chunk)
        return chunk

    def next_due_s(self) -> float | None:
        return None

    def funding_rates(self) -> FundingTable | None:
        """The funding rates the recorded session settled (``funding_rate`` events), or None if none."""
        rows: dict[str, list[tuple[int, float]]] = {}
        for e in self.recording.events:
            if e.kind == "funding_rate":
                rows.setdefault(str(e.payload["symbol"]), []).append((int(e.payload["ts_ms"]), float(e.payload["rate"])))
        return FundingTable(rows, tolerance_ms=0) if rows else None

    def health(self, now_s: float) -> int:
        return int(FeedHealth.HEALTHY) if self._started and not self.exhausted else int(FeedHealth.PAUSED)

    @property
    def exhausted(self) -> bool:
        return self._started and self._pos >= len(self.recording.bars)

    def stop(self) -> None:
        self._pos = len(self.recording.bars)
