"""Paper-loop lifecycle: start, loop, signals, clean stop and exporter linger."""

from __future__ import annotations

import dataclasses
import gc

import getpass
import logging
import os
import secrets
import shlex
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

from prod_core import __version__
from prod_core.configs import ConfigError, ConfigLoader, config_hash, load_settings
from prod_core.configs.governance import GovernanceConfig
from prod_core.configs.settings import Settings
from prod_core.configs.symbols import SymbolsConfig
from prod_core.domain import Instrument, InstrumentKind
from prod_core.feeds.base import FeedHealth
from prod_core.feeds.exchanges.rules import merge_rules
from prod_core.feeds.factory import build_feed
from prod_core.feeds.funding import FundingRates, Overrides
from prod_core.runner.account import (
    host_name,
    open_book,
    owner_message,
    reconcile_at_start,
    restored_positions,
    takeover_reason,
)
from prod_core.runner.books import FeedBooks
from prod_core.runner.cli_args import build_parser
from prod_core.runner.control import OperatorControl
from prod_core.runner.logs import setup_logging
from prod_core.reports.figures import redact_args
from prod_core.runner.fastlane import FastLane
from prod_core.runner.fastlane import enabled_by_env as fastlane_enabled
from prod_core.runner.pipeline import Pipeline
from prod_core.storage import LeaseLost, Storage, StorageError, WriterLost
from prod_core.telemetry import EventsCsv, LiveMetrics, start_exporter
from prod_core.telemetry.progress import NullProgress, progress

# Rows a replay buffers between flushes (and at least once a second). 5,000 holds the 1M-bar replay's
# peak RSS ~4 MiB under 10,000, no slower (docs/PERFORMANCE.md, step 21). With the write-behind a flush
# costs the loop only its hand-over, and smaller flushes keep the writer process small (step 25).
REPLAY_FLUSH_ROWS = 5_000
WRITE_BEHIND_FLUSH_ROWS = 1_000


def write_behind_by_env() -> bool:
    """A replay's flushes go to a writer process unless ``CRUPTO_WRITE_BEHIND=0`` (docs/PERFORMANCE.md)."""
    return os.environ.get("CRUPTO_WRITE_BEHIND", "1").strip().lower() not in ("0", "false", "no", "off")

log = logging.getLogger("prod_core.runner")

HEARTBEAT_S = 1.0
# A run whose heartbeat is this old is marked crashed by the next start. Longer than the storage
# retry window: a runner waiting out a busy database is not dead. A run whose lease is taken over
# (its pid is gone) is marked crashed at once.
STALE_RUN_S = 30.0
MAX_SLEEP_S = 0.2
COMMAND_POLL_S = 0.5
REPLAY_GC_THRESHOLD = 50_000  # allocations between young-generation collections in a replay
LANE_ROWS = 16_384  # rows per fast-lane window (a replay at full speed; see runner.fastlane)


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(4)


class SignalWake(threading.Event):
    """The loop's wake-up, safe to ``set`` from a signal handler.

    A Python signal handler runs in the main thread between two bytecodes, possibly inside
    ``Event.wait`` or ``Event.clear`` while the main thread holds the event's lock. A plain
    ``Event`` guards its flag with a ``Lock``: ``set`` in the handler then waits for a lock its own
    thread holds, forever (Ctrl+C at that moment hung the runner). Here the lock is an ``RLock``:
    the handler takes it again, sets the flag and returns."""

    def __init__(self) -> None:
        super().__init__()
        self._cond = threading.Condition(threading.RLock())


