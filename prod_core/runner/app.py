"""Paper-loop lifecycle: start, loop, signals, clean stop and exporter linger."""

from __future__ import annotations

import getpass
import logging
import os
import secrets
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
from prod_core.feeds.factory import build_feed
from prod_core.risk import GovernanceState
from prod_core.runner.cli_args import build_parser
from prod_core.runner.control import OperatorControl
from prod_core.runner.logs import setup_logging
from prod_core.runner.pipeline import Pipeline
from prod_core.storage import Storage
from prod_core.telemetry import EventsCsv, LiveMetrics, start_exporter

log = logging.getLogger("prod_core.runner")

HEARTBEAT_S = 1.0
STALE_RUN_S = 3.0  # three missed heartbeats: that runner is gone
MAX_SLEEP_S = 0.2
COMMAND_POLL_S = 0.5


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(2)


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
        self._wake = threading.Event()
        self._signals = 0

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
               fields: dict | None = None, log: bool = True) -> None:
        ts = time.time()
        fields = fields or {}
        self.storage.add_event(self.run_id, ts=ts, kind=kind, severity=severity, component=component,
                               message=message, fields=fields)
        self.events_csv.write(ts=ts, run_id=self.run_id, kind=kind, severity=severity, component=component,
                              message=message, fields=fields)
        if log:
            level = {"warning": logging.WARNING, "error": logging.ERROR, "critical": logging.CRITICAL}.get(
                severity, logging.INFO)
            globals()["log"].log(level, message)

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
        self.account = f"replay:{self.run_id}" if self.replay else "paper"
        self.storage = Storage(self.args.db or settings.db_path)
        stale = self.storage.mark_stale_runs(t_start, STALE_RUN_S)
        for rid in stale:
            log.warning("run %s had no heartbeat for %.0f s: marked crashed", rid, STALE_RUN_S)
        self.events_csv = EventsCsv(Path(settings.reports_dir) / "telemetry_events.csv")
        instruments = {
            s.symbol: Instrument(symbol=s.symbol, kind=InstrumentKind(s.kind)) for s in self.symbols.symbols
        }
        for symbol in self.feed.symbols:  # replayed symbols not in symbols.yaml trade as spot
            instruments.setdefault(symbol, Instrument(symbol=symbol))
        chash = config_hash(self.gov, self.symbols)
        self.storage.start_run(self.run_id, mode=settings.mode, feed=settings.feed, config_hash=chash,
                               code_version=__version__, ts=t_start, args=" ".join(sys.argv[1:]))
        # Governance belongs to the paper account; a replay is a fresh account of its own.
        state_dict = None if self.replay else self.storage.load_governance_state(account=self.account)
        self.state = GovernanceState.from_dict(state_dict) if state_dict else GovernanceState()
        self.live = LiveMetrics(feeds=[self.feed.name], symbols=list(self.feed.symbols),
                                strategies=["trend_following", "mean_reversion"])
        self.live.runner_up = 1
        self.live.runner_last_cycle_ts = t_start
        try:
            self.exporter = start_exporter(self.live, port=settings.prometheus_port, bind=settings.prometheus_bind)
        except OSError as exc:
            log.error("%s", exc)
            self.storage.end_run(self.run_id, status="failed", ts=time.time())
            self.storage.close()
            return 2
        log.info("Prometheus exporter слушает порт %d (http://%s:%d/metrics)", self.exporter.port,
                 settings.prometheus_bind, self.exporter.port)
        self.pipeline = Pipeline(run_id=self.run_id, gov=self.gov, instruments=instruments, storage=self.storage,
                                 live=self.live, notify=self.notify, state=self.state, feed_name=self.feed.name,
                                 clock_mode="bar" if self.replay else "wall",
                                 timing_every=16 if self.replay else 1, persist=self.persist_state)
        if not self.replay:
            carried = [p for p in self.storage.open_positions() if not self._is_replay_run(p["run_id"])]
            if carried:
                log.info("Счёт: %d открытых позиций из прошлых запусков", len(carried))
            self.pipeline.restore_positions(carried, flatten_at_mark=settings.feed == "sim",
                                            ts_ms=int(t_start * 1000))
        self._apply_alert_test_overlay()
        if not self.replay:
            self.control.poll()  # commands issued while no runner was up
        try:
            self.feed.start(time.time())
        except Exception as exc:  # bad symbol, auth, unreachable exchange: a clear fatal error
            log.error("feed %s failed to start: %s", self.feed.name, exc)
            self.live.runner_up = 0
            self.storage.end_run(self.run_id, status="failed", ts=time.time())
            self.storage.close()
            self.exporter.stop()
            return 2
        rejected = getattr(self.feed, "rejected", None) or {}
        for kind, count in rejected.items():  # rows that could not even become a bar
            self.live.anomalies_total[(self.feed.name, kind)] = count
        self.pipeline.live_from_ms = self.feed.live_from_ms
        self.live.feed_health[self.feed.name] = int(FeedHealth.HEALTHY)
        self.storage.set_feed_state(self.run_id, self.feed.name, 1, time.time(), "registered")
        self.notify("feed_registered",
                    f"Фид {self.feed.name} зарегистрирован: {', '.join(self.feed.symbols)}",
                    component="feed", fields={"feed": self.feed.name, "symbols": list(self.feed.symbols)})
        self.notify("run_started", f"run {self.run_id} started", fields={"config_hash": chash,
                    "user": _user(), "max_seconds": self.args.max_seconds}, log=False)
        status = "stopped"
        self.engine_s = 0.0
        try:
            self._loop(t_start)
        except Exception as exc:  # the loop must stop safely whatever happens
            status = "failed"
            self.live.errors_total["runner"] = self.live.errors_total.get("runner", 0) + 1
            log.exception("paper-loop failed: %s", exc)
        self._shutdown(status)
        if self.replay and status == "stopped":
            bars = sum(self.live.bars_total.values())
            print(f"replay: bars={bars} fills={self.pipeline.fills_seen} engine_s={self.engine_s:.3f}", flush=True)
        return 0 if status == "stopped" else 1

    def _is_replay_run(self, run_id: str) -> bool:
        row = self.storage.get_run(run_id)
        return bool(row and row.get("feed") == "replay")

    def _loop(self, t_start: float) -> None:
        feed = self.feed
        pipeline = self.pipeline
        live = self.live
        storage = self.storage
        deadline = t_start + self.args.max_seconds if self.args.max_seconds else None
        last_hb = 0.0
        last_cmd = 0.0
        last_health = self.live.feed_health.get(feed.name, 1)
        t_engine = time.perf_counter()
        while True:
            now = time.time()
            if self.stop_requested:
                break
            if deadline is not None and now >= deadline:
                self.stop_reason = f"--max-seconds {self.args.max_seconds:g}"
                break
            bars = feed.poll(now)
            if bars:
                live.feed_last_bar_ts[feed.name] = now
            for bar in bars:
                pipeline.on_bar(bar)
            now = time.time()
            health = self._overlay_health(feed.health(now))
            pipeline.feed_ok = health == 1
            if health != last_health:
                live.feed_health[feed.name] = health
                storage.set_feed_state(self.run_id, feed.name, health, now)
                self.notify("feed_health", f"feed {feed.name} health {last_health} -> {health}",
                            severity="warning" if health == 0 else "info", component="feed",
                            fields={"feed": feed.name, "health": health})
                last_health = health
            live.runner_last_cycle_ts = now
            if now - last_cmd >= COMMAND_POLL_S or self.control.reload_requested:
                last_cmd = now
                if not self.replay:
                    self.control.poll()
                    self.control.watch()
            if now - last_hb >= HEARTBEAT_S:
                last_hb = now
                storage.heartbeat(self.run_id, now)
                pipeline.tick(now)
                self._save_state(now)
            storage.maybe_flush(now)
            if feed.exhausted:
                self.stop_reason = "end of data"
                self.engine_s = time.perf_counter() - t_engine
                break
            if bars:
                continue  # more may be ready at once (replay at max speed, catch-up)
            wake = min(now + MAX_SLEEP_S, last_hb + HEARTBEAT_S, last_cmd + COMMAND_POLL_S)
            due = feed.next_due_s()
            if due is not None:
                wake = min(wake, due)
            if deadline is not None:
                wake = min(wake, deadline)
            delay = wake - time.time()
            if delay > 0:
                self._wake.wait(delay)
                self._wake.clear()  # flags set by signal handlers are re-checked at the top

    def _apply_alert_test_overlay(self) -> None:
        """ALERT_TEST_* drills: a loud, non-persisted overlay on the real gates (paper mode only)."""
        s = self.settings
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

    def _overlay_health(self, health: int) -> int:
        test = self.settings.alert_test_feed_health
        if test is None or health == int(FeedHealth.PAUSED):
            return health
        return 0 if test == "bad" else 1

    def persist_state(self) -> None:
        """Write the account's governance state now (locks, kill-switch, commands)."""
        self._save_state(time.time())

    def apply_governance(self, gov: GovernanceConfig) -> None:
        """Install a validated governance config between two bars."""
        self.gov = gov
        self.pipeline.apply_config(gov)
        self.pipeline.refresh()

    def _save_state(self, now: float) -> None:
        self.pipeline.persist_marks()
        self.state.cash_usd = self.pipeline.broker.cash_usd
        self.storage.save_governance_state(self.state.to_dict(), ts=now, account=self.account)

    def _shutdown(self, status: str) -> None:
        log.info("Остановка paper-loop (%s): завершаю feed и отменяю ожидающие планы", self.stop_reason or status)
        cancelled = self.pipeline.cancel_pending()
        if self.replay:
            self.pipeline.flatten_at_end()
        self.storage.cancel_pending_plans(self.run_id)
        self.feed.stop()
        now = time.time()
        self.live.feed_health[self.feed.name] = int(FeedHealth.PAUSED)
        self.live.pending_plans = 0
        # runner_up 0 marks a PLANNED stop (alerts stay quiet); a failed loop keeps 1 so
        # that the disappearing exporter pages (RunnerHeartbeatLost / MetricsDeadman).
        self.live.runner_up = 0 if status == "stopped" else 1
        self.live.runner_last_cycle_ts = now
        self.storage.set_feed_state(self.run_id, self.feed.name, int(FeedHealth.PAUSED), now, "stopped")
        self._save_state(now)
        self.notify("run_stopped", f"run {self.run_id} {status}: {self.stop_reason}", component="runner",
                    fields={"cancelled_plans": cancelled, "plans": self.pipeline.plans_seen,
                            "fills": self.pipeline.fills_seen, "bars": sum(self.live.bars_total.values()),
                            "anomalies": {f"{feed}:{kind}": n for (feed, kind), n in self.live.anomalies_total.items()}},
                    log=False)
        self.storage.end_run(self.run_id, status=status, ts=now)
        try:
            from prod_core.reports import write_run_report

            folder = write_run_report(self.storage, self.run_id, Path(self.settings.reports_dir), self.log_path)
            log.info("Отчёт: %s", folder)
        except Exception as exc:  # a failed report must not lose the run
            self.live.errors_total["reports"] = self.live.errors_total.get("reports", 0) + 1
            log.error("report for run %s failed: %s", self.run_id, exc)
        self.storage.close()
        log.info("Paper-loop остановлен (run_id=%s)", self.run_id)
        self._copy_log()
        self._linger()
        self.exporter.stop()
        self.events_csv.close()
        logging.shutdown()

    def _copy_log(self) -> None:
        folder = Path(self.settings.reports_dir) / f"run_{self.run_id}"
        if folder.is_dir():
            for handler in logging.getLogger().handlers:
                handler.flush()
            shutil.copyfile(self.log_path, folder / "run.log")

    def _linger(self) -> None:
        default = 0.0 if self.replay else self.settings.exporter_linger_s
        linger = self.args.linger if self.args.linger is not None else default
        if linger <= 0:
            return
        signals_before = self._signals
        self._wake.clear()
        end = time.time() + linger
        while time.time() < end and self._signals == signals_before:
            self._wake.wait(min(0.2, end - time.time()))
            self.live.runner_last_cycle_ts = time.time()


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
        check_db_path(args.db or settings.db_path, create=True)
    except StorageError as exc:
        print(f"storage error: {exc}", file=sys.stderr, flush=True)
        return 2
    return PaperRunner(settings, gov, symbols, args, loader).run()
