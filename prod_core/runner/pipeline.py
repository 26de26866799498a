"""One cycle per bar: feed -> regime -> strategy -> risk -> portfolio -> execution -> storage -> telemetry.

The same ``Pipeline`` runs in paper mode (wall clock) and replay (bar clock). It wires the
pure decision packages to the adapters: the paper broker, the storage DAO and the live
metrics that the exporter reads at scrape time. Per bar it does a handful of dict
lookups and float operations unless a plan or a position exists.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from time import perf_counter_ns

from msgspec.structs import replace

from prod_core.account import FillBodies, state_body
from prod_core.account.margin import exit_cash, open_cash
from prod_core.configs.governance import GovernanceConfig
from prod_core.domain import Bar, Decision, Fill, FillReason, Instrument, Order, OrderStatus, Position, Regime, TradePlan
from prod_core.execution import ClosedTrade, paper
from prod_core.feeds.hygiene import classify, is_clean
from prod_core.portfolio import BookSnapshot, PortfolioController, fit
from prod_core.regime import RegimeDetector, RegimeParams
from prod_core.risk import GovernanceState, RiskSnapshot, day_of, evaluate, mark_open_r, on_entry_filled, on_trade_closed
from prod_core.risk.ledger import roll_day
from prod_core.risk.operator import hold, reset_drawdown
from prod_core.storage import AccountWrite, LeaseLost, StorageError, journal_fill_row, journal_funding_row, journal_row
from prod_core.strategies import Entry, Exit, MeanReversionParams, Strategy, StrategyKind, TrendFollowingParams
from prod_core.strategies.api import to_plan
from prod_core.strategies.base import build_kinds

# Enum members on the hot path are read as module globals: on Python 3.11 ``Side.BUY`` costs ~150 ns
# more than a global (``EnumType.__getattr__`` sends every attribute lookup on an enum class down
# the slow path), and a fill reads a dozen of them.
_EXIT_SIGNAL, _KILL_SWITCH, _LIQUIDATION = (
    FillReason.EXIT_SIGNAL, FillReason.KILL_SWITCH, FillReason.LIQUIDATION)
_FILLED, _REJECTED, _PARTIAL, _CANCELLED = (
    OrderStatus.FILLED, OrderStatus.REJECTED, OrderStatus.PARTIAL, OrderStatus.CANCELLED)
_WARMUP = Regime.WARMUP

Notify = Callable[..., None]
ANOMALY_LOG_EVERY_S = 5.0
STRATEGY_ERROR_LOG_EVERY_S = 60.0
_REGIME_KEYS = {Regime.CALM: "calm", Regime.TREND_UP: "trend_up", Regime.TREND_DOWN: "trend_down", Regime.VOLATILE: "volatile"}


class _Slot:
    """One strategy instance of one symbol and the bars it has seen."""

    __slots__ = ("strategy", "name", "seen", "on_bar")

    def __init__(self, strategy: Strategy) -> None:
        self.strategy = strategy
        self.name = strategy.name
        self.seen = 0
        self.on_bar = strategy.on_bar


def _exposure_pct(equity: float, gross: float, net: float) -> tuple[float, float, float]:
    """(equity, gross %, net %) of the equity (0 % when equity <= 0)."""
    if equity <= 0:
        return equity, 0.0, 0.0
    return equity, gross / equity * 100.0, net / equity * 100.0


def regime_params(kinds: dict[str, StrategyKind]) -> RegimeParams:
    """The regime detector's indicator lengths: the built-in strategies' own (their features are
    the detector's), else the defaults."""
    fast, slow, mr = RegimeParams.fast_bars, RegimeParams.slow_bars, RegimeParams.mr_bars
    for kind in kinds.values():
        p = kind.params
        if isinstance(p, TrendFollowingParams):
            fast, slow = p.fast_bars, p.slow_bars
        elif isinstance(p, MeanReversionParams):
            mr = p.lookback_bars
    return RegimeParams(fast_bars=fast, slow_bars=slow, mr_bars=mr)


class Pipeline:
    """Wires the stages for one run. Implements the broker's sink."""

    def __init__(
        self,
        *,
        run_id: str,
        gov: GovernanceConfig,
        instruments: dict[str, Instrument],
        storage,
        live,
        notify: Notify,
        state: GovernanceState,
        feed_name: str,
        clock_mode: str = "wall",
        wall_clock: Callable[[], float] = time.time,
        equity_every: int = 1,
        timing_every: int = 1,
        account: str = "paper",
        immediate: bool = True,
        on_storage_error: Callable[[Exception], None] | None = None,
        bar_days: bool = True,
        funding=None,
        trade_events: bool = True,
    ) -> None:
        self.run_id = run_id
        self.account = account
        # Paper mode commits every fill and transition at once; a replay batches them.
        self.immediate = immediate
        self.on_storage_error = on_storage_error
        self.storage_ok = True
        self._journaled_key: tuple | None = None
        self._gov_dirty = False
        self._close_info: tuple | None = None
        self.instruments = instruments
        self._can_short = {s: i.can_short for s, i in instruments.items()}
        self.storage = storage
        self.live = live
        self.notify = notify
        self.state = state
        self.feed_name = feed_name
        self.clock_mode = clock_mode
        # Replay rolls the UTC day on the bar clock; a recorded session replays its own day rolls.
        self._bar_days = clock_mode == "bar" and bar_days
        self.wall_clock = wall_clock
        self.equity_every = max(1, equity_every)
        self.timing_every = max(1, timing_every)
        self._timing_countdown = 1
        self.live_from_ms = 0
        self.last_ts: dict[str, int] = {}
        self.portfolio = PortfolioController(tuple(instruments), gov.portfolio)
        self._sym_index = {s: i for i, s in enumerate(instruments)}
        self._rets: list[float | None] = [None] * len(instruments)
        self._prev_close: dict[str, float] = {}
        self._corr_ts = -1
        self.feed_ok = True
        # ALERT_TEST_* overlay (never persisted): feeds the same gates as the real state.
        self.overlay_lock: str | None = None
        self.overlay_safe: bool | None = None
        self._stage = live.stage_times.record
        self._equity_tick = 0
        self._last_equity_ts = -1
        self._next_day_ms = -1
        self._outcomes: deque[int] = deque()
        self._rejects_in_window = 0  # sum of ``_outcomes``, kept as outcomes come and go
        self._fill_bodies: FillBodies | None = None
        self._anomaly_logged_at = float("-inf")
        self._anomaly_burst = 0
        self._anomaly_pending: tuple = ()
        self.plans_seen = 0
        self.fills_seen = 0
        # Events per plan, fill, funding payment and rejected order (paper mode). A replay leaves
        # them out: the plans, orders, fills and journal tables hold the same facts.
        self.trade_events = trade_events
        self._account_dirty = False
        self._strategy_logged: dict[str, float] = {}
        if state.cash_usd is None:
            state.cash_usd = gov.account.starting_equity_usd
        # (``paper.PaperBroker``: the compiled build declares the name ``PaperBroker`` as a C type, pipeline.pxd)
        self.broker = paper.PaperBroker(gov.execution, instruments, self, cash_usd=state.cash_usd, id_prefix=f"{run_id}-",
                                  funding=funding)
        self.detector: RegimeDetector | None = None
        self.kinds: dict[str, StrategyKind] = {}
        self._slots: dict[str, list[_Slot]] = {}
        self.apply_config(gov)
        # The UTC day is rolled by ``tick`` (journaled), never silently here.

    # ---------------------------------------------------------------- config
    def set_instruments(self, instruments: dict[str, Instrument]) -> None:
        """New exchange rules (a ccxt feed loaded its markets) for orders filled from now on."""
        self.instruments = {**self.instruments, **instruments}
        self.broker.set_instruments(self.instruments)

    def apply_config(self, gov: GovernanceConfig) -> None:
        """Install a (validated) governance config; indicators and strategy instances keep their state
        when their parameters did not change."""
        self.gov = gov
        kinds = build_kinds(gov.strategies)
        params = regime_params(kinds)
        uses_features = any(k.uses_features for k in kinds.values()) or any(
            name not in gov.enable_map.always for name in gov.enable_map.names())
        if not uses_features:
            self.detector = None
        elif self.detector is None or self.detector.params != params:
            self.detector = RegimeDetector(params)
        old = self.kinds
        self.kinds: dict[str, StrategyKind] = kinds
        if kinds != old:  # a changed strategy starts over; unchanged ones keep their state
            self._slots = {sym: [s for s in slots if kinds.get(s.name) == old.get(s.name)]
                           for sym, slots in self._slots.items()}
            for sym in list(self._slots):
                self._slots[sym] = self._build_slots(sym, keep=self._slots[sym])
        self._enabled = self._enable_table(gov.enable_map)
        self._enabled_safe = self._enable_table(gov.safe_mode_enable_map)
        self._sync_enable()
        self.broker.reconfigure(gov.execution)
        self.portfolio.reconfigure(gov.portfolio)
        # safe_mode_corr_excess null: no correlation monitor, no log returns per bar
        self._corr_on = gov.portfolio.safe_mode_corr_excess is not None
        # The firm-wide gross cap: paper mode only (a replay's account is its own); None = off.
        self._firm_cap = gov.portfolio.firm_max_gross_exposure_usd if self.clock_mode == "wall" else None
        self.live.dd_critical_r = gov.drawdown.critical_max_dd_r
        self._auto_kill_at = gov.kill_switch.auto_at_max_dd_r
        self.live.stage_sla_ms = gov.sla.stage_latency_ms

    @property
    def strategy_names(self) -> tuple[str, ...]:
        return tuple(self.kinds)

    def _build_slots(self, sym: str, keep: list | None = None) -> list[_Slot]:
        """One strategy instance per configured strategy for ``sym`` (config order)."""
        kept = {s.name: s for s in keep or ()}
        can_short = self._can_short.get(sym, False)
        return [kept.get(name) or _Slot(kind.build(sym, can_short)) for name, kind in self.kinds.items()]

    def _enable_table(self, enable_map) -> dict[Regime, frozenset[str]]:
        table: dict[Regime, frozenset[str]] = {_WARMUP: frozenset(enable_map.allowed("warmup"))}
        for regime, key in _REGIME_KEYS.items():
            table[regime] = frozenset(enable_map.allowed(key))
        return table

    # ------------------------------------------------------------------- bar
    def on_bar(self, bar: Bar) -> None:
        """Run one bar through the stages. Stage times are recorded on every
        ``timing_every``-th bar (every bar in paper mode), so timing costs nothing per bar
        in a replay."""
        countdown = self._timing_countdown - 1
        timed = countdown <= 0
        self._timing_countdown = self.timing_every if timed else countdown
        if timed:
            rec = self._stage
            t0 = perf_counter_ns()
        sym = bar.symbol
        last = self.last_ts.get(sym, -1)
        if not is_clean(bar, last):
            self._anomaly(bar, last)
            if timed:
                rec(0, perf_counter_ns() - t0)
            return
        self.last_ts[sym] = bar.ts_ms
        live = self.live
        bars_total = live.bars_total
        bars_total[sym] = bars_total.get(sym, 0) + 1
        if bar.ts_ms >= self._next_day_ms and self._bar_days:
            self._new_bar_day(bar.ts_ms)
        if self._corr_on:
            if bar.ts_ms != self._corr_ts:
                if self._corr_ts >= 0:
                    self._portfolio_tick(timed)
                self._corr_ts = bar.ts_ms
            prev = self._prev_close.get(sym)
            if prev is not None:
                self._rets[self._sym_index[sym]] = math.log(bar.close / prev)
            self._prev_close[sym] = bar.close
        elif self.portfolio.safe_mode:  # safe mode turned off by a reload: release it
            self._portfolio_tick(timed)
        if timed:
            t1 = perf_counter_ns()
            rec(0, t1 - t0)

        broker = self.broker
        broker.on_bar(bar)
        pos = broker.positions.get(sym)
        if pos is not None:
            self._mark()
            pos = broker.positions.get(sym)  # an automatic kill-switch may have flattened it
        if timed:
            t2 = perf_counter_ns()
            rec(5, t2 - t1)

        detector = self.detector
        if detector is not None:
            f = detector.update(bar)
            regime = f.regime
            live.regime[sym] = regime
        else:
            f = None
            regime = _WARMUP
        if timed:
            t3 = perf_counter_ns()
            rec(1, t3 - t2)

        plan = None
        slots = self._slots.get(sym)
        if slots is None:
            slots = self._slots[sym] = self._build_slots(sym)
        for slot in slots:
            own = pos if pos is not None and pos.strategy == slot.name else None
            slot.seen += 1
            try:
                signal = slot.on_bar(bar, f, own)
            except Exception as exc:  # a strategy's bug holds that strategy, never the runner
                self._strategy_failed(slot.strategy, bar, exc)
                continue
            if signal is None or bar.ts_ms < self.live_from_ms:
                continue
            if signal.__class__ is Exit:
                if own is not None and sym not in broker.pending_exits:
                    broker.request_exit(sym, _EXIT_SIGNAL, bar.ts_ms)
            elif (plan is None and pos is None and slot.name in self._enabled_now[regime]
                  and slot.seen > slot.strategy.warmup_bars and sym not in broker.pending_entries):
                plan = self._plan(slot.name, bar, signal, regime)
        if timed:
            t4 = perf_counter_ns()
            rec(2, t4 - t3)

        if plan is not None:
            self._handle_plan(plan, timed)

        if bar.ts_ms != self._last_equity_ts:
            self._last_equity_ts = bar.ts_ms
            self._equity_tick += 1
            if self._equity_tick >= self.equity_every:
                self._equity_tick = 0
                self._snapshot_equity(bar.ts_ms)
        if timed:
            t5 = perf_counter_ns()
            rec(6, t5 - t4)
            rec(7, perf_counter_ns() - t5)

    def _plan(self, name: str, bar: Bar, entry: Entry, regime: Regime) -> TradePlan | None:
        try:
            return to_plan(name, bar, entry, regime)
        except ValueError as exc:  # an entry with its stop on the wrong side is the strategy's bug
            self._strategy_failed(self._slot_strategy(name, bar.symbol), bar, exc)
            return None

    def _slot_strategy(self, name: str, symbol: str) -> Strategy:
        return next(s.strategy for s in self._slots[symbol] if s.name == name)

    def _strategy_failed(self, strat: Strategy, bar: Bar, exc: Exception) -> None:
        """Hold the strategy (journaled like an operator's hold), count the error, log it (not per bar)."""
        name = strat.name
        live = self.live
        live.strategy_errors_total[name] = live.strategy_errors_total.get(name, 0) + 1
        held_now = hold(self.state, name, self.strategy_names).applied
        if held_now:
            self.journal_governance("hold", {"strategy": name, "automatic": True,
                                             "error": f"{type(exc).__name__}: {exc}"[:500]}, force=True)
            self._refresh_account()
        now = self.wall_clock()
        last = self._strategy_logged.get(name, float("-inf"))
        if held_now or now - last >= STRATEGY_ERROR_LOG_EVERY_S:
            self._strategy_logged[name] = now
            self.notify("strategy_error",
                        f"Стратегия {name} упала на {bar.symbol} ts_ms={bar.ts_ms}: {type(exc).__name__}: {exc}; "
                        f"стратегия на hold (новых входов нет, выходы по стопам ведутся), runner работает дальше; "
                        f"после исправления: `python -m prod_core.cli release {name} --comment ...`",
                        severity="error", component="strategy",
                        fields={"strategy": name, "symbol": bar.symbol, "ts_ms": bar.ts_ms,
                                "error": f"{type(exc).__name__}: {exc}"[:500],
                                "errors_total": live.strategy_errors_total[name]},
                        exc_info=exc if held_now else None)

    def _handle_plan(self, plan, timed: bool) -> None:
        rec = self._stage
        t_start = perf_counter_ns()
        state = self.state
        broker = self.broker
        snap = RiskSnapshot(
            equity_usd=broker.equity_usd,
            lock_reason=self.effective_lock,
            kill_switch=state.kill_switch,
            dd_state=state.dd_state,
            dd_stopped=state.dd_stopped,
            safe_mode=self.effective_safe_mode,
            holds=frozenset(state.holds),
            feed_ok=self.feed_ok,
            storage_ok=self.storage_ok,
        )
        decision = evaluate(plan, snap, self.gov)
        t1 = perf_counter_ns()
        rec(3, t1 - t_start)
        gross, net = broker.exposure_usd()
        book = BookSnapshot(
            equity_usd=snap.equity_usd,
            gross_usd=gross,
            net_usd=net,
            symbol_usd=broker.symbol_usd(plan.symbol),
            positions=len(broker.positions) + len(broker.pending_entries),
            symbol_busy=plan.symbol in broker.positions or plan.symbol in broker.pending_entries,
        )
        decision = fit(decision, book, self.gov, self.gov.execution.min_notional_usd)
        if self._firm_cap is not None and decision.approved:
            decision = self._reserve_firm(decision, gross, self._firm_cap)
        t2 = perf_counter_ns()
        rec(4, t2 - t1)
        self.plans_seen += 1
        key = (plan.strategy, decision.decision)
        plans_total = self.live.plans_total
        plans_total[key] = plans_total.get(key, 0) + 1
        self.storage.add_plan(
            self.run_id,
            plan_id=plan.plan_id,
            ts_ms=plan.ts_ms,
            strategy=plan.strategy,
            symbol=plan.symbol,
            side=plan.side._value_,
            entry=plan.entry,
            stop=plan.stop,
            target=plan.target,
            reason=plan.reason,
            regime=int(plan.regime),
            decision=decision.decision,
            qty=decision.qty,
            risk_usd=decision.risk_usd,
            nominal_r_usd=decision.nominal_r_usd,
            status="pending" if decision.approved else "vetoed",
        )
        if self.trade_events:
            self._plan_event(plan, decision)
        if decision.approved:
            broker.submit_entry(decision, plan.ts_ms)
            self.live.pending_plans = len(broker.pending_entries)
        rec(5, perf_counter_ns() - t2)

    def _reserve_firm(self, decision: Decision, own_usd: float, cap_usd: float) -> Decision:
        """Reserve the entry's notional under the firm-wide gross cap (one write transaction shared
        by every runner on the database), or veto it ``vetoed_firm_gross``. A storage error vetoes
        too: the entry is never sent unchecked."""
        add = decision.qty * decision.plan.entry
        try:
            res = self.storage.reserve_firm_gross(self.account, own_usd=own_usd, add_usd=add, cap_usd=cap_usd,
                                                  ts=self.wall_clock())
        except LeaseLost:
            raise
        except StorageError as exc:
            self.storage_failed(exc)
            return replace(decision, decision="vetoed_firm_gross", qty=0.0, risk_usd=0.0,
                           reason=f"firm gross not reserved (storage error): {exc}"[:500])
        if res.passed:
            return decision
        return replace(decision, decision="vetoed_firm_gross", qty=0.0, risk_usd=0.0,
                       reason=f"firm gross would be {res.total_usd:.2f} USD > cap {cap_usd:.2f} USD "
                              f"(other accounts {res.other_usd:.2f}, this {own_usd:.2f}, entry {add:.2f})")

    def record_firm_gross(self, ts: float) -> None:
        """Write this account's gross now to the firm exposure table (heartbeat save and clean stop;
        nothing when the firm cap is off or in a replay). Raises ``StorageError``."""
        if self._firm_cap is None:
            return
        gross, _ = self.broker.exposure_usd()
        self.storage.set_firm_gross(self.account, gross, ts=ts)

    def _plan_event(self, plan: TradePlan, decision: Decision) -> None:
        self.notify(
            "plan_" + ("approved" if decision.approved else "vetoed"),
            f"{plan.strategy} {plan.side.value} {plan.symbol}: {decision.decision}",
            component="risk",
            fields={
                "plan_id": plan.plan_id,
                "decision": decision.decision,
                "qty": round(decision.qty, 10),
                "risk_usd": round(decision.risk_usd, 4),
                "reason": decision.reason or plan.reason,
            },
            log=False,
        )

    @property
    def safe_mode(self) -> bool:
        return self.portfolio.safe_mode

    def _sync_enable(self) -> None:
        """Pick the enable map in force (safe mode or not) once, not per bar."""
        self._enabled_now = self._enabled_safe if self.effective_safe_mode else self._enabled

    def set_overlay(self, *, lock: str | None = None, safe: bool | None = None) -> None:
        """ALERT_TEST_* overlay: never persisted, fed to the same gates as the real state."""
        self.overlay_lock = lock
        self.overlay_safe = safe
        self._sync_enable()
        self._refresh_account()

    def _portfolio_tick(self, timed: bool) -> None:
        """Once per timestamp: feed the correlation monitor and the safe-mode switch."""
        t0 = perf_counter_ns() if timed else 0
        broker = self.broker
        breach = ""
        if broker.positions:
            breach = self.portfolio.exposure_breach(broker.equity_usd, *broker.position_exposure_usd())
        rets = self._rets
        flip = self.portfolio.on_timestamp(rets, breach)
        for i in range(len(rets)):
            rets[i] = None
        if flip is not None:
            self._sync_enable()
            m = self.portfolio.monitor
            self.notify(
                "safe_mode_" + flip,
                f"Safe-mode {'включён' if flip == 'engaged' else 'снят'}: "
                f"{self.portfolio.reason or 'correlation back to baseline'}",
                severity="warning" if flip == "engaged" else "info",
                component="portfolio",
                fields={"mean_corr": round(m.mean_corr, 4), "baseline": round(m.baseline, 4),
                        "reason": self.portfolio.reason, "ts_ms": max(self.last_ts.values(), default=0)},
            )
            self._refresh_account()
        if timed:
            self._stage(4, perf_counter_ns() - t0)

    @property
    def effective_lock(self) -> str:
        if self.state.lock_reason != "limits_ok":
            return self.state.lock_reason
        return self.overlay_lock or "limits_ok"

    @property
    def effective_safe_mode(self) -> bool:
        return self.safe_mode if self.overlay_safe is None else self.overlay_safe

    # ------------------------------------------------------------ accounting
    def _mark(self) -> None:
        """Mark the open positions (every bar of a symbol with a position): ladder and daily loss
        move with the marks; a transition is journaled and announced, gauges refresh per batch."""
        st = self.state
        peak, max_dd, lock, throttled, stopped = st.peak_r, st.max_dd_r, st.lock_reason, st.throttled, st.dd_stopped
        engaged = mark_open_r(st, self.broker.open_r(), self.gov)
        self._account_dirty = True  # gauges: refreshed once per batch of bars (``flush_marks``)
        if engaged or st.throttled != throttled or st.dd_stopped != stopped or st.lock_reason != lock:
            self.journal_governance("lock_engaged" if engaged else "drawdown_ladder")
            if engaged:
                self._lock_engaged(engaged)
            self._ladder_events((throttled, stopped))
        elif st.peak_r != peak or st.max_dd_r != max_dd:
            if self.immediate:
                self.journal_governance("peak")
            else:
                self._gov_dirty = True  # a replay journals the peak with its next checkpoint
        if self._auto_kill_at is not None:
            self._check_auto_kill()

    def flush_marks(self) -> None:
        """Re-export the account's gauges after the bars just processed moved the marks (the runner
        calls it after each batch of bars; an equity snapshot calls it first)."""
        if self._account_dirty:
            self._refresh_account()

    def _ladder_events(self, before: tuple[bool, bool]) -> None:
        state = self.state
        if state.dd_stopped and not before[1]:
            self.notify("drawdown_stop", f"Drawdown-стоп: dd_state={state.dd_state:.2f}R <= "
                        f"{self.gov.drawdown.no_entries_at_r}R, новые входы запрещены до `cli reset-dd --comment`",
                        severity="critical", component="risk",
                        fields={"dd_state": round(state.dd_state, 4), "max_dd_r": round(state.max_dd_r, 4)})
        elif state.throttled != before[0] and not state.dd_stopped:
            self.notify("drawdown_throttle", f"Drawdown-ladder: {'throttled' if state.throttled else 'normal'} "
                        f"(dd_state={state.dd_state:.2f}R)", component="risk",
                        fields={"throttled": state.throttled, "dd_state": round(state.dd_state, 4)}, log=False)

    def _check_auto_kill(self) -> None:
        limit = self.gov.kill_switch.auto_at_max_dd_r
        state = self.state
        if limit is not None and not state.kill_switch and state.max_dd_r >= limit:
            state.kill_switch = True
            self.journal_governance("kill_switch", {"auto": True, "max_dd_r": state.max_dd_r})
            self.notify("kill_switch", f"Kill-switch включён автоматически: max_dd_r={state.max_dd_r:.2f} >= {limit}",
                        severity="critical", component="risk", fields={"max_dd_r": state.max_dd_r, "auto": True})
            self.flatten_all(self.now_ms())

    # ------------------------------------------------------------- journal
    def _transition_key(self) -> tuple:
        st = self.state
        return (st.peak_r, st.max_dd_r, st.dd_epoch, st.dd_stopped, st.throttled, st.lock_reason, st.kill_switch,
                tuple(st.holds), st.config_hash, st.day, st.day_start_closed_r, st.trades_today,
                st.consecutive_losses)

    def snapshot(self, state=None, cash_usd: float | None = None) -> dict:
        """The account's saved state: governance state plus cash (what reconcile compares)."""
        data = (state or self.state).to_dict()
        data["cash_usd"] = self.broker.cash_usd if cash_usd is None else cash_usd
        return data

    def _commit(self, write: AccountWrite) -> bool:
        try:
            self.storage.commit_account(write, immediate=self.immediate)
        except LeaseLost:
            raise
        except StorageError as exc:
            self.storage_failed(exc)
            return False
        self.storage_ok = True
        return True

    def storage_failed(self, exc: Exception) -> None:
        """A write failed: no new entries until storage works again (exits keep being tried)."""
        self.storage_ok = False
        if self.on_storage_error is not None:
            self.on_storage_error(exc)

    def journal_governance(self, event: str, details: dict | None = None, *, force: bool = False) -> bool:
        """Journal the governance state (a transition that is not a fill) with the saved snapshot.

        Without ``force`` nothing is written unless a journaled field changed. False when the
        write failed: the change stays in force in memory and is journaled at the next try.
        """
        key = self._transition_key()
        if not force and key == self._journaled_key:
            return True
        # bar_ts_ms: the bar clock at the transition (a sim paper run's bars run ahead of the wall clock)
        body = {"state": state_body(self.state, counters=True), "details": details or {},
                "bar_ts_ms": max(self.last_ts.values(), default=0)}
        write = AccountWrite(account=self.account, run_id=self.run_id, ts=self.wall_clock(),
                             entries=(journal_row(self.now_ms(), "governance", event, body),),
                             snapshot=self.snapshot())
        if not self._commit(write):
            self._gov_dirty = True
            return False
        self._journaled_key = key
        self._gov_dirty = False
        return True

    def mark_journaled(self) -> None:
        """The state in memory is the journal's (after the start-up fold)."""
        self._journaled_key = self._transition_key()
        self._gov_dirty = False

    def save_snapshot(self) -> None:
        """Periodic save: journal what changed (peak, a transition whose write failed), then the
        snapshot with the marks; raises ``StorageError`` when storage is down."""
        if self._gov_dirty or self._transition_key() != self._journaled_key:
            if not self.journal_governance("checkpoint"):
                raise StorageError("the governance checkpoint could not be journaled")
            return
        if self.immediate:
            self.storage.commit_account(AccountWrite(account=self.account, run_id=self.run_id, ts=self.wall_clock(),
                                                     entries=(), snapshot=self.snapshot()))

    def now_ms(self) -> int:
        """The pipeline's clock: the last bar's time in replay, the wall clock in paper mode."""
        if self.clock_mode == "bar":
            return max(self.last_ts.values(), default=0)
        return int(self.wall_clock() * 1000)

    def refresh(self) -> None:
        """Re-export the account state after an operator action."""
        self._refresh_account()

    def flatten_all(self, ts_ms: int) -> int:
        """Kill-switch: cancel pending entries and close every position at market now."""
        cancelled = self.broker.cancel_pending()
        trades = self.broker.flatten_now(_KILL_SWITCH, ts_ms)
        self._refresh_account()
        return len(cancelled) + len(trades)

    def _refresh_account(self) -> None:
        self._account_dirty = False
        live = self.live
        broker = self.broker
        state = self.state
        live.equity_usd, live.exposure_gross_pct, live.exposure_net_pct = _exposure_pct(*broker.account_marks())
        live.open_positions_count = len(broker.positions)
        live.pnl_cum_r = state.pnl_cum_r
        live.dd_state = state.dd_state
        live.max_dd_r = state.max_dd_r
        live.pending_plans = len(broker.pending_entries)
        live.kill_switch_state = 1 if state.kill_switch else 0
        live.portfolio_safe_mode = 1 if self.effective_safe_mode else 0
        live.daily_lock_reason = self.effective_lock
        state.cash_usd = broker.cash_usd

    def _snapshot_equity(self, ts_ms: int) -> None:
        """One equity row (the gauges' figures, computed here: the gauges themselves refresh per batch)."""
        equity, gross_pct, net_pct = _exposure_pct(*self.broker.account_marks())
        state = self.state
        self.storage.add_equity(
            self.run_id,
            ts_ms=ts_ms,
            equity_usd=equity,
            cash_usd=self.broker.cash_usd,
            pnl_cum_r=state.pnl_cum_r,
            dd_state=state.dd_state,
            max_dd_r=state.max_dd_r,
            exposure_gross_pct=gross_pct,
            exposure_net_pct=net_pct,
        )

    def _lock_engaged(self, reason: str) -> None:
        self.live.daily_lock_reason = self.effective_lock
        self.notify(
            "lock_engaged",
            f"Дневной лок включён: {reason}",
            severity="warning",
            component="risk",
            fields={"reason": reason, "day_r": round(self.state.day_r, 4), "trades_today": self.state.trades_today},
        )

    def _new_bar_day(self, ts_ms: int) -> None:
        """Replay clock: a new simulated UTC day resets the daily counters and lifts the lock; with
        ``replay.daily_reset`` it also resets an engaged drawdown ladder, as an operator would."""
        day_ms = 86_400_000
        self._next_day_ms = (ts_ms // day_ms + 1) * day_ms
        state = self.state
        if not roll_day(state, day_of(ts_ms / 1000.0)):
            return
        reason = state.lock_reason
        if reason != "limits_ok":
            state.lock_reason = "limits_ok"
        actions: list[str] = []
        before = None
        if self.gov.replay.daily_reset:
            if reason != "limits_ok":
                actions.append("unlock")
            if state.dd_stopped or state.throttled:
                before = reset_drawdown(state, "replay.daily_reset").details["before"]
                actions.append("reset-dd")
        details = {"day": state.day, "lock_reset": reason != "limits_ok"}
        if actions:
            details["daily_reset"] = actions
        self.journal_governance("day_roll", details)
        if reason != "limits_ok":
            self.live.daily_lock_reason = self.effective_lock
            self.notify("lock_reset", f"new simulated day {state.day}: lock {reason} reset", component="risk",
                        fields={"reason": reason, "day": state.day, "automatic": True})
        if actions:
            self.notify("replay_daily_reset",
                        f"replay.daily_reset {state.day}: {', '.join(actions)} (as an operator would)",
                        component="risk", fields={"day": state.day, "actions": actions, "lock_reason": reason,
                                                  "drawdown_before": before}, log=False)
            self._refresh_account()

    def _anomaly(self, bar: Bar | None, last: int = -1, *, final: bool = False) -> None:
        """Count a rejected bar exactly; log each burst ONCE, after it is over, with its true size.

        A burst is a run of rejected bars less than a second apart (a poll's worth: they reach
        the pipeline in one tight loop, so a line written at the first bar would say 1). Its line
        «Фид …: отклонено баров N …» is written at the first flush point after it: the next
        rejected bar after a quiet second, or ``flush_anomalies`` (``tick``, once a second;
        ``final=True`` at stop writes what is pending). At most one line per
        ``ANOMALY_LOG_EVERY_S``, never per bar: a burst that may not be logged yet is merged into
        the next line, whose N is then every bar rejected since the previous line; a flood longer
        than the window gets one line per window. ``data_anomalies_total`` counts every bar.
        """
        now = self.wall_clock()
        pending = self._anomaly_burst
        if pending:
            first_s, last_s, kinds, (kind, symbol, ts_ms) = self._anomaly_pending
            over = now - last_s >= 1.0 or now - first_s >= ANOMALY_LOG_EVERY_S
            if final or (over and now - self._anomaly_logged_at >= ANOMALY_LOG_EVERY_S):
                by_kind = ", ".join(f"{k}: {n}" for k, n in sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0])))
                self.notify("data_anomaly",
                            f"Фид {self.feed_name}: отклонено баров {pending} за {last_s - first_s:.1f} с ({by_kind}; "
                            f"последний: {kind}, {symbol} ts_ms={ts_ms}); не чаще строки в "
                            f"{ANOMALY_LOG_EVERY_S:.0f} с",
                            severity="warning", component="feed",
                            fields={"kind": kind, "symbol": symbol, "ts_ms": ts_ms, "burst": pending,
                                    "kinds": dict(kinds)})
                self._anomaly_logged_at = now
                self._anomaly_burst = pending = 0
        if bar is None:
            return
        kind = classify(bar, last) or "unknown"
        key = (self.feed_name, kind)
        anomalies = self.live.anomalies_total
        anomalies[key] = anomalies.get(key, 0) + 1
        if pending:
            first_s, kinds = self._anomaly_pending[0], self._anomaly_pending[2]
        else:
            first_s, kinds = now, {}
        kinds[kind] = kinds.get(kind, 0) + 1
        self._anomaly_pending = (first_s, now, kinds, (kind, bar.symbol, bar.ts_ms))
        self._anomaly_burst = pending + 1

    def flush_anomalies(self, final: bool = False) -> None:
        """Log a finished burst of rejected bars (once a second; ``final`` at stop)."""
        if self._anomaly_burst:
            self._anomaly(None, final=final)

    def tick(self, now_s: float) -> bool:
        """Once-a-second housekeeping: log finished anomaly bursts; in paper mode roll the UTC day
        of the counters (True if it did)."""
        self.flush_anomalies()
        if self.clock_mode == "wall":
            return self.roll_day_to(day_of(now_s))
        return False

    def roll_day_to(self, day: str) -> bool:
        """Start the daily counters of ``day`` (journaled); the lock stays (paper: only an operator lifts it)."""
        if not roll_day(self.state, day):
            return False
        self.journal_governance("day_roll", {"day": day})
        return True

    # ------------------------------------------------------------ broker sink
    # Per fill: the sink journals the fill (a fill body's JSON is built by ``FillBodies``, made on the
    # first fill; in a replay's batches, by the flush from the body's values) and counts it; the order
    # it ends is counted and buffered.

    def on_order(self, order: Order) -> None:
        status = order.status
        live = self.live
        orders_total = live.orders_total
        key = status._value_  # ``.value`` is an enum property: slower, on every order
        orders_total[key] = orders_total.get(key, 0) + 1
        self.storage.add_order(self.run_id, order)
        if status is _FILLED:
            self._outcome(0)
        elif status is _REJECTED:
            self._outcome(1)
        if order.done_ms and status is not _PARTIAL:  # the order ended
            sym = order.symbol
            live.order_qty[sym] = live.order_qty.get(sym, 0.0) + order.qty
            live.order_filled_qty[sym] = live.order_filled_qty.get(sym, 0.0) + order.filled_qty
            if status is _FILLED:
                live.fill_time.observe(sym, (order.done_ms - order.ts_ms) / 1000.0)
        if status is _REJECTED:
            self.storage.update_plan_status(self.run_id, order.plan_id, "rejected")
            self.live.pending_plans = len(self.broker.pending_entries)
            if self.trade_events:
                self.notify("order_rejected", f"{order.symbol}: {order.reject_reason}", severity="warning",
                            component="execution", fields={"order_id": order.order_id, "reason": order.reject_reason},
                            log=False)
        elif status is _CANCELLED and order.filled_qty == 0.0:  # a worked rest keeps "filled"
            self.storage.update_plan_status(self.run_id, order.plan_id, "cancelled")

    def _outcome(self, rejected: int) -> None:
        window = self._outcomes
        window.append(rejected)
        rejects = self._rejects_in_window + rejected
        if len(window) > self.gov.execution.reject_rate_window:
            rejects -= window.popleft()
        self._rejects_in_window = rejects
        self.live.execution_reject_rate = rejects / len(window)

    def _fill_seen(self, fill: Fill) -> None:
        self.fills_seen += 1
        key = (fill.symbol, fill.reason._value_)
        live = self.live
        fills_total = live.fills_total
        fills_total[key] = fills_total.get(key, 0) + 1
        ref = fill.ref_price
        if ref > 0.0 and fill.reason is not _LIQUIDATION:
            live.fill_slippage.observe(fill.symbol, fill.side.sign * (fill.price - ref) / ref * 10_000.0)
        if self.trade_events:
            self.notify("fill", f"{fill.reason.value} {fill.side.value} {fill.qty:.8g} {fill.symbol} @ {fill.price:.8g}",
                        component="execution",
                        fields={"fill_id": fill.fill_id, "price": fill.price, "qty": fill.qty,
                                "fee_usd": round(fill.fee_usd, 6), "reason": fill.reason.value}, log=False)

    def _bodies(self) -> FillBodies:
        bodies = self._fill_bodies
        if bodies is None:
            bodies = self._fill_bodies = FillBodies()
        return bodies

    def _opened_body(self, state: GovernanceState, position: Position) -> str | tuple:
        """The journal body of a fill that opens ``position``: its JSON now (paper mode), or its values,
        encoded by the flush (a replay's batched commits: ``FillBodies.opened_values``)."""
        return self._bodies().opened(state, position) if self.immediate else FillBodies.opened_values(state, position)

    def _changed_body(self, state: GovernanceState) -> str | tuple:
        """The journal body of a fill that changes or closes a position: its JSON now (paper mode), or
        its values, encoded by the flush (a replay's batched commits: ``FillBodies.changed_values``)."""
        return self._bodies().changed(state) if self.immediate else FillBodies.changed_values(state)

    def _fill_snapshot(self, state: GovernanceState, cash: float) -> dict | Callable[[], dict]:
        """``snapshot(state, cash)`` of a fill's commit; in a replay, whose batch writes only the last
        saved state, a function that builds it from the values ``state`` holds now."""
        if self.immediate:
            return self.snapshot(state, cash)
        values = _save_state(state)

        def later() -> dict:
            then = GovernanceState.__new__(GovernanceState)
            _restore_state(then, values)
            return self.snapshot(then, cash)

        return later

    def _commit_fill(self, write: AccountWrite, saved: tuple) -> bool:
        """``_commit`` of a fill whose consequences are already in ``self.state``: when it cannot be
        journaled, the state is put back as it was (``saved``) before anything else hears of it."""
        try:
            self.storage.commit_account(write, immediate=self.immediate)
        except StorageError as exc:
            _restore_state(self.state, saved)
            if isinstance(exc, LeaseLost):
                raise
            self.storage_failed(exc)
            return False
        except BaseException:
            _restore_state(self.state, saved)
            raise
        self.storage_ok = True
        return True

    def commit_open(self, fill: Fill, position: Position, decision: Decision) -> bool:
        """Journal an entry fill with every consequence, then (only then) keep the change of state.

        The state is changed in place and put back if the fill cannot be journaled (the same as
        changing a copy and adopting it once journaled, without two copies of the state per fill)."""
        state = self.state
        saved = _save_state(state)
        try:
            engaged = on_entry_filled(state, self.gov)
            cash = self.broker.cash_usd + open_cash(position.leverage, fill.side, fill.qty, fill.price, fill.fee_usd)
            write = AccountWrite(account=self.account, run_id=self.run_id, ts=self.wall_clock(),
                                 entries=(journal_fill_row(fill, "open", position.position_id,
                                                           self._opened_body(state, position)),),
                                 snapshot=self._fill_snapshot(state, cash), fill=fill, open_position=position)
        except BaseException:
            _restore_state(state, saved)
            raise
        if not self._commit_fill(write, saved):
            return False
        self.mark_journaled()
        self._close_info = (engaged,)
        self._fill_seen(fill)
        return True

    def _commit_change(self, fill: Fill, event: str, after: Position, cash: float) -> bool:
        """Journal a fill that changes an open position without opening or closing it."""
        write = AccountWrite(account=self.account, run_id=self.run_id, ts=self.wall_clock(),
                             entries=(journal_fill_row(fill, event, after.position_id, self._changed_body(self.state)),),
                             snapshot=self.snapshot(self.state, cash), fill=fill, update_position=after)
        if not self._commit(write):
            return False
        self._fill_seen(fill)
        return True

    def commit_increase(self, fill: Fill, before: Position, after: Position) -> bool:
        """A further fill of a working entry (participation cap): one trade, a bigger position."""
        cash = self.broker.cash_usd + open_cash(before.leverage, fill.side, fill.qty, fill.price, fill.fee_usd)
        return self._commit_change(fill, "increase", after, cash)

    def commit_reduce(self, fill: Fill, before: Position, after: Position) -> bool:
        """A partial exit: its net pnl is realised; the trade's R is booked when the rest closes."""
        cash = self.broker.cash_usd + exit_cash(before, fill.qty, fill.price, fill.fee_usd)
        return self._commit_change(fill, "reduce", after, cash)

    def commit_funding(self, after: Position, funding_ts_ms: int, mark: float, rate: float, amount: float) -> bool:
        """A funding payment of an open perp (journaled like a fee; negative ``amount``: received)."""
        cash = self.broker.cash_usd - amount
        body = {"rate": rate, "day": self.state.day}
        write = AccountWrite(account=self.account, run_id=self.run_id, ts=self.wall_clock(),
                             entries=(journal_funding_row(after, funding_ts_ms, mark, amount, body),),
                             snapshot=self.snapshot(self.state, cash), update_position=after)
        if not self._commit(write):
            return False
        live = self.live
        live.funding_usd_total[after.symbol] = live.funding_usd_total.get(after.symbol, 0.0) + amount
        live.funding_events_total[after.symbol] = live.funding_events_total.get(after.symbol, 0) + 1
        if not self.trade_events:
            return True
        self.notify("funding", f"funding {after.symbol} {after.side.value} {after.qty:.8g} @ {mark:.8g}: rate "
                    f"{rate * 100:.4f}%, {'paid' if amount >= 0 else 'received'} {abs(amount):.4f} USD",
                    component="execution",
                    fields={"symbol": after.symbol, "position_id": after.position_id, "funding_ts_ms": funding_ts_ms,
                            "rate": rate, "mark": mark, "amount_usd": round(amount, 8)}, log=False)
        return True

    def commit_close(self, trade: ClosedTrade) -> bool:
        """Journal an exit fill, the closed position and the R it books, then change the state."""
        p, fill = trade.position, trade.exit_fill
        state = self.state
        ladder = (state.throttled, state.dd_stopped)
        open_r = self.broker.open_r(True, p.symbol)  # (positional: a C call of the compiled build, pipeline.pxd)
        saved = _save_state(state)  # put back if the fill cannot be journaled (see ``commit_open``)
        try:
            engaged = on_trade_closed(state, trade.trade_r, open_r, self.gov)
            cash = self.broker.cash_usd + exit_cash(p, fill.qty, fill.price, fill.fee_usd)
            write = AccountWrite(account=self.account, run_id=self.run_id, ts=self.wall_clock(),
                                 entries=(journal_fill_row(fill, "close", p.position_id, self._changed_body(state)),),
                                 snapshot=self._fill_snapshot(state, cash), fill=fill,
                                 close=(p.position_id, fill.ts_ms, fill.price, fill.reason._value_, trade.pnl_usd,
                                        trade.trade_r))
        except BaseException:
            _restore_state(state, saved)
            raise
        if not self._commit_fill(write, saved):
            return False
        self.mark_journaled()
        self._close_info = (engaged, ladder)
        self._fill_seen(fill)
        if fill.reason is _LIQUIDATION:
            self.notify("liquidation", f"Ликвидация {p.symbol} {p.side.value} {p.qty:.8g}: цена банкротства "
                        f"{fill.price:.8g}, потеряна маржа {p.margin_usd:.2f} USD + комиссия {fill.fee_usd:.2f} USD",
                        severity="critical", component="execution",
                        fields={"symbol": p.symbol, "position_id": p.position_id, "price": fill.price,
                                "margin_usd": round(p.margin_usd, 6), "fee_usd": round(fill.fee_usd, 6),
                                "trade_r": round(trade.trade_r, 6)})
        return True

    def on_open(self, position: Position, decision: Decision) -> None:
        self.storage.update_plan_status(self.run_id, position.plan_id, "filled")
        engaged = self._close_info[0] if self._close_info else None
        if engaged:
            self._lock_engaged(engaged)
        self._mark()

    def on_close(self, trade: ClosedTrade) -> None:
        engaged, ladder = self._close_info or (None, (self.state.throttled, self.state.dd_stopped))
        if engaged:
            self._lock_engaged(engaged)
        self._ladder_events(ladder)
        if self.immediate:
            self._refresh_account()
        else:  # a replay re-exports the gauges once per batch of bars (``flush_marks``)
            self._account_dirty = True
            self.state.cash_usd = self.broker.cash_usd
        self._check_auto_kill()

    # ------------------------------------------------------------- lifecycle
    def cancel_pending(self) -> int:
        cancelled = self.broker.cancel_pending()
        self._refresh_account()
        return len(cancelled)

    def flatten_at_end(self) -> None:
        """End of replayed data: close what is still open at its last close, like a backtest."""
        for symbol in list(self.broker.positions):
            bar = self.broker.last_bar.get(symbol)
            if bar is not None:
                self.broker.close_at(symbol, bar.close, _EXIT_SIGNAL, bar.ts_ms)
        self._refresh_account()

    def persist_marks(self) -> None:
        """Buffer the current marks of open positions (heartbeat and stop), so a restart sees them."""
        if self.broker.positions:
            self.storage.mark_positions(self.run_id, list(self.broker.positions.values()))

    def restore_positions(self, positions: list[Position], *, flatten_at_mark: bool, ts_ms: int) -> None:
        """Adopt the account's open positions (as the journal has them).

        A simulated market does not continue across runs (a new sim starts its own price
        path), so with ``flatten_at_mark`` carried positions are closed at their last
        recorded mark instead of being re-marked on unrelated prices.
        """
        positions = [p for p in positions if p.symbol in self.instruments]
        self.broker.restore(positions)
        if flatten_at_mark:
            for p in positions:
                self.broker.close_at(p.symbol, p.last_price, _EXIT_SIGNAL, ts_ms)
        self._refresh_account()


def _save_state(state: GovernanceState) -> tuple:
    """Every field of ``state`` (``holds`` as a copy), for ``_restore_state``."""
    return state._values(), list(state.holds)


def _restore_state(state: GovernanceState, saved: tuple) -> None:
    values, holds = saved
    state._set_values(values)
    state.holds = holds
