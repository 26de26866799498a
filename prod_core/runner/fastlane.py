"""The replay's fast lane: a window of bars through the pipeline, skipping the bars where nothing can happen.

A replay at full speed hands the pipeline windows of bars as arrays (``ReplayFeed.poll_arrays``).
When every configured strategy has a vectorised ``scan`` (``Strategy.scan``) and nothing in the
run needs to see every bar (no regime detector, no correlation monitor, no ALERT_TEST overlay,
batched commits, spot instruments only: perps with margin, funding and liquidation go bar by bar),
the lane:

1. checks the window's hygiene at once (``stream.clean_mask`` and time order per symbol; a window
   with a bad bar goes bar by bar through ``Pipeline.on_bar``, as before);
2. asks each strategy for its signals over its symbol's bars (``scan``: the same state afterwards
   as ``on_bar`` on each bar);
3. runs every bar that can change something through ``Pipeline.on_bar`` itself, the strategies
   answering from their scan: a bar with a signal, every bar of a symbol with a working order or
   a position with a stop, target or liquidation price, a funding time of an open perp, a new UTC
   day, and a mark that moves the governance state across a threshold (throttle, drawdown stop,
   daily loss lock, automatic kill-switch);
4. does what ``on_bar`` would do on every other bar, inline: the position's mark, the account's
   open R and drawdown ladder (peak, max drawdown), the equity row of each new timestamp and the
   bar counters, with the same float operations in the same order, so every stored number is
   the same as bar by bar (tests/runner/test_fastlane.py compares whole databases).

``CRUPTO_FAST_LANE=0`` turns the lane off (every bar through ``on_bar``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

# (``Pipeline``, ``PaperBroker`` and ``CState`` (the governance state) in the annotations of locals are
# the extension types of the compiled build, cimported by fastlane.pxd; Python never evaluates a local's
# annotation, so it needs no import)
# True in the compiled build (prod_core/compiled.py), which reads the ``cython.*`` annotations below as
# C types: the quiet-bar loop then walks typed views of the window's arrays; pure Python walks lists (a
# numpy element read from Python is a slow object of its own)
try:
    import cython

    COMPILED: bool = cython.compiled
except ImportError:  # pure Python without Cython installed: local annotations are never evaluated
    COMPILED = False

from prod_core.account.margin import open_pnl
from prod_core.domain import Bar
from prod_core.feeds.stream import clean_mask
from prod_core.risk.ledger import LIMITS_OK
from prod_core.strategies.api import Scan, scans


def _filled(value, n: int) -> list:
    """``[value] * n`` (pure Python's stand-in for a typed array; a call, so Cython types it as an object)."""
    return [value] * n


def enabled_by_env() -> bool:
    return os.environ.get("CRUPTO_FAST_LANE", "1").strip().lower() not in ("0", "false", "no", "off")


class _Scanned:
    """A slot's ``on_bar`` during a window: the answer of its scan for the current bar."""

    __slots__ = ("scan", "i")

    def __init__(self, scan: Scan | None) -> None:
        self.scan = scan
        self.i = 0

    def __call__(self, bar, features, position):
        scan = self.scan
        return None if scan is None else scan.signal(self.i, position)


class FastLane:
    """Runs replay windows through one ``Pipeline`` (see the module doc)."""

    def __init__(self, pipeline) -> None:
        self.p = pipeline
        self.windows_fast = 0
        self.windows_slow = 0
        self.bars_skipped = 0
        self._rank: dict[str, int] | None = None
        self._consts: dict[str, tuple] = {}  # symbol -> its position's constants (``_load``)

    # ------------------------------------------------------------ eligibility
    def usable(self) -> bool:
        """The run as configured now can use the lane (checked per window: a reload may change it)."""
        p = self.p
        return (p.clock_mode == "bar" and not p.immediate and p.detector is None and not p._corr_on
                and not p.portfolio.safe_mode and p.overlay_lock is None and p.overlay_safe is None
                and not p.broker._perp)

    def _clean(self, symbols: Sequence[str], ranks: list[int], idx: dict[int, np.ndarray], ts: np.ndarray,
               ohlcv: np.ndarray) -> bool:
        if not clean_mask(ohlcv).all():
            return False
        last_ts = self.p.last_ts
        for r in ranks:
            t = ts[idx[r]]
            if int(t[0]) <= last_ts.get(symbols[r], -1) or (t.shape[0] > 1 and not (np.diff(t) > 0).all()):
                return False
        return True

    # ----------------------------------------------------------------- window
    def run(self, symbols: Sequence[str], sym: np.ndarray, ts: np.ndarray, ohlcv: np.ndarray) -> None:
        """One window (rows in replay order; ``sym`` holds ranks into ``symbols``)."""
        p = self.p
        if self._rank is None or len(self._rank) != len(symbols):
            self._rank = {name: r for r, name in enumerate(symbols)}
        present = np.flatnonzero(np.bincount(sym, minlength=len(symbols))).tolist()
        idx = {r: np.flatnonzero(sym == r) for r in present}
        slots_of = {}
        ok = self.usable() and self._clean(symbols, present, idx, ts, ohlcv)
        if ok:
            for r in present:
                name = symbols[r]
                slots = p._slots.get(name)
                if slots is None:
                    slots = p._slots[name] = p._build_slots(name)
                if not all(scans(s.strategy) for s in slots):
                    ok = False
                    break
                slots_of[r] = slots
        if not ok:
            self.windows_slow += 1
            for bar in Bar.many(symbols, sym.tolist(), ts.tolist(), ohlcv.tolist()):
                p.on_bar(bar)
            return
        self.windows_fast += 1
        n = int(ts.shape[0])
        event = np.zeros(n, dtype=bool)
        loc = np.empty(n, dtype=np.int64)
        adapters: dict[int, list[_Scanned]] = {}
        seen0: dict[int, list[int]] = {}
        for r in present:
            rows = idx[r]
            loc[rows] = np.arange(rows.shape[0])
            lane = []
            for slot in slots_of[r]:
                try:
                    scan = slot.strategy.scan(ts[rows], ohlcv[rows])
                    if scan is None:
                        raise TypeError(f"{type(slot.strategy).__name__}.scan returned None: a strategy that "
                                        "overrides scan must answer every bar it is given (docs/STRATEGIES.md)")
                except Exception as exc:  # a strategy's bug holds that strategy (its signals of this window are lost)
                    i0 = int(rows[0])
                    p._strategy_failed(slot.strategy, Bar(symbols[r], int(ts[i0]), *ohlcv[i0].tolist()), exc)
                    scan = None
                if scan is not None:
                    event[rows[scan.events()]] = True
                lane.append(_Scanned(scan))
            adapters[r] = lane
            seen0[r] = [s.seen for s in slots_of[r]]
        saved = {r: [s.on_bar for s in slots_of[r]] for r in present}
        try:
            for r in present:
                for slot, a in zip(slots_of[r], adapters[r]):
                    slot.on_bar = a
            self._walk(symbols, present, sym, ts, ohlcv, event, loc, slots_of, adapters, seen0)
        finally:
            for r in present:
                for slot, on_bar, s0, count in zip(slots_of[r], saved[r], seen0[r], [idx[r].shape[0]] * len(saved[r])):
                    slot.on_bar = on_bar
                    slot.seen = s0 + count

    def _load(self, symbols: Sequence[str], next_day: int) -> tuple[list, list, list[float], list[int]]:
        """What the quiet bars need of the positions (after every event): per position in the broker's
        order its constants; per symbol rank its position's constants (or None) and the first ts
        at which one of its bars must be an event: ``next_day`` (the first bar of a new UTC day), a
        perp's next funding time, or -1 (every bar: a working order, or a stop, a target or a
        liquidation price to check).

        A position's constants are kept while the broker holds the same ``Position`` object at the
        same place (a fill replaces the object; only its ``last_price`` changes in place)."""
        # (the containers typed: the compiled build reads and fills them with the dict and list calls
        # themselves instead of looking their methods up)
        broker: PaperBroker = self.p.broker
        rate = broker._exit_rate
        cache: dict = broker._r_parts
        rank: dict = self._rank
        kept: dict = self._consts
        held: list = [None] * len(symbols)
        wall: list = [next_day] * len(symbols)
        consts: list = []
        parts: list = []
        liq: dict = broker._liq
        next_funding: dict = broker._next_funding
        positions: dict = broker.positions
        j = 0
        for name, pos in positions.items():
            part = cache.get(name)
            if part is not None and part[0] is pos and part[1] == pos.last_price:
                parts.append(part[2])
            else:
                parts.append(open_pnl(pos, rate) / pos.nominal_r_usd)
            c = kept.get(name)
            if c is None or c[1] is not pos or c[0] != j:
                sign = pos.side.sign
                c = kept[name] = (j, pos, sign * pos.qty, pos.qty, pos.entry_price, pos.realized_usd,
                                  pos.entry_fee_usd, pos.funding_usd, pos.nominal_r_usd, pos.leverage > 0.0,
                                  float(sign), name, bool(pos.stop or pos.target))
            consts.append(c)
            j += 1
            r = rank.get(name)
            if r is not None:
                held[r] = c
                wall[r] = -1 if (c[12] or name in liq) else \
                    min(next_day, next_funding.get(name, next_day))
        pending: dict
        for pending in (broker.pending_entries, broker.pending_exits):
            for name in pending:
                r = rank.get(name)
                if r is not None:
                    wall[r] = -1
        return consts, held, parts, wall

    def _ledger(self) -> tuple:
        """The account figures the quiet bars read and move, as the pipeline holds them now (after an event)."""
        p: Pipeline = self.p
        st: CState = p.state
        return (st.closed_r, st.day_start_closed_r, st.open_r, st.peak_r, st.max_dd_r, st.throttled, st.dd_stopped,
                st.lock_reason == LIMITS_OK, st.kill_switch, p.broker.cash_usd, p._last_equity_ts, p._equity_tick)

    def _sync(self, symbols, present, a: int, b: int, lastrow: list[int], counts: list[int], tss: list[int],
              ohlcv: np.ndarray, unbarred: list[int], held: list, rows: list, final: bool, ledger: tuple,
              events: list[int]) -> None:
        """Hand the quiet rows ``a:b`` to the pipeline: the ledger figures they moved (open R, peak, max
        drawdown, what is dirty, the equity clock), last ts per symbol, the equity rows buffered, the
        broker's last bar where it may be read (the window's end; before an event when an automatic
        kill-switch could flatten the positions at their last bars); at the window's end (``final``)
        the bar counts of its quiet bars (``events``: the bars per symbol rank that went through ``on_bar``).
        ``lastrow``: per symbol rank, its last row among ``a:b`` or -1 (``_walk`` finds them on its typed
        columns); ``counts``: rows per rank."""
        r: cython.Py_ssize_t
        p: Pipeline = self.p
        st: CState = p.state
        st.open_r, st.peak_r, st.max_dd_r, gdirty, marked, p._last_equity_ts, p._equity_tick = ledger
        if gdirty:
            p._gov_dirty = True
        if marked:
            p._account_dirty = True
        self.bars_skipped += b - a
        if rows:
            p.storage.add_equity_rows(rows)
            rows.clear()
        if b > a:
            last_ts = p.last_ts
            for r in present:  # in rank order, as before
                last = lastrow[r]
                if last >= 0:
                    last_ts[symbols[r]] = tss[last]
                    unbarred[r] = last
        if final:  # the quiet bars' counts, once per window (an event's bar counted itself in ``on_bar``)
            bars_total = p.live.bars_total
            for r in present:
                k = counts[r] - events[r]
                if k:
                    name = symbols[r]
                    bars_total[name] = bars_total.get(name, 0) + k
        if final or p._auto_kill_at is not None:
            last_bar = p.broker.last_bar
            for r in present:
                i = unbarred[r]
                if i >= 0 and (final or held[r] is not None):
                    last_bar[symbols[r]] = Bar(symbols[r], tss[i], *ohlcv[i].tolist())
                    unbarred[r] = -1

    def _walk(self, symbols, present: list[int], sym: np.ndarray, ts: np.ndarray, ohlcv: np.ndarray, event: np.ndarray,
              loc: np.ndarray, slots_of: dict, adapters: dict, seen0: dict) -> None:  # noqa: C901 - one loop, flat for speed
        p: Pipeline = self.p
        st: CState = p.state
        broker: PaperBroker = p.broker
        gov = p.gov
        run_id = p.run_id
        n = int(ts.shape[0])
        tss = ts.tolist()  # the events' and the syncs' Python ints
        if COMPILED:
            syms_v: cython.longlong[:] = np.ascontiguousarray(sym, dtype=np.int64)
            tss_v: cython.longlong[:] = np.ascontiguousarray(ts, dtype=np.int64)
            evs_v: cython.uchar[:] = np.ascontiguousarray(event).view(np.uint8)
            closes_v: cython.double[:] = np.ascontiguousarray(ohlcv[:, 3], dtype=np.float64)
            ohlcv_v: cython.double[:, :] = np.asarray(ohlcv, dtype=np.float64)  # an event's Bar (no copy)
        else:
            syms_v, tss_v, evs_v, closes_v = sym.tolist(), tss, event.tolist(), ohlcv[:, 3].tolist()
        counts = np.bincount(sym, minlength=len(symbols)).tolist()  # rows per symbol rank
        # C types in the compiled build (prod_core/compiled.py: this module is built with its annotations as
        # C types, and the same float operations run in the same order as in Python); the account's figures
        # the pipeline keeps (peak, max drawdown, open R, cash, the equity clock) stay Python objects, with
        # a float copy for the arithmetic, so they are handed back as they came unless a bar moved them
        i: cython.Py_ssize_t; r: cython.Py_ssize_t; j0: cython.Py_ssize_t; t: cython.longlong
        k: cython.Py_ssize_t; kr: cython.Py_ssize_t; want: cython.Py_ssize_t
        npresent: cython.Py_ssize_t = len(present)
        c: float; before: float; new: float; total: float; npeak: float; dd: float; nmax: float
        eq: float; gross: float; net: float; lp: float; nn: float; pnl: float; signed: float
        quiet: cython.bint; final: cython.bint
        closed_f: float; day_f: float; open_f: float; peak_f: float; maxdd_f: float; cash_f: float
        throttled: cython.bint; stopped: cython.bint; lock_ok: cython.bint; kill: cython.bint
        auto_on: cython.bint; gdirty: cython.bint; marked: cython.bint
        rate: float = broker._exit_rate
        thr_at: float = gov.drawdown.throttle_at_r
        noent_at: float = gov.drawdown.no_entries_at_r
        maxloss: float = gov.daily_lock.max_daily_loss_r
        auto = p._auto_kill_at
        auto_on = auto is not None
        auto_at: float = auto if auto_on else 0.0
        # the equity clock and the event walls as C integers in the compiled build (a comparison of a C
        # value with a Python int would box the C value on every quiet bar)
        last_eq: cython.longlong; tick: cython.Py_ssize_t; every: cython.Py_ssize_t; kw: cython.Py_ssize_t
        every = p.equity_every
        nsym: cython.Py_ssize_t = len(symbols)
        if COMPILED:  # per symbol rank: its first event ts (``_load``), the index j of its position or -1
            wall_v: cython.longlong[:] = np.empty(nsym, dtype=np.int64)
            hj_v: cython.longlong[:] = np.empty(nsym, dtype=np.int64)
        else:
            wall_v, hj_v = _filled(0, nsym), _filled(-1, nsym)
        rows: list[tuple] = []
        unbarred = [-1] * len(symbols)
        events = [0] * len(symbols)  # bars per symbol rank through ``on_bar``
        a = 0  # first row not yet synced

        # Per position (in the broker's order, index j) what the quiet bars read and move, one array a
        # field (C doubles compiled, lists in pure Python), filled after every event: its constants, its
        # open-R part, and its last price (``lp``; ``lp0`` as loaded: a moved price is written back to
        # the ``Position`` before the next event and at the window's end, not on every bar)
        cap = max(nsym, len(broker.positions)) + 1
        j: cython.Py_ssize_t; npos: cython.Py_ssize_t = 0
        consts: list; held: list; parts: list; wall: list; h: tuple
        need: cython.bint = True  # the positions and the ledger to (re)load: at the start and after an event
        for i in range(n + 1):
            if need:
                need = False
                consts, held, parts, wall = self._load(symbols, p._next_day_ms if p._bar_days else 1 << 62)
                npos = len(consts)
                if i == 0 or npos > cap:
                    cap = max(cap, npos)
                    if COMPILED:
                        signed_v: cython.double[:] = np.empty(cap); q_v: cython.double[:] = np.empty(cap)
                        entry_v: cython.double[:] = np.empty(cap); realized_v: cython.double[:] = np.empty(cap)
                        fee_v: cython.double[:] = np.empty(cap); funding_v: cython.double[:] = np.empty(cap)
                        nominal_v: cython.double[:] = np.empty(cap); sgn_v: cython.double[:] = np.empty(cap)
                        lev_v: cython.uchar[:] = np.empty(cap, dtype=np.uint8); part_v: cython.double[:] = np.empty(cap)
                        lp_v: cython.double[:] = np.empty(cap); lp0_v: cython.double[:] = np.empty(cap)
                        partlp_v: cython.double[:] = np.empty(cap)
                    else:
                        signed_v, q_v, entry_v, realized_v, fee_v, funding_v, nominal_v, sgn_v, lev_v, part_v, \
                            lp_v, lp0_v, partlp_v = (_filled(0.0, cap) for _ in range(13))
                for j in range(npos):
                    h = consts[j]
                    signed_v[j], q_v[j], entry_v[j], realized_v[j], fee_v[j], funding_v[j], nominal_v[j] = \
                        h[2], h[3], h[4], h[5], h[6], h[7], h[8]
                    lev_v[j], sgn_v[j], part_v[j] = h[9], h[10], parts[j]
                    lp = h[1].last_price
                    lp_v[j] = lp0_v[j] = partlp_v[j] = lp  # partlp: the mark ``part_v[j]`` is of
                for kw in range(nsym):
                    wall_v[kw] = wall[kw]
                    h = held[kw]
                    hj_v[kw] = -1 if h is None else h[0]
                closed, day_start, open_r, peak, maxdd, throttled, stopped, lock_ok, kill, cash, last_eq, tick = \
                    self._ledger()
                closed_f, day_f, open_f, peak_f, maxdd_f, cash_f = closed, day_start, open_r, peak, maxdd, cash
                gdirty = marked = False
            final = i == n
            if not final:
                r = syms_v[i]
                t = tss_v[i]
            if final or evs_v[i] or t >= wall_v[r]:
                pass  # an event, or the window's end: below
            else:
                quiet = True
                j0 = hj_v[r]
                if j0 >= 0:  # the mark, the account's open R and the ladder, as Pipeline._mark does them
                    c = closes_v[i]
                    lp_v[j0] = c
                    before = part_v[j0]
                    part_v[j0] = (realized_v[j0] + signed_v[j0] * (c - entry_v[j0]) - fee_v[j0] - q_v[j0] * c * rate
                                  - funding_v[j0]) / nominal_v[j0]
                    new = 0.0
                    for j in range(npos):  # in the broker's order, as PaperBroker.open_r adds them
                        new += part_v[j]
                    total = closed_f + new
                    npeak = total if total > peak_f else peak_f
                    dd = total - npeak
                    nmax = -dd if -dd > maxdd_f else maxdd_f
                    if ((dd <= thr_at) != throttled or (dd <= noent_at and not stopped)
                            or (lock_ok and closed_f - day_f + new <= -maxloss)
                            or (auto_on and not kill and nmax >= auto_at)):
                        quiet = False  # a governance transition: the event path marks this bar
                        part_v[j0] = before
                    else:
                        open_f = new
                        partlp_v[j0] = c
                        if npeak != peak_f or nmax != maxdd_f:
                            peak = peak_f = npeak
                            maxdd = maxdd_f = nmax
                            gdirty = True
                        marked = True
                if quiet:  # a quiet bar: the equity row of a new timestamp
                    if t != last_eq:
                        last_eq = t
                        tick += 1
                        if tick >= every:
                            tick = 0
                            eq = cash_f
                            gross = net = 0.0
                            for j in range(npos):
                                lp = lp_v[j]
                                signed = signed_v[j]
                                if lev_v[j]:
                                    eq += signed * (lp - entry_v[j])
                                else:
                                    eq += signed * lp
                                nn = q_v[j] * lp
                                gross += nn
                                net += sgn_v[j] * nn
                            pnl = closed_f + open_f
                            if eq > 0:
                                rows.append((run_id, t, eq, cash, pnl, min(0.0, pnl - peak_f), maxdd,
                                             gross / eq * 100.0, net / eq * 100.0))
                            else:
                                rows.append((run_id, t, eq, cash, pnl, min(0.0, pnl - peak_f), maxdd, 0.0, 0.0))
                    continue
            # ---- an event: the bar goes through Pipeline.on_bar, the strategies answering from their scans
            # the marks of the quiet bars before it, and the open R of each moved one into the broker's
            # cache (``PaperBroker.open_r``: the same value, so the event's mark need not compute it again;
            # not when the bar that moved it last turned into this event and its R was not kept)
            r_parts: dict = broker._r_parts if broker._exit_rate == rate else None
            for j in range(npos):
                if lp_v[j] != lp0_v[j]:
                    h = consts[j]
                    mark: object = lp_v[j]  # boxed once: the position and the cache hold the same float
                    h[1].last_price = mark
                    if r_parts is not None and partlp_v[j] == lp_v[j]:
                        r_parts[h[11]] = (h[1], mark, part_v[j])
            if marked:
                open_r = open_f
            lastrow = [-1] * nsym  # each symbol's last row among the quiet rows a:i, found from the end
            k = i - 1
            want = npresent
            while want and k >= a:
                kr = syms_v[k]
                if lastrow[kr] < 0:
                    lastrow[kr] = k
                    want -= 1
                k -= 1
            self._sync(symbols, present, a, i, lastrow, counts, tss, ohlcv, unbarred, held, rows, final,
                       (open_r, peak, maxdd, gdirty, marked, last_eq, tick), events)
            if final:
                break
            events[r] += 1
            li = int(loc[i])
            for slot, ad, s0 in zip(slots_of[r], adapters[r], seen0[r]):
                slot.seen = s0 + li
                ad.i = li
            if COMPILED:  # the row's values from the typed columns (the same doubles as ``tolist`` gives)
                p.on_bar(Bar(symbols[r], t, ohlcv_v[i, 0], ohlcv_v[i, 1], ohlcv_v[i, 2], ohlcv_v[i, 3], ohlcv_v[i, 4]))
            else:
                p.on_bar(Bar(symbols[r], t, *ohlcv[i].tolist()))
            unbarred[r] = -1  # the broker took this bar as the symbol's last
            a = i + 1
            need = True