class PaperRunner:
    def __init__(self, settings: Settings, gov: GovernanceConfig, symbols: SymbolsConfig, args, loader: ConfigLoader) -> None:
        self.settings = settings
        self.gov = gov
        self.symbols = symbols
        self.args = args
        self.loader = loader
        self.run_id = args.run_id or new_run_id()
        self.stop_requested = False
        self.stop_reason = ""
        self._wake = SignalWake()
        self._signals = 0
        self.storage_degraded = False
        self.lease_lost = False
        self.lane = None

    # ---------------------------------------------------------------- signals
    def _on_signal(self, signum: int, _frame) -> None:
        self._signals += 1
        if not self.stop_requested:
            self.stop_reason = signal.Signals(signum).name
        self.stop_requested = True
        self._wake.set()

    def _on_sighup(self, _signum: int, _frame) -> None:
        self.control.reload_requested = True
        self._wake.set()

    def _install_signals(self) -> None:
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        if hasattr(signal, "SIGHUP"):  # not on Windows: there the file watch reloads
            signal.signal(signal.SIGHUP, self._on_sighup)

    # ------------------------------------------------------------------ events
    def notify(self, kind: str, message: str, *, severity: str = "info", component: str = "runner",
               fields: dict | None = None, log: bool = True, exc_info: BaseException | None = None) -> None:
        ts = time.time()
        fields = fields or {}
        self.storage.add_event(self.run_id, ts=ts, kind=kind, severity=severity, component=component,
                               message=message, fields=fields)
        self.events_csv.write(ts=ts, run_id=self.run_id, kind=kind, severity=severity, component=component,
                              message=message, fields=fields)
        if log:
            level = {"warning": logging.WARNING, "error": logging.ERROR, "critical": logging.CRITICAL}.get(
                severity, logging.INFO)
            globals()["log"].log(level, message, exc_info=exc_info)

    # --------------------------------------------------------------------- run
    def run(self) -> int:
        settings = self.settings
        self.control = OperatorControl(self, self.loader)
        self._install_signals()
        self.log_path = setup_logging(settings.log_level, Path(settings.logs_dir), self.run_id)
        t_start = time.time()
        log.info("Старт paper-loop: run_id=%s mode=%s feed=%s execution=%s", self.run_id, settings.mode,
                 settings.feed, settings.execution)
        try:
            self.feed = build_feed(settings, self.symbols, self.args, t_start)
        except ConfigError as exc:
            log.error("feed error: %s", exc)
            return 2
        self.replay = settings.feed == "replay"
        self.account = f"replay:{self.run_id}" if self.replay else settings.account
        # A replay of a recorded session: its start state, configs and control events.
        self.session = getattr(self.feed, "recording", None)
        self.recording = not self.replay  # a paper run records its session
        self.bars_received = 0
        self._event_seq = 0
        self._feed_rejected_seen: dict[str, int] = {}
        self._feed_burst: dict[str, int] = {}  # feed-side rejections not logged yet
        self._feed_burst_logged = 0.0
        if self.session is not None:
            self.gov = GovernanceConfig.model_validate(self.session.start["governance"])
        try:
            code = self._open_account(settings, t_start)
        except StorageError as exc:
            log.error("storage error: %s", exc)
            if getattr(self, "storage", None) is not None:
                if not self.replay:  # nothing half-written: a refused start leaves no lease behind
                    try:
                        self.storage.release_lease(self.account, self.run_id)
                    except StorageError:
                        pass
                self.storage.close_quietly()
            return 2
        if code:
            return code
        self.events_csv = EventsCsv(Path(settings.reports_dir) / "telemetry_events.csv")
        instruments = {s.symbol: s.instrument() for s in self.symbols.symbols}
        if self.session is not None:  # the instruments as the recorded session traded them
            instruments = {sym: _recorded_instrument(sym, rec) for sym, rec in self.session.start["instruments"].items()}
        for symbol in self.feed.symbols:  # replayed symbols not in symbols.yaml trade as spot
            instruments.setdefault(symbol, Instrument(symbol=symbol))
        self.live = LiveMetrics(feeds=[self.feed.name], symbols=list(self.feed.symbols),
                                strategies=list(self.gov.strategies))
        self.live.runner_up = 1
        self.live.runner_last_cycle_ts = t_start
        try:
            self.exporter = start_exporter(self.live, port=settings.prometheus_port, bind=settings.prometheus_bind)
        except OSError as exc:
            log.error("%s", exc)
            self._end_run_quietly("failed")
            return 2
        log.info("Prometheus exporter слушает порт %d (http://%s:%d/metrics)", self.exporter.port,
                 settings.prometheus_bind, self.exporter.port)
        self.sd_file = None
        if not self.replay:
            self._write_sd_file()
        self.pipeline = Pipeline(run_id=self.run_id, gov=self.gov, instruments=instruments, storage=self.storage,
                                 live=self.live, notify=self.notify, state=self.state, feed_name=self.feed.name,
                                 clock_mode="bar" if self.replay else "wall",
                                 timing_every=64 if self.replay else 1, account=self.account,
                                 immediate=not self.replay, on_storage_error=self._storage_error,
                                 bar_days=self.session is None, funding=self._funding_source(instruments),
                                 trade_events=not self.replay)
        self.pipeline.mark_journaled()
        # replay at full speed: the bars where nothing can happen are skipped ahead (runner.fastlane)
        self.lane = FastLane(self.pipeline) if self.replay and fastlane_enabled() else None
        self._manifest(instruments)
        flatten = settings.feed == "sim"
        flatten_ms = int(t_start * 1000)
        if self.session is not None:
            flatten = bool(self.session.start.get("flatten_at_mark"))
            flatten_ms = int(self.session.start.get("t_start_ms", flatten_ms))
        try:
            self.pipeline.tick(t_start)  # a new UTC day since the last run: rolled and journaled
            if self.state.config_hash != self.chash:
                self.state.config_hash = self.chash
                self.pipeline.journal_governance("config", {"hash": self.chash, "trigger": "start"})
            carried = restored_positions(self.storage, self.book)
            if self.recording:
                self._record_start(instruments, carried, flatten, flatten_ms)
            if carried:
                log.info("Счёт: %d открытых позиций из прошлых запусков", len(carried))
            self.pipeline.restore_positions(carried, flatten_at_mark=flatten, ts_ms=flatten_ms)
        except LeaseLost as exc:
            log.error("%s", exc)
            self._end_run_quietly("failed")
            self.exporter.stop()
            return 2
        self._apply_alert_test_overlay()
        if not self.replay:
            self._guard(self.control.poll)  # commands issued while no runner was up
        try:
            self.feed.start(time.time())
        except Exception as exc:  # bad symbol, auth, unreachable exchange: a clear fatal error
            log.error("feed %s failed to start: %s", self.feed.name, exc)
            self.live.runner_up = 0
            self._end_run_quietly("failed")
            self.exporter.stop()
            return 2
        rejected = getattr(self.feed, "rejected", None) or {}
        for kind, count in rejected.items():  # rows that could not even become a bar
            self.live.anomalies_total[(self.feed.name, kind)] = count
        self.pipeline.live_from_ms = self.feed.live_from_ms
        self.record_event("live_from", {"live_from_ms": self.feed.live_from_ms})
        self.notify("run_started", f"run {self.run_id} started", fields={"config_hash": self.chash,
                    "user": _user(), "max_seconds": self.args.max_seconds}, log=False)
        self.feed_registered = False
        if getattr(self.feed, "connected", True):
            self._register_feed()
        else:  # the exchange is down: keep cycling (heartbeat fresh), degraded, until it answers
            self.live.feed_health[self.feed.name] = int(FeedHealth.DEGRADED)
            self._guard(self.storage.set_feed_state, self.run_id, self.feed.name, 0, time.time(), "connecting")
            log.warning("Фид %s: биржа не отвечает при старте, подключаюсь в фоне (feed_health 0); "
                        "строка «зарегистрирован» появится после подключения", self.feed.name)
        status = "stopped"
        self.engine_s = 0.0
        self.start_refused = False
        try:
            self._loop(t_start)
        except _StartRefused:
            status = "failed"
        except LeaseLost as exc:  # another runner owns the account now: stop writing at once
            status = "failed"
            self.lease_lost = True
            self.stop_reason = "lease lost"
            log.error("%s", exc)
        except WriterLost as exc:  # a replay's writer process died: what follows its last flush is not written
            status = "failed"
            self.stop_reason = "storage writer lost"
            self.live.errors_total["storage"] = self.live.errors_total.get("storage", 0) + 1
            log.error("%s", exc)
        except Exception as exc:  # the loop must stop safely whatever happens
            status = "failed"
            self.live.errors_total["runner"] = self.live.errors_total.get("runner", 0) + 1
            log.exception("paper-loop failed: %s", exc)
        status = self._shutdown(status)
        if self.start_refused:
            return 2
        if self.replay and status == "stopped":
            bars = sum(self.live.bars_total.values())
            print(f"replay: bars={bars} fills={self.pipeline.fills_seen} engine_s={self.engine_s:.3f} "
                  f"equity={self.pipeline.broker.equity_usd:.2f}", flush=True)  # wallet + open positions at their marks
        return 0 if status == "stopped" else 1

    def _open_account(self, settings: Settings, t_start: float) -> int:
        """Open the DB, become the account's one writer, record the run, fold and reconcile the journal.

        Returns an exit code to stop with (2), or 0 to go on. A replay trades a fresh account of
        its own (``replay:<run_id>``) and never touches the paper account.
        """
        self.storage = Storage(settings.database(self.args.db))
        self.storage.on_retry = self._on_storage_retry
        if self.replay:  # a replay can be rerun: larger batches, still flushed at least once a second
            self.storage.flush_rows = REPLAY_FLUSH_ROWS
            self.storage.checkpoint_in_background()
            if write_behind_by_env():  # the inserts in a writer process (storage/writer.py)
                try:
                    if self.storage.write_behind():
                        self.storage.flush_rows = WRITE_BEHIND_FLUSH_ROWS
                except StorageError as exc:
                    log.warning("%s; the replay writes its rows itself (slower)", exc)
        if not self.replay:
            acquired, holder, why = self.storage.acquire_lease(
                self.account, self.run_id, pid=os.getpid(), host=host_name(), now=t_start,
                takeover=lambda h: takeover_reason(h, host=host_name(), now=time.time()))
            if not acquired:
                log.error("%s", owner_message(self.account, holder or {}, time.time()))
                self.storage.close_quietly()
                return 2
            if holder is not None and why:
                log.warning("Счёт %s: lease перехвачен у run %s: %s", self.account, holder["run_id"], why)
                if self.storage.mark_crashed(holder["run_id"], ts=float(holder["heartbeat_at"])):
                    log.warning("run %s had no heartbeat for %.0f s: marked crashed", holder["run_id"],
                                t_start - float(holder["heartbeat_at"]))
                self.storage.add_audit(ts=t_start, actor=_user(), action="lease_takeover", comment=why,
                                       run_id=self.run_id, account=self.account, details={"previous": holder})
        for rid, age in self.storage.mark_stale_runs(t_start, STALE_RUN_S):
            log.warning("run %s had no heartbeat for %.0f s: marked crashed", rid, age)
        for rid, count in self.storage.cancel_orphan_plans().items():
            log.warning("run %s: %d pending plan(s) left by a stopped or crashed run cancelled", rid, count)
            self.storage.add_audit(ts=t_start, actor=_user(), action="cancel_orphan_plans", comment="",
                                   run_id=self.run_id, account=self.account,
                                   details={"run_id": rid, "cancelled": count})
        self.chash = config_hash(self.gov, self.symbols)
        self.storage.start_run(self.run_id, mode=settings.mode, feed=settings.feed, config_hash=self.chash,
                               code_version=__version__, ts=t_start, args=redact_args(shlex.join(sys.argv[1:])),
                               account=self.account)
        self.book = open_book(self.storage, self.account, self.run_id,
                              starting_cash=self.gov.account.starting_equity_usd, actor=_user(),
                              opening=self.session.start["account"] if self.session is not None else None)
        diffs = reconcile_at_start(self.storage, self.book, self.run_id, actor=_user())
        if not diffs:
            log.info("Сверка счёта %s: журнал и сохранённое состояние совпадают (seq %d, сделок %d)",
                     self.account, self.book.last_seq, self.book.fills)
        self.state = self.book.state
        self.state.cash_usd = self.book.cash_usd
        return 0

    def _apply_exchange_rules(self) -> None:
        """A ccxt feed that has loaded its markets: the exchange's tick, step and minimums fill the
        rules symbols.yaml leaves unset (a looser configured rule is warned about). Recorded, so
        a replay of the session trades under the same rules."""
        rules = getattr(self.feed, "instrument_rules", None)
        if rules is None or self.pipeline is None:
            return
        exchange = rules()
        if not exchange:
            return
        merged, warnings = merge_rules(self.pipeline.instruments, exchange)
        for line in warnings:
            log.warning("Правила биржи: %s", line)
        self.pipeline.set_instruments(merged)
        self.record_event("instruments", {sym: _instrument_record(inst) for sym, inst in merged.items()})
        log.info("Правила биржи применены: %s", "; ".join(
            f"{sym} tick={inst.price_tick:g} step={inst.qty_step:g} min_qty={inst.min_qty:g} "
            f"min_notional={inst.min_notional_usd:g}" for sym, inst in merged.items()))

    def _register_feed(self) -> None:
        self._apply_exchange_rules()
        self.feed_registered = True
        self.live.feed_health[self.feed.name] = int(FeedHealth.HEALTHY)
        self._guard(self.storage.set_feed_state, self.run_id, self.feed.name, 1, time.time(), "registered")
        self.notify("feed_registered",
                    f"Фид {self.feed.name} зарегистрирован: {', '.join(self.feed.symbols)}",
                    component="feed", fields={"feed": self.feed.name, "symbols": list(self.feed.symbols)})

    def _check_feed_connected(self) -> bool:
        """Until the feed connects: register it when it does; a fatal error found then stops the run
        with exit 2 (a setting to fix). Returns False to stop."""
        error = getattr(self.feed, "fatal_error", None)
        if error is not None:
            log.error("feed %s failed to start: %s", self.feed.name, error)
            self.start_refused = True
            self.stop_reason = "feed failed to start"
            return False
        if getattr(self.feed, "connected", True):
            self._register_feed()
        return True

    def _end_run_quietly(self, status: str) -> None:
        try:
            self.storage.end_run(self.run_id, status=status, ts=time.time())
            if not self.replay:
                self.storage.release_lease(self.account, self.run_id)
        except StorageError as exc:
            log.error("storage error while stopping: %s", exc)
        self.storage.close_quietly()

    # ---------------------------------------------------------- storage faults
    def _on_storage_retry(self, attempt: int, waited_s: float, error: str) -> None:
        live = getattr(self, "live", None)
        if live is not None:
            live.storage_retries = self.storage.retries
        if attempt == 1:
            log.warning("База %s занята другим процессом (%s): повторяю запись с паузами до %.0f с",
                        self.storage.path, error, self.storage.retry_window_s)

    def _storage_error(self, exc: Exception) -> None:
        """A write failed after its retries: entries halt, exits keep being tried, an alert fires."""
        live = self.live
        live.errors_total["storage"] = live.errors_total.get("storage", 0) + 1
        live.storage_write_failing = 1
        self.pipeline.storage_ok = False
        if not self.storage_degraded:
            self.storage_degraded = True
            log.error("Хранилище не принимает запись: %s — новые входы остановлены, выходы повторяются на каждом "
                      "баре до восстановления (алерт StorageWriteFailing)", exc)

    def _storage_recovered(self) -> None:
        if self.storage_degraded:
            self.storage_degraded = False
            log.warning("Хранилище снова принимает запись: входы разрешены")
        self.live.storage_write_failing = 0
        self.pipeline.storage_ok = True

    def _guard(self, fn, *args) -> bool:
        """Run one storage write of the loop; a failure degrades instead of stopping the loop."""
        try:
            fn(*args)
        except (LeaseLost, WriterLost):
            raise
        except StorageError as exc:
            self._storage_error(exc)
            return False
        return True

    def _loop(self, t_start: float) -> None:
        feed = self.feed
        deadline = t_start + self.args.max_seconds if self.args.max_seconds else None
        # exchange.order_book: working market orders take the feed's book latency_ms after they are sent
        self.feed_books = FeedBooks(feed.top_of_book) if getattr(feed, "watch_books", False) else None
        shown = progress(getattr(feed, "rows", None), "replay", "bar", unit_scale=True) if self.replay \
            else NullProgress()
        if self.replay:
            # The start-up's objects (modules, configs, caches) are never garbage: keep the cyclic
            # collector off them, and let it run less often over the loop's short-lived objects
            # (they are freed by reference counting; a replay allocates tens of thousands a second).
            gc.freeze()
            gc.set_threshold(REPLAY_GC_THRESHOLD, *gc.get_threshold()[1:])
        try:
            self._cycle(t_start, deadline, shown)
        finally:
            shown.close()

    def _cycle(self, t_start: float, deadline: float | None, shown) -> None:  # noqa: C901 - the loop, stage by stage
        """The loop proper (see ``_loop``); ``shown`` is the replay's progress bar (a no-op when not a TTY)."""
        feed = self.feed
        pipeline = self.pipeline
        live = self.live
        storage = self.storage
        last_hb = 0.0
        last_cmd = 0.0
        last_health = self.live.feed_health.get(feed.name, 1)
        recording = self.recording
        session_events = list(self.session.events) if self.session is not None else []
        next_event_at = session_events[0].after_bar if session_events else -1
        if session_events and next_event_at <= 0:
            next_event_at = self._apply_session_events(session_events)
        book_of = self.feed_books
        broker = pipeline.broker
        book_due = None  # wall time the next book capture falls due
        lane = self.lane if (self.lane is not None and not recording and not session_events
                             and getattr(feed, "speed", 0) is None and hasattr(feed, "poll_arrays")) else None
        t_engine = time.perf_counter()
        while True:
            now = time.time()
            if self.stop_requested:
                break
            if deadline is not None and now >= deadline:
                self.stop_reason = f"--max-seconds {self.args.max_seconds:g}"
                break
            if not self.feed_registered and not self._check_feed_connected():
                raise _StartRefused()
            if lane is not None:  # replay at full speed: windows of arrays through the fast lane
                got = feed.poll_arrays(LANE_ROWS)
                if got is not None:
                    lane.run(feed.symbols, *got)
                bars = got[1] if got is not None else ()
            else:
                bars = feed.poll(now)
            if len(bars):
                live.feed_last_bar_ts[feed.name] = now
            if lane is not None:
                pass
            elif recording:
                for bar in bars:
                    storage.add_session_bar(self.run_id, self.bars_received, bar)
                    self.bars_received += 1
                    pipeline.on_bar(bar)
            elif session_events:
                for bar in bars:
                    if self.bars_received >= next_event_at:
                        next_event_at = self._apply_session_events(session_events)
                    self.bars_received += 1
                    pipeline.on_bar(bar)
            else:
                for bar in bars:
                    pipeline.on_bar(bar)
            if len(bars):
                pipeline.flush_marks()
                shown.update(len(bars))
            now = time.time()
            book_due = None
            if book_of is not None and (broker.pending_entries or broker.pending_exits):
                book_due = broker.capture_books(now, book_of, self.gov.execution.latency_ms)
            health = self._overlay_health(feed.health(now))
            if self.session is None:  # a recorded session replays its own feed health events
                pipeline.feed_ok = health == 1
            if health != last_health:
                self.record_event("feed_health", {"health": health})
                live.feed_health[feed.name] = health
                self._guard(storage.set_feed_state, self.run_id, feed.name, health, now)
                self.notify("feed_health", f"feed {feed.name} health {last_health} -> {health}",
                            severity="warning" if health == 0 else "info", component="feed",
                            fields={"feed": feed.name, "health": health})
                last_health = health
            live.runner_last_cycle_ts = now
            if now - last_cmd >= COMMAND_POLL_S or self.control.reload_requested:
                last_cmd = now
                if not self.replay and not self.storage_degraded:
                    self._guard(self.control.poll)
                    self.control.watch()
            if now - last_hb >= HEARTBEAT_S:
                last_hb = now
                if pipeline.tick(now):
                    self.record_event("day_roll", {"day": self.state.day})
                self._sync_feed_counters()
                if self._guard(self._save_state, now) and self._guard(storage.heartbeat, self.run_id, now):
                    self._storage_recovered()
                live.storage_retries = storage.retries
                if storage.mark_misses:
                    live.errors_total["storage"] = live.errors_total.get("storage", 0) + 1
                    log.error("marks of positions %s matched no open row: run `python -m prod_core.cli reconcile`",
                              ", ".join(storage.mark_misses))
                    storage.mark_misses.clear()
            elif not self.storage_degraded:
                self._guard(storage.maybe_flush, now)
            if feed.exhausted:
                self.stop_reason = "end of data"
                self.engine_s = time.perf_counter() - t_engine
                if lane is not None:
                    log.info("fast lane: %d of %d bars skipped ahead (windows: %d scanned, %d bar by bar)",
                             lane.bars_skipped, feed.delivered, lane.windows_fast, lane.windows_slow)
                break
            if len(bars):
                continue  # more may be ready at once (replay at max speed, catch-up)
            wake = min(now + MAX_SLEEP_S, last_hb + HEARTBEAT_S, last_cmd + COMMAND_POLL_S)
            due = feed.next_due_s()
            if due is not None:
                wake = min(wake, due)
            if book_due is not None:  # priced latency_ms after the send, not at the next cycle
                wake = min(wake, book_due)
            if deadline is not None:
                wake = min(wake, deadline)
            delay = wake - time.time()
            if delay > 0:
                self._wake.wait(delay)
                self._wake.clear()  # flags set by signal handlers are re-checked at the top

    def _apply_alert_test_overlay(self) -> None:
        """ALERT_TEST_* drills: a loud, non-persisted overlay on the real gates (paper mode only)."""
        s = self.settings
        if self.session is not None:  # a recorded session replays the overlay it ran with
            recorded = self.session.start.get("overlay") or {}
            s = s.model_copy(update={"alert_test_daily_lock": recorded.get("daily_lock"),
                                     "alert_test_safe_mode": recorded.get("safe_mode")})
        overlay = {}
        if s.alert_test_feed_health:
            overlay["ALERT_TEST_FEED_HEALTH"] = s.alert_test_feed_health
        if s.alert_test_daily_lock:
            overlay["ALERT_TEST_DAILY_LOCK"] = s.alert_test_daily_lock
        if s.alert_test_safe_mode:
            overlay["ALERT_TEST_SAFE_MODE"] = s.alert_test_safe_mode
        self.pipeline.set_overlay(lock=s.alert_test_daily_lock,
                                  safe=None if s.alert_test_safe_mode is None else s.alert_test_safe_mode == "on")
        self.live.alert_test.update(overlay)
        for variable, value in overlay.items():
            self.notify("alert_test_overlay",
                        f"ВНИМАНИЕ: тестовый оверлей {variable}={value} активен (не сохраняется; снимите: unset {variable})",
                        severity="warning", component="runner", fields={"variable": variable, "value": value})

    def _sync_feed_counters(self, final: bool = False) -> None:
        """Counters the feed keeps itself: bars its repair rejected (added to data_anomalies_total
        with the pipeline's own), rate-limit events (feed_rate_limited_total)."""
        feed, live = self.feed, self.live
        repair = getattr(feed, "repair", None)
        if repair is not None:
            seen = self._feed_rejected_seen
            burst = self._feed_burst
            for kind, n in list(repair.rejected.items()):
                delta = n - seen.get(kind, 0)
                if delta > 0:
                    key = (feed.name, kind)
                    live.anomalies_total[key] = live.anomalies_total.get(key, 0) + delta
                    seen[kind] = n
                    burst[kind] = burst.get(kind, 0) + delta
            now = time.time()
            if burst and (final or now - self._feed_burst_logged >= 5.0):
                total = sum(burst.values())
                kinds = ", ".join(f"{k}: {n}" for k, n in sorted(burst.items(), key=lambda kv: (-kv[1], kv[0])))
                self.notify("data_anomaly", f"Фид {feed.name}: отклонено баров {total} ({kinds}); перезапрошены у "
                            f"биржи: восстановлено всего {repair.repaired}, не восстановлено {repair.given_up}",
                            severity="warning", component="feed",
                            fields={"burst": total, "kinds": dict(burst), "repaired": repair.repaired,
                                    "given_up": repair.given_up, "source": "feed"})
                burst.clear()
                self._feed_burst_logged = now
        limited = getattr(live, "feed_rate_limited", None)
        if limited is not None:
            limited[feed.name] = int(getattr(feed, "rate_limited", 0))

    def _overlay_health(self, health: int) -> int:
        test = self.settings.alert_test_feed_health
        if test is None or health == int(FeedHealth.PAUSED):
            return health
        return 0 if test == "bad" else 1

    # ------------------------------------------------------------ session recording
    def _manifest(self, instruments: dict[str, Instrument]) -> None:
        """The run's execution terms on record (events table -> manifest.json and summary.md)."""
        ex = self.gov.execution
        funding = self._funding_name
        fields = {"execution": ex.model_dump(mode="json"), "funding_source": funding,
                  "instruments": {sym: _instrument_record(inst) for sym, inst in instruments.items()}}
        cap = "none" if ex.max_participation_pct is None else f"{ex.max_participation_pct:g}%"
        self.notify("run_manifest",
                    f"Исполнение: fill_model={ex.fill_model} spread={ex.slippage_bps:g}bps impact={ex.impact_coef:g} "
                    f"participation={cap} latency={ex.latency_bars} bars, limits {ex.limit_fill}; "
                    f"фандинг: {funding}", fields=fields)

    def _funding_source(self, instruments: dict[str, Instrument]) -> FundingRates | None:
        """Funding rates of the perps: a fixed ``funding_rate`` from symbols.yaml, else the feed's own
        (exchange history, the replay file, the sim model). A paper session records every rate it
        settles, so that replaying the session settles the same."""
        perps = [s for s, i in instruments.items() if i.kind is InstrumentKind.PERP]
        self._funding_name = "none"
        if not perps:
            return None
        fixed = {s: i.funding_rate for s, i in instruments.items() if s in perps and i.funding_rate is not None}
        get = getattr(self.feed, "funding_rates", None)
        source = get() if get is not None else None
        self._funding_name = type(source).__name__ if source is not None else "fixed" if fixed else "none"
        missing = [s for s in perps if s not in fixed] if source is None else []
        if missing:
            log.warning("Фандинг не начисляется по %s: у фида %s нет ставок фандинга (задайте funding_rate в "
                        "configs/symbols.yaml, колонку funding_rate или файл <данные>.funding.csv для replay)",
                        ", ".join(missing), self.feed.name)
        rates: FundingRates = Overrides(fixed, source)
        if self.recording:
            rates = _RecordedFunding(rates, self.record_event)
        return rates

    def record_event(self, kind: str, payload: dict) -> None:
        """Record a control event of this paper session at the bar it takes effect (buffered)."""
        if self.recording:
            self.storage.add_session_event(self.run_id, self._event_seq, after_bar=self.bars_received, kind=kind,
                                           payload=payload)
            self._event_seq += 1

    def _record_start(self, instruments: dict, carried: list, flatten: bool, flatten_ms: int) -> None:
        from prod_core.account import carried_lot

        self.record_event("start", {
            "account": {"cash_usd": self.pipeline.broker.cash_usd, "lots": [carried_lot(p) for p in carried],
                        "state": {**self.state.to_dict(), "cash_usd": None}},
            "governance": self.gov.model_dump(mode="json"),
            "instruments": {sym: _instrument_record(inst) for sym, inst in instruments.items()},
            "symbols": list(self.feed.symbols), "feed": self.settings.feed,
            "flatten_at_mark": flatten, "t_start_ms": flatten_ms,
            "overlay": {"daily_lock": self.settings.alert_test_daily_lock,
                        "safe_mode": self.settings.alert_test_safe_mode},
        })

    def _apply_session_events(self, events: list) -> int:
        """Replay of a recording: apply every event due before the next bar; return the next due index."""
        while events and events[0].after_bar <= self.bars_received:
            event = events.pop(0)
            p = event.payload
            if event.kind == "feed_health":
                self.pipeline.feed_ok = p["health"] == 1
            elif event.kind == "command":
                self.control.apply_command(p["command"], p.get("args") or {}, p.get("comment") or "")
            elif event.kind == "config":
                self.apply_governance(GovernanceConfig.model_validate(p["governance"]))
            elif event.kind == "day_roll":
                self.pipeline.roll_day_to(str(p["day"]))
            elif event.kind == "instruments":
                self.pipeline.set_instruments({sym: _recorded_instrument(sym, rec) for sym, rec in p.items()})
        return events[0].after_bar if events else 1 << 62

    def journal_command(self, cmd: dict, status: str, result: str) -> None:
        """Journal the governance state an operator command left (even a refused one is on record)."""
        if status == "applied" and cmd["command"] not in ("reload", "restart-feed"):
            self.record_event("command", {"command": cmd["command"], "args": cmd.get("args") or {},
                                          "comment": cmd.get("comment") or ""})
        self.pipeline.journal_governance(f"command:{cmd['command']}", {
            "command_id": cmd["id"], "actor": cmd["actor"], "comment": cmd.get("comment") or "",
            "status": status, "result": result}, force=status == "applied")

    def apply_governance(self, gov: GovernanceConfig) -> None:
        """Install a validated governance config between two bars and journal the hash in force."""
        self.gov = gov
        self.record_event("config", {"governance": gov.model_dump(mode="json")})
        self.pipeline.apply_config(gov)
        self.chash = config_hash(gov, self.symbols)
        self.state.config_hash = self.chash
        self.pipeline.journal_governance("config", {"hash": self.chash, "trigger": "reload"})
        self.pipeline.refresh()

    def _save_state(self, now: float) -> None:
        """Heartbeat save: marks, then the snapshot (journaling any transition not yet journaled)."""
        if not self.replay:
            self.pipeline.persist_marks()
        self.pipeline.save_snapshot()
        self.pipeline.record_firm_gross(now)  # the firm gross cap's row (a no-op when the cap is off)

    def _shutdown(self, status: str) -> str:
        """Stop safely; returns the final status (``failed`` when the account could not be saved)."""
        log.info("Остановка paper-loop (%s): завершаю feed и отменяю ожидающие планы", self.stop_reason or status)
        cancelled = self.pipeline.cancel_pending()
        self.feed.stop()
        now = time.time()
        self.live.feed_health[self.feed.name] = int(FeedHealth.PAUSED)
        self.live.pending_plans = 0
        saved = True
        if not self.lease_lost:  # after a takeover the account belongs to the other runner
            try:
                if self.replay and self.session is None and self.gov.replay.flatten_at_end:
                    # a recorded session ends as the session did; replay.flatten_at_end: false keeps them open
                    self.pipeline.flatten_at_end()
                self.storage.cancel_pending_plans(self.run_id)
                self.storage.set_feed_state(self.run_id, self.feed.name, int(FeedHealth.PAUSED), now, "stopped")
                if self.replay:  # the open positions' final marks (a replay's heartbeats do not write them)
                    self.pipeline.persist_marks()
                self._save_state(now)
                if self.pipeline.broker.pending_exits:
                    log.error("При остановке %d выход(ов) не записаны в журнал (хранилище недоступно): позиции "
                              "остаются открытыми в журнале и будут подхвачены при следующем старте",
                              len(self.pipeline.broker.pending_exits))
            except StorageError as exc:
                saved = False
                log.error("storage error while stopping: %s; the journal keeps what was committed, the next start "
                          "reconciles", exc)
        if not saved or self.storage_degraded:
            status = "failed"
        # runner_up 0 marks a PLANNED stop (alerts stay quiet); a failed loop keeps 1 so
        # that the disappearing exporter pages (RunnerHeartbeatLost / MetricsDeadman).
        self.live.runner_up = 0 if status == "stopped" else 1
        self.live.runner_last_cycle_ts = now
        self.pipeline.flush_anomalies(final=True)
        self._sync_feed_counters(final=True)
        repair = getattr(self.feed, "repair", None)
        repairs = ({"repaired": repair.repaired, "given_up": repair.given_up, "gaps": repair.gaps}
                   if repair is not None else None)
        self.notify("run_stopped", f"run {self.run_id} {status}: {self.stop_reason}", component="runner",
                    fields={"cancelled_plans": cancelled, "plans": self.pipeline.plans_seen, "repairs": repairs,
                            "fills": self.pipeline.fills_seen, "bars": sum(self.live.bars_total.values()),
                            "anomalies": {f"{feed}:{kind}": n for (feed, kind), n in self.live.anomalies_total.items()},
                            "stage_ms": self._stage_quantiles()},
                    log=False)
        try:
            self.storage.end_run(self.run_id, status=status, ts=now)
            if not self.replay and not self.lease_lost:
                self.storage.release_lease(self.account, self.run_id)
        except StorageError as exc:
            status = "failed"
            log.error("storage error while stopping: %s; the run stays 'running' until the next start marks it "
                      "crashed", exc)
        if status != "failed" or self.storage_degraded is False:
            try:
                from prod_core.reports import write_run_report

                folder = write_run_report(self.storage, self.run_id, Path(self.settings.reports_dir), self.log_path)
                self.storage.record_export(self.run_id, kind="report", path=str(folder), rows=0, ts=time.time(),
                                           actor="runner")
                if self.recording:
                    from prod_core.feeds.session import write_session

                    write_session(Path(folder), self.run_id, self.storage.session_bars(self.run_id),
                                  self.storage.session_events(self.run_id))
                log.info("Отчёт: %s", folder)
            except Exception as exc:  # a failed report must not lose the run
                self.live.errors_total["reports"] = self.live.errors_total.get("reports", 0) + 1
                log.error("report for run %s failed: %s", self.run_id, exc)
        self.storage.close_quietly()
        self._save_metrics()
        log.info("Paper-loop остановлен (run_id=%s)", self.run_id)
        self._announce_linger()
        self._copy_log()
        self._linger()
        if status == "stopped":  # a failed run leaves its target: Prometheus sees it down and alerts
            self._remove_sd_file()
        self.exporter.stop()
        self.events_csv.close()
        logging.shutdown()
        return status

    def _write_sd_file(self) -> None:
        """Prometheus file_sd: ``<PROMETHEUS_SD_DIR>/<account>.json`` names this runner's exporter."""
        from prod_core.telemetry.discovery import write_sd_file

        directory = self.settings.prometheus_sd_dir
        if not directory:
            return
        try:
            self.sd_file = write_sd_file(directory, self.account, host=self.settings.prometheus_sd_host,
                                         port=self.exporter.port, run_id=self.run_id)
        except OSError as exc:  # discovery is an aid: the run goes on, scraped by a static target if any
            log.warning("Prometheus file_sd: не записан %s/%s.json: %s", directory, self.account, exc)
            return
        log.info("Prometheus file_sd: %s (account=%s, target %s:%d)", self.sd_file, self.account,
                 self.settings.prometheus_sd_host, self.exporter.port)
        if self.exporter.port == 9108 and self.account != "paper":
            log.warning("Счёт %s на порту 9108: статическая цель Prometheus localhost:9108 помечена account=paper "
                        "(configs/prometheus/prometheus.yml); дайте этому runner другой PROMETHEUS_PORT", self.account)

    def _remove_sd_file(self) -> None:
        from prod_core.telemetry.discovery import remove_sd_file

        if getattr(self, "sd_file", None) is not None:
            remove_sd_file(self.sd_file.parent, self.account, self.run_id)

    def _copy_log(self) -> None:
        folder = Path(self.settings.reports_dir) / f"run_{self.run_id}"
        if folder.is_dir():
            for handler in logging.getLogger().handlers:
                handler.flush()
            shutil.copyfile(self.log_path, folder / "run.log")

    def _stage_quantiles(self) -> dict[str, dict[str, float]]:
        """p50/p95 of each stage's latency over the run (for the report), stages that were timed."""
        st = self.live.stage_times
        return {stage: {"p50": round(st.quantile_ms(stage, 0.5), 4), "p95": round(st.quantile_ms(stage, 0.95), 4),
                        "count": st.count[i]}
                for i, stage in enumerate(st.stages) if st.count[i]}

    def _save_metrics(self) -> None:
        """The exporter's last scrape as ``reports/run_<id>/metrics.txt``: the metrics at the end of the
        session stay readable after the exporter is gone."""
        folder = Path(self.settings.reports_dir) / f"run_{self.run_id}"
        if not folder.is_dir():
            return
        try:
            from prometheus_client import generate_latest

            (folder / "metrics.txt").write_bytes(generate_latest(self.exporter.registry))
            log.info("Метрики на момент остановки: %s", folder / "metrics.txt")
        except Exception as exc:  # the run is saved; a missing metrics file must not fail the stop
            log.error("metrics.txt for run %s not written: %s", self.run_id, exc)

    def _linger_s(self) -> float:
        default = 0.0 if self.replay else self.settings.exporter_linger_s
        return self.args.linger if self.args.linger is not None else default

    def _announce_linger(self) -> None:
        linger = self._linger_s()
        if linger > 0:
            log.info("Экспортер метрик остаётся на порту %s ещё %.0f с (последний scrape для Prometheus; "
                     "повторный Ctrl+C — выйти сразу; метрики сохранены в reports/run_%s/metrics.txt)",
                     self.exporter.port, linger, self.run_id)

    def _linger(self) -> None:
        linger = self._linger_s()
        if linger <= 0:
            return
        signals_before = self._signals
        self._wake.clear()
        end = time.time() + linger
        while time.time() < end and self._signals == signals_before:
            self._wake.wait(min(0.2, end - time.time()))
            self.live.runner_last_cycle_ts = time.time()


