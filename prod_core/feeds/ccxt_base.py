"""What the ccxt feeds share: a thread with its own asyncio loop, markets, health,
error translation, rate-limit waits, backoff and exact backfill.

Error handling, inside the feed:
- rate limit / IP ban (Binance HTTP 429/418 + ``Retry-After``; Bybit retCode 10006 +
  ``X-Bapi-Limit-Reset-Timestamp``, HTTP 403): no REST request before the wait the
  exchange announced ends (``exchanges.quirks_for``), counted in ``rate_limited``, health 0;
- network (timeouts, 5xx, ``NetworkError``): retry with exponential backoff and jitter,
  health 0 while reconnecting;
- what retrying cannot fix (auth/permission, unknown symbol, a timeframe the exchange
  lacks, any ``BadRequest``): ``FeedFatalError`` with one line naming the setting, raised
  from ``start()``; after a good start the feed stops fetching, logs one ERROR line and
  stays at health 0 (``state == "failed"``) until restarted.

Health: 1 healthy; 0 degraded (no new closed bar for ``stale_after_s``, reconnecting,
rate limited, or failed after start); -1 paused (stopped, or failed at start).

Gap handling: for every symbol the feed remembers the last delivered bar and always asks
the exchange for the bars after it, so after any outage it backfills exactly: no closed
bar is missed or delivered twice, and a forming bar is never delivered.

Symbols: bars carry the configured name; ccxt is asked for ``market_symbols[name]``
(a ``perp`` ``BTC/USDT`` is the linear contract ``BTC/USDT:USDT``).

Exchange rules: ``instruments()`` (alias ``instrument_rules()``) gives tick, step and minimums
from ``load_markets`` keyed by the configured names (ccxt 4.x Binance/Bybit use
``TICK_SIZE`` precision: ``precision.amount`` is the step itself, not a digit count).

Funding (opt-in, ``funding=True``): a feed with perp symbols keeps a ``LiveFunding`` table (``funding_rates()``), filled
with ``fetch_funding_rate_history`` over the last ``funding_lookback_ms`` at start, then
refreshed in a task of its own loop shortly after each funding time passes (up to
``funding_tries`` with backoff until the new settlement is published). Stamps are rounded
down to the funding instant (``funding.funding_instant``). Funding failures are counted and
logged like other REST failures (bans and rate limits honoured) but never stop the bars.

Stop: the ccxt client is closed outside the cancellable task and whatever ccxt left
running is cancelled and awaited before the loop closes.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence

from prod_core.domain import Bar, Instrument, InstrumentKind, timeframe_to_ms
from prod_core.feeds.base import FeedHealth
from prod_core.feeds.funding import DEFAULT_INTERVAL_MS, FundingRates, LiveFunding, funding_instant, funding_times
from prod_core.feeds.repair import BarRepair
from prod_core.feeds.exchanges import quirks_for
from prod_core.feeds.exchanges.client import FeedFatalError, make_exchange, rewrite_urls

__all__ = ["Backoff", "CcxtFeedBase", "FeedFatalError", "classify_error", "fatal_message", "make_exchange",
           "rewrite_urls"]

log = logging.getLogger("prod_core.feeds.ccxt")

NAN = float("nan")
PAGE_LIMIT = 1000
FUNDING_LIMIT = 200  # settlements per request (Bybit's maximum; Binance allows 1000)


class Backoff:
    """Exponential backoff with jitter: base * factor**n, capped, times uniform(1 - jitter, 1)."""

    def __init__(self, base_s: float = 0.5, max_s: float = 30.0, factor: float = 2.0, jitter: float = 0.25,
                 rng: random.Random | None = None) -> None:
        if base_s <= 0 or max_s < base_s or factor < 1 or not 0 <= jitter < 1:
            raise ValueError("backoff needs base_s > 0, max_s >= base_s, factor >= 1, 0 <= jitter < 1")
        self.base_s = base_s
        self.max_s = max_s
        self.factor = factor
        self.jitter = jitter
        self.rng = rng or random.Random()
        self.attempt = 0

    def next(self) -> float:
        delay = min(self.max_s, self.base_s * self.factor**self.attempt)
        self.attempt += 1
        return delay * (1.0 - self.jitter * self.rng.random())

    def reset(self) -> None:
        self.attempt = 0

    def clone(self) -> "Backoff":
        """A fresh backoff with the same parameters (one per stream)."""
        return Backoff(self.base_s, self.max_s, self.factor, self.jitter, random.Random(self.rng.random()))


def classify_error(exc: BaseException) -> str:
    """'rate_limit', 'network', 'fatal' or 'other' for a ccxt (or asyncio) exception.

    Fatal means retrying cannot fix it: authentication/permission, an unknown symbol, a
    bad request (Binance -1120 invalid interval, Bybit 10001 params error), not supported.
    """
    import ccxt

    if isinstance(exc, (ccxt.RateLimitExceeded, ccxt.DDoSProtection)):
        return "rate_limit"
    if isinstance(exc, (ccxt.AuthenticationError, ccxt.BadRequest, ccxt.NotSupported)):
        return "fatal"
    if isinstance(exc, (ccxt.NetworkError, asyncio.TimeoutError, ConnectionError, OSError)):
        return "network"
    return "other"


def fatal_message(name: str, exchange_id: str, what: str, exc: BaseException) -> str:
    """One line: what failed, the exchange's words, and the setting to fix."""
    import ccxt

    text = str(exc)
    if isinstance(exc, ccxt.AuthenticationError):
        fix = "check EXCHANGE_API_KEY / EXCHANGE_API_SECRET (and their permissions), or drop them: public data needs none"
    elif isinstance(exc, ccxt.BadSymbol):
        fix = "fix symbols[].symbol / kind in configs/symbols.yaml"
    elif "interval" in text.lower() or "-1120" in text:
        fix = "fix exchange.timeframe in configs/symbols.yaml (this market does not offer it)"
    elif isinstance(exc, ccxt.NotSupported):
        fix = "this exchange cannot serve it; change exchange.id"
    else:
        fix = "fix exchange.timeframe or symbols in configs/symbols.yaml"
    return f"{name} {exchange_id}: {what}: {type(exc).__name__}: {text[:300]}; {fix}"