class _StartRefused(Exception):
    """The feed found a setting to fix at its first connection (exit 2)."""


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return os.environ.get("USER", "unknown")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(
            flags={
                "feed": args.feed,
                "prometheus_port": args.port,
                "db_path": args.db,
                "config_dir": args.config_dir,
                "log_level": args.log_level,
                "sim_bar_interval_s": args.bar_interval,
            }
        )
        if settings.execution != "sim":
            raise ConfigError(
                f"EXECUTION={settings.execution}: only the paper fill simulator exists in this build; "
                "use EXECUTION=sim (no order ever leaves this process)"
            )
        loader = ConfigLoader(settings.config_dir)
        gov = loader.load_governance()
        symbols = loader.load_symbols()
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr, flush=True)
        return 2
    # A bad DB path (directory, text file, read-only, under a regular file, postgresql URL)
    # is one clear line before anything starts, not a traceback from deep inside the run.
    from prod_core.storage import StorageError
    from prod_core.storage.paths import check_db_path

    try:
        target = check_db_path(settings.database(args.db), create=True)
        if target.lower().startswith(("postgresql://", "postgres://")):  # a server: reach it (and migrate) now
            from prod_core.storage import Storage

            Storage(target).close()
    except StorageError as exc:
        print(f"storage error: {exc}", file=sys.stderr, flush=True)
        return 2
    return PaperRunner(settings, gov, symbols, args, loader).run()


class _RecordedFunding:
    """Passes funding rates through and records each settled one as a session event."""

    def __init__(self, source: FundingRates, record) -> None:
        self._source = source
        self._record = record
        self._seen: set[tuple[str, int]] = set()

    def rate(self, symbol: str, funding_ts_ms: int) -> float | None:
        rate = self._source.rate(symbol, funding_ts_ms)
        if rate is not None and (symbol, funding_ts_ms) not in self._seen:
            self._seen.add((symbol, funding_ts_ms))
            self._record("funding_rate", {"symbol": symbol, "ts_ms": funding_ts_ms, "rate": rate})
        return rate


def _instrument_record(inst: Instrument) -> dict:
    """An instrument as a recorded session keeps it (kind, rules, margin, funding)."""
    rec = {f.name: getattr(inst, f.name) for f in dataclasses.fields(inst) if f.name != "symbol"}
    rec["kind"] = inst.kind.value
    return rec


def _recorded_instrument(symbol: str, rec: dict | str) -> Instrument:
    """The instrument a recorded session traded (sessions before margin accounting kept only the kind)."""
    if isinstance(rec, str):
        return Instrument(symbol=symbol, kind=InstrumentKind(rec))
    known = {f.name for f in dataclasses.fields(Instrument)}
    values = {k: v for k, v in rec.items() if k in known}
    values["kind"] = InstrumentKind(values.get("kind", "spot"))
    return Instrument(symbol=symbol, **values)