def _num(x) -> float:
    if x is None:
        return NAN
    try:
        return float(x)
    except (TypeError, ValueError):
        return NAN


def default_grace_s(tf_ms: int) -> float:
    """How late past its close a bar may arrive before the feed is degraded (1m -> 5 s, 1s -> 1 s)."""
    return max(1.0, min(5.0, tf_ms / 12_000.0))


def default_stale_after_s(tf_ms: int) -> float:
    """No new closed bar for 1.5 bars plus 5 s: degraded (1m -> 95 s, 1s -> 6.5 s)."""
    return 1.5 * tf_ms / 1000.0 + 5.0


# ---------------------------------------------------------------------- base
class CcxtFeedBase:
    """Shared machinery of the ccxt feeds: thread + loop, markets, health, backoff, backfill."""

    pro = False

    def __init__(
        self,
        exchange_id: str,
        symbols: Sequence[str],
        timeframe: str = "1m",
        *,
        api_url: str | None = None,
        ws_url: str | None = None,
        sandbox: bool = False,
        api_key: str | None = None,
        secret: str | None = None,
        history_bars: int = 300,
        stale_after_s: float | None = None,
        backoff: Backoff | None = None,
        start_timeout_s: float = 30.0,
        enable_rate_limit: bool = True,
        timeout_ms: int = 10_000,
        exchange_options: dict | None = None,
        market_symbols: Mapping[str, str] | None = None,
        ban_s: float | None = None,
        grace_s: float | None = None,
        name: str = "ccxt",
        clock=time.time,
        funding: bool = False,
        funding_lookback_ms: int = 86_400_000,
        funding_settle_s: float = 5.0,
        funding_tries: int = 5,
        funding_backoff: Backoff | None = None,
        funding_poll_s: float = 30.0,
    ) -> None:
        if not symbols:
            raise ValueError("a ccxt feed needs at least one symbol")
        self.name = name
        self.exchange_id = exchange_id
        self.symbols: tuple[str, ...] = tuple(symbols)
        # configured name (on every Bar) -> the ccxt market asked for ('BTC/USDT' perp -> 'BTC/USDT:USDT')
        self.market_symbols: dict[str, str] = {s: (market_symbols or {}).get(s, s) for s in self.symbols}
        self.quirks = quirks_for(exchange_id)
        self.ban_s = ban_s  # IP-ban wait when the exchange gives none (default: the exchange's own)
        self.blocked_until_s = 0.0  # wall clock: no REST request before it (Retry-After, bans)
        self.timeframe = timeframe
        self.tf_ms = timeframe_to_ms(timeframe)
        self.history_bars = max(0, int(history_bars))
        self.stale_after_s = stale_after_s if stale_after_s is not None else default_stale_after_s(self.tf_ms)
        # Health on the bar clock: the next bar is due at its close; later than close + grace: degraded.
        self.grace_s = grace_s if grace_s is not None else default_grace_s(self.tf_ms)
        self.backoff = backoff or Backoff()
        self.start_timeout_s = start_timeout_s
        self.clock = clock
        self._ex_kwargs = dict(
            pro=self.pro, symbols=tuple(self.market_symbols.values()), api_url=api_url, ws_url=ws_url, sandbox=sandbox, api_key=api_key,
            secret=secret, enable_rate_limit=enable_rate_limit, timeout_ms=timeout_ms, options=exchange_options,
        )
        self.live_from_ms = 0
        self.last_ts: dict[str, int | None] = {s: None for s in self.symbols}
        # A malformed or missing closed bar is re-requested (bounded), later bars held meanwhile.
        self.repair = BarRepair(self.tf_ms)
        self.markets: dict[str, dict] = {}
        self.stats = {"rate_limited": 0, "network_errors": 0, "other_errors": 0, "reconnects": 0,
                      "backfills": 0, "backfilled_bars": 0, "bars": 0, "funding_fetches": 0, "funding_errors": 0}
        # Funding of the perps (configured name -> BASE/QUOTE:SETTLE market); kept across restarts.
        self.funding_lookback_ms = int(funding_lookback_ms)
        self.funding_settle_s = float(funding_settle_s)  # feed-clock seconds after a funding time before asking
        self.funding_tries = max(1, int(funding_tries))
        self.funding_backoff = funding_backoff or Backoff(base_s=2.0, max_s=60.0)
        self.funding_poll_s = float(funding_poll_s)  # wall-clock cap of one sleep while waiting for a funding time
        self._funding_syms = tuple(s for s in self.symbols if ":" in self.market_symbols[s]) if funding else ()
        self._funding: LiveFunding | None = LiveFunding() if self._funding_syms else None
        self.funding_interval_ms: dict[str, int] = {s: DEFAULT_INTERVAL_MS for s in self._funding_syms}
        self._funding_disabled: dict[str, str] = {}  # symbol -> why (an error retrying cannot fix)
        self._precision_mode = None
        self._queue: deque[Bar] = deque()
        self._trouble: dict[str, str] = {}  # stream -> 'reconnecting' | 'rate_limited'
        self._last_bar_s: dict[str, float] = {}
        self._state = "stopped"
        self._fatal: FeedFatalError | None = None
        self._started = False
        self._last_progress_s = 0.0
        self._in_burst = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._ready = threading.Event()
        self.ex = None

    # ------------------------------------------------------------ protocol
    def start(self, now_s: float) -> None:
        """Load markets (validating every symbol) and start delivering bars.

        Blocks until markets are loaded or ``start_timeout_s`` passes (the feed then keeps
        retrying in the background, degraded). Raises ``FeedFatalError`` for a bad symbol.
        """
        if self.live_from_ms == 0:
            self.live_from_ms = int(now_s * 1000) // self.tf_ms * self.tf_ms
        self._last_progress_s = self.clock()
        self._last_bar_s = {s: self._last_progress_s for s in self.symbols}
        self._trouble.clear()
        self._fatal = None
        self._started = False
        self._state = "starting"
        self._ready.clear()
        self._thread = threading.Thread(target=self._thread_main, name=f"feed-{self.name}", daemon=True)
        self._thread.start()
        self._ready.wait(self.start_timeout_s)
        if self._fatal is not None:
            self._join()
            raise self._fatal

    @property
    def connected(self) -> bool:
        """Markets, timeframe and first data fetched (the runner registers the feed then)."""
        return self._started

    @property
    def fatal_error(self) -> FeedFatalError | None:
        """What retrying cannot fix (bad symbol, timeframe, auth), if it happened."""
        return self._fatal

    @property
    def rate_limited(self) -> int:
        """Rate-limit and ban answers seen so far (for ``feed_rate_limited_total{feed}``)."""
        return self.stats["rate_limited"]

    def poll(self, now_s: float) -> list[Bar]:
        q = self._queue
        if not q:
            return []
        out = []
        popleft = q.popleft
        try:
            while True:
                out.append(popleft())
        except IndexError:
            pass
        return out

    def next_due_s(self) -> float | None:
        return None

    def health(self, now_s: float) -> int:
        state = self._state
        if state in ("stopped", "fatal"):
            return int(FeedHealth.PAUSED)
        if state == "failed":  # fatal error after a good start: degraded until an operator fixes it
            return int(FeedHealth.DEGRADED)
        if state != "ok" or self._trouble:
            return int(FeedHealth.DEGRADED)
        now = self.clock()
        if now - self._last_progress_s > self.stale_after_s:
            return int(FeedHealth.DEGRADED)
        if self._started and self.overdue_s(now) > 0:
            return int(FeedHealth.DEGRADED)
        return int(FeedHealth.HEALTHY)

    def overdue_s(self, now_s: float) -> float:
        """Seconds the most overdue bar is late past its close + grace (<= 0: every bar on time)."""
        due = [t + 2 * self.tf_ms for t in self.last_ts.values() if t is not None]
        if not due:
            return 0.0
        return now_s - min(due) / 1000.0 - self.grace_s

    @property
    def state(self) -> str:
        """starting, ok, reconnecting, rate_limited, failed (fatal after start), fatal or stopped (stale is ``health``'s job)."""
        if self._state == "ok" and self._trouble:
            reasons = set(self._trouble.values())
            return "rate_limited" if "rate_limited" in reasons else "reconnecting"
        return self._state

    @property
    def exhausted(self) -> bool:
        return False

    def stop(self) -> None:
        """Stop the loop and close the exchange (its sessions and sockets)."""
        self._join()
        if self._state not in ("fatal", "failed"):
            self._state = "stopped"

    def restart(self) -> None:
        """Stop and start again (``cli restart-feed``); the gap is backfilled, nothing doubled."""
        log.info("%s: restart requested", self.name)
        self._join()
        self.stats["reconnects"] += 1
        try:
            self.start(self.clock())
        except FeedFatalError:
            # still broken: the runner keeps running, so the feed shows degraded (0), not stopped (-1)
            self._state = "failed"
            raise

    def _join(self) -> None:
        loop, task, thread = self._loop, self._task, self._thread
        if loop is not None and task is not None and thread is not None and thread.is_alive():
            try:
                loop.call_soon_threadsafe(task.cancel)
            except RuntimeError:
                pass
        if thread is not None:
            thread.join(15)
        self._thread = None

    # ------------------------------------------------------------- metadata
    def instruments(self) -> dict[str, Instrument]:
        """The exchange's rules per CONFIGURED symbol name from ``load_markets`` (empty before it):
        tick, step, minimum quantity and notional (0 where the exchange says nothing), the kind,
        and a perp's funding interval. Merge them into the configuration with
        ``feeds.exchanges.rules.merge_rules``."""
        out = {}
        for sym, m in self.markets.items():
            prec = m.get("precision") or {}
            limits = m.get("limits") or {}
            perp = bool(m.get("contract"))
            out[sym] = Instrument(
                symbol=sym,
                kind=InstrumentKind.PERP if perp else InstrumentKind.SPOT,
                price_tick=self._step(prec.get("price")),
                qty_step=self._step(prec.get("amount")),
                min_qty=float((limits.get("amount") or {}).get("min") or 0.0),
                min_notional_usd=float((limits.get("cost") or {}).get("min") or 0.0),
                funding_interval_ms=self._interval_of(sym, m, default=0) if perp else 0,  # 0: not published
            )
        return out

    instrument_rules = instruments

    @staticmethod
    def _interval_of(symbol: str, market: dict, default: int = DEFAULT_INTERVAL_MS) -> int:
        """A perp's funding interval: Bybit publishes it (``fundingInterval``, minutes); otherwise ``default``."""
        minutes = (market.get("info") or {}).get("fundingInterval")
        try:
            if minutes is not None and int(minutes) > 0:
                return int(minutes) * 60_000
        except (TypeError, ValueError):
            pass
        return default

    def _step(self, precision) -> float:
        """A ccxt precision as a step: the value itself in TICK_SIZE mode (Binance, Bybit in ccxt 4.x),
        10**-digits in DECIMAL_PLACES mode, 0 (unknown) otherwise."""
        if precision is None:
            return 0.0
        import ccxt

        mode = self._precision_mode
        if mode is None or mode == ccxt.TICK_SIZE:
            return float(precision)
        if mode == ccxt.DECIMAL_PLACES:
            return 10.0 ** -float(precision)
        return 0.0

    def funding_rates(self) -> FundingRates | None:
        """Settled funding rates of the perp symbols (configured names), refreshed in the background;
        None for a spot-only feed or one built without ``funding=True``. The same object for the
        feed's whole life (restarts included)."""
        return self._funding

    def fees(self) -> dict[str, tuple[float, float]]:
        """symbol -> (maker, taker) fee rates from the markets."""
        return {s: (float(m.get("maker") or 0.0), float(m.get("taker") or 0.0)) for s, m in self.markets.items()}

    def _sync(self, coro_fn, timeout_s: float):
        loop = self._loop
        if loop is None or self.ex is None or self._thread is None or not self._thread.is_alive():
            raise RuntimeError(f"{self.name}: feed is not running")
        return asyncio.run_coroutine_threadsafe(coro_fn(), loop).result(timeout_s)

    def ticker(self, symbol: str, timeout_s: float = 10.0) -> dict:
        """Latest ticker snapshot: {'bid','ask','last','ts_ms'} (REST, for execution)."""
        m = self.market_symbols.get(symbol, symbol)
        t = self._sync(lambda: self._call(f"fetch_ticker {m}", self.ex.fetch_ticker, m), timeout_s)
        return {"bid": _num(t.get("bid")), "ask": _num(t.get("ask")), "last": _num(t.get("last")),
                "ts_ms": t.get("timestamp")}

    def order_book(self, symbol: str, limit: int = 20, timeout_s: float = 10.0) -> dict:
        """Order-book snapshot {'bids','asks','nonce','ts_ms'} (REST, for execution)."""
        m = self.market_symbols.get(symbol, symbol)
        ob = self._sync(lambda: self._call(f"fetch_order_book {m}", self.ex.fetch_order_book, m, limit), timeout_s)
        return {"bids": ob["bids"], "asks": ob["asks"], "nonce": ob.get("nonce"), "ts_ms": ob.get("timestamp")}

    # ----------------------------------------------------------------- loop
    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._supervise())
        finally:
            # outside the supervised task, so stop()'s cancel cannot interrupt the clean-up
            try:
                loop.run_until_complete(self._close_exchange())
                self._drain(loop)
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()
                self._ready.set()

    async def _close_exchange(self) -> None:
        """Close the ccxt client: its HTTP session, connector and websockets."""
        ex, self.ex = self.ex, None
        if ex is None:
            return
        try:
            await asyncio.wait_for(ex.close(), 5)
        except Exception as exc:  # a failed close must not hide why the feed stopped
            log.warning("%s: closing the %s client failed: %r", self.name, self.exchange_id, exc)

    @staticmethod
    def _drain(loop: asyncio.AbstractEventLoop) -> None:
        """Cancel and await what ccxt left running (throttler loop, ws readers): no 'Task was destroyed'."""
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for t in pending:
            t.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))

    async def _supervise(self) -> None:
        self._task = asyncio.current_task()
        try:
            self.ex = make_exchange(self.exchange_id, **self._ex_kwargs)
            self._precision_mode = getattr(self.ex, "precisionMode", None)
            await self._load_markets()
            self._check_timeframe()
            funding = asyncio.create_task(self._funding_loop()) if self._funding is not None else None
            try:
                await self._run()
            finally:
                if funding is not None:
                    funding.cancel()
                    await asyncio.gather(funding, return_exceptions=True)
        except asyncio.CancelledError:
            pass
        except FeedFatalError as exc:
            self._fail(exc)
        except Exception as exc:  # a bug must not leave a silent zombie feed
            self._fail(FeedFatalError(f"{self.name}: unexpected error: {exc!r}"))
        finally:
            self._ready.set()

    def _fail(self, exc: FeedFatalError) -> None:
        self._fatal = exc
        if self._started:  # the runner is past start(): degrade loudly instead of raising from poll
            self._state = "failed"
            log.error("%s: stopped receiving data, health 0 until fixed and restarted: %s", self.name, exc)
        else:  # start() raises it (the runner exits 2 with this line); logging too would say it twice
            self._state = "fatal"

    def _mark_started(self) -> None:
        """Markets, timeframe and first data fetched: start() may return."""
        self._started = True
        if self._state == "starting":
            self._state = "ok"
        self._ready.set()

    def _check_timeframe(self) -> None:
        offered = getattr(self.ex, "timeframes", None) or {}
        if offered and self.timeframe not in offered:
            raise FeedFatalError(
                f"{self.name}: exchange.timeframe {self.timeframe!r} is not offered by {self.exchange_id} "
                f"(it offers {', '.join(offered)}); fix configs/symbols.yaml")

    async def _run(self) -> None:  # pragma: no cover - subclasses
        raise NotImplementedError

    async def _load_markets(self) -> None:
        markets = await self._call("load_markets", self.ex.load_markets)
        ms = self.market_symbols
        missing = [s if ms[s] == s else f"{s} ({ms[s]})" for s in self.symbols if ms[s] not in markets]
        if missing:
            raise FeedFatalError(
                f"{self.name}: symbol {', '.join(missing)} is not listed on {self.exchange_id} "
                f"({len(markets)} markets loaded); fix symbols[].symbol / kind in configs/symbols.yaml"
            )
        inactive = [s for s in self.symbols if markets[ms[s]].get("active") is False]
        if inactive:
            raise FeedFatalError(f"{self.name}: symbol {', '.join(inactive)} is not trading on {self.exchange_id}; "
                                 "remove it from configs/symbols.yaml")
        self.markets = {s: markets[ms[s]] for s in self.symbols}
        for s in self._funding_syms:
            self.funding_interval_ms[s] = self._interval_of(s, self.markets[s])

    async def _wait_ban(self) -> None:
        """Keep away from the exchange's REST host until the rate limit / ban it announced ends."""
        while True:
            wait = self.blocked_until_s - time.time()
            if wait <= 0:
                return
            await asyncio.sleep(min(wait, 5.0))

    def _rate_limited(self, exc: BaseException, what: str) -> float:
        """Count a rate-limit answer, honour the exchange's wait; returns the seconds to keep away."""
        self.stats["rate_limited"] += 1
        headers = getattr(self.ex, "last_response_headers", None) or {}
        now = time.time()
        signal = self.quirks.rate_limit(exc, headers, now, self.ban_s)
        wait = signal.wait_s if signal.wait_s is not None else self.backoff.next()
        self.blocked_until_s = max(self.blocked_until_s, now + wait)
        level = logging.ERROR if signal.kind == "banned" else logging.WARNING
        if signal.kind == "banned" or not self._in_burst:
            log.log(level, "%s: %s %s by %s (%s); no request for %.1f s, health degraded", self.name, what,
                    signal.kind, self.exchange_id, signal.detail, wait)
        self._in_burst = True
        return wait

    async def _call(self, what: str, fn, *args, **kwargs):
        """Call ccxt, translating errors: honour rate limits and bans, back off on network errors,
        fail on fatal ones."""
        while True:
            await self._wait_ban()
            try:
                result = await fn(*args, **kwargs)
            except asyncio.CancelledError:
                raise
            except FeedFatalError:
                raise
            except Exception as exc:
                kind = classify_error(exc)
                if kind == "fatal":
                    raise FeedFatalError(fatal_message(self.name, self.exchange_id, what, exc)) from None
                if kind == "rate_limit":
                    self._state = "rate_limited"
                    self._rate_limited(exc, what)
                    continue
                delay = self.backoff.next()
                if kind == "network":
                    self.stats["network_errors"] += 1
                    self._state = "reconnecting"
                else:
                    self.stats["other_errors"] += 1
                    self._state = "reconnecting"
                if not self._in_burst:  # log once per burst
                    self._in_burst = True
                    log.warning("%s: %s failed (%s: %s); backing off, health degraded", self.name, what,
                                type(exc).__name__, str(exc)[:200])
                await asyncio.sleep(delay)
                continue
            if self._in_burst:
                self._in_burst = False
                log.info("%s: %s recovered", self.name, what)
            self.backoff.reset()
            if self._state in ("reconnecting", "rate_limited", "starting"):
                self._state = "ok"
            return result

    # ------------------------------------------------------------------ bars
    def _emit(self, symbol: str, rows) -> int:
        """Hand rows newer than the last one seen to the repair, queue the bars it releases (clean,
        in time order; a bad or missing bar holds the later ones until it is re-fetched or given
        up). Returns how many rows were new."""
        last = self.last_ts[symbol]
        fresh = [r for r in rows if last is None or int(r[0]) > last]
        if not fresh:
            return 0
        self._release(symbol, self.repair.offer(symbol, fresh, now_s=self.clock()))
        cursor = self.repair.cursor_ms(symbol)
        if cursor is not None:
            self.last_ts[symbol] = cursor
        return len(fresh)

    def _release(self, symbol: str, bars: list[Bar]) -> None:
        if bars:
            self._queue.extend(bars)
            self.stats["bars"] += len(bars)
            self._last_progress_s = self._last_bar_s[symbol] = self.clock()
        for event in self.repair.pop_events():
            if event.outcome == "given_up":
                log.warning("%s: %s bar %d of %s could not be repaired after %d re-request(s) (%s): left out",
                            self.name, event.cause, event.ts_ms, event.symbol, event.attempts, self.exchange_id)

    async def _repair_due(self) -> None:
        """Re-request the bars the repair is waiting for (with its backoff); release what it frees."""
        now = self.clock()
        for symbol in self.repair.due_symbols(now):
            window = self.repair.wanted(symbol)
            if window is None:
                continue
            since, until = window
            limit = max(1, min(PAGE_LIMIT, (until - since) // self.tf_ms))
            rows = await self._call(f"fetch_ohlcv {symbol} (repair)", self.ex.fetch_ohlcv,
                                    self.market_symbols[symbol], self.timeframe, since, limit)
            self._release(symbol, self.repair.offer(symbol, rows or [], now_s=self.clock(), repair=True,
                                                    window=window))
        for symbol in self.symbols:
            if self.repair.held(symbol):
                self._release(symbol, self.repair.expire(symbol, self.clock()))

    async def _history(self, symbol: str) -> None:
        """Warm-up bars at the first start; a catch-up from the last bar after a restart."""
        if self.last_ts[symbol] is not None:
            await self._catch_up(symbol)
            return
        # even with no warm-up, one small request proves the symbol and timeframe before start() returns
        rows = await self._call(f"fetch_ohlcv {symbol}", self.ex.fetch_ohlcv, self.market_symbols[symbol],
                                self.timeframe, None, min(PAGE_LIMIT, max(2, self.history_bars + 1)))
        if self.history_bars:
            self._emit(symbol, self._closed(rows)[-self.history_bars:])

    def _closed(self, rows, before_ms: int | None = None) -> list:
        """Rows of closed bars.

        With ``before_ms`` (the open time of a bar seen forming, e.g. on the websocket),
        every row before it is closed. Otherwise the newest row is taken as still forming:
        a bar counts as closed only once the exchange lists a newer one. A clock test
        (open + timeframe <= now) is not enough: a lagging or frozen exchange keeps
        serving a partial last candle long after its close time.
        """
        if not rows:
            return []
        if before_ms is not None:
            return [r for r in rows if int(r[0]) < before_ms]
        return list(rows[:-1])

    async def _catch_up(self, symbol: str, before_ms: int | None = None) -> int:
        """Fetch and deliver every closed bar after the last delivered one (paginated)."""
        total = 0
        while True:
            last = self.last_ts[symbol]
            since = None if last is None else last + self.tf_ms
            rows = await self._call(f"fetch_ohlcv {symbol}", self.ex.fetch_ohlcv, self.market_symbols[symbol],
                                    self.timeframe, since, PAGE_LIMIT)
            n = self._emit(symbol, self._closed(rows, before_ms))
            total += n
            if len(rows) < PAGE_LIMIT or n == 0:  # n counts new rows seen, held ones included
                return total

    # --------------------------------------------------------------- funding
    async def _funding_loop(self) -> None:
        """Fill the funding table, then refresh it after every funding time; never stops the feed."""
        try:
            for s in self._funding_syms:
                await self._refresh_funding(s)
            now_ms = int(self.clock() * 1000)
            due = {s: self._next_funding_ms(s, now_ms) for s in self._funding_syms}
            while True:
                live = [s for s in due if s not in self._funding_disabled]
                if not live:
                    return
                await self._sleep_until(min(due[s] for s in live) / 1000.0 + self.funding_settle_s)
                now_ms = int(self.clock() * 1000)
                for s in live:
                    if due[s] + self.funding_settle_s * 1000 <= now_ms:
                        await self._refresh_funding(s, want_ms=due[s])
                        due[s] = self._next_funding_ms(s, int(self.clock() * 1000))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug in the funding refresh must not take the bars down
            self.stats["funding_errors"] += 1
            log.error("%s: funding refresh stopped by an unexpected error: %r", self.name, exc)

    def _next_funding_ms(self, symbol: str, now_ms: int) -> int:
        iv = self.funding_interval_ms[symbol]
        return funding_times(now_ms, now_ms + iv, iv)[0]

    async def _sleep_until(self, target_s: float) -> None:
        """Sleep until the feed's clock reaches ``target_s`` (in steps of at most ``funding_poll_s``)."""
        while True:
            left = target_s - self.clock()
            if left <= 0:
                return
            await asyncio.sleep(min(left, self.funding_poll_s))

    async def _refresh_funding(self, symbol: str, want_ms: int | None = None) -> bool:
        """Fetch new settlements of ``symbol`` (up to ``funding_tries`` times with backoff until the one
        at ``want_ms`` is in); False when it is still missing."""
        backoff = self.funding_backoff.clone()
        for attempt in range(self.funding_tries):
            if symbol in self._funding_disabled:
                return False
            fetched = await self._fetch_funding(symbol)
            if fetched and (want_ms is None or self._funding.rate(symbol, want_ms) is not None):
                return True
            if attempt + 1 < self.funding_tries:
                await asyncio.sleep(backoff.next())
        if want_ms is not None:
            log.warning("%s: funding rate of %s at %d not published by %s after %d tries; "
                        "asking again after the next funding time", self.name, symbol, want_ms, self.exchange_id,
                        self.funding_tries)
        return False

    async def _fetch_funding(self, symbol: str) -> bool:
        """One ``fetch_funding_rate_history`` call since the last known settlement; True if it answered."""
        what = f"fetch_funding_rate_history {symbol}"
        last = self._funding.last_ts(symbol)
        since = last + 1 if last is not None else int(self.clock() * 1000) - self.funding_lookback_ms
        await self._wait_ban()
        try:
            rows = await self.ex.fetch_funding_rate_history(self.market_symbols[symbol], since, FUNDING_LIMIT)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.stats["funding_errors"] += 1
            kind = classify_error(exc)
            if kind == "rate_limit":
                self._rate_limited(exc, what)
                return False
            if kind == "fatal":  # e.g. NotSupported: the bars go on, this symbol's funding stays unknown
                self._funding_disabled[symbol] = f"{type(exc).__name__}: {str(exc)[:200]}"
                log.error("%s: %s failed (%s); funding of %s stays unknown until restarted", self.name, what,
                          self._funding_disabled[symbol], symbol)
                return False
            self.stats["network_errors" if kind == "network" else "other_errors"] += 1
            log.warning("%s: %s failed (%s: %s); retrying with backoff", self.name, what, type(exc).__name__,
                        str(exc)[:200])
            return False
        iv = self.funding_interval_ms[symbol]
        parsed = [(funding_instant(int(r["timestamp"]), iv), float(r["fundingRate"])) for r in rows or ()
                  if r.get("timestamp") is not None and r.get("fundingRate") is not None]
        new = self._funding.update(symbol, parsed)
        self.stats["funding_fetches"] += 1
        if new:
            log.info("%s: %d new funding rate(s) of %s, last at %d", self.name, new, symbol,
                     self._funding.last_ts(symbol))
        return True
