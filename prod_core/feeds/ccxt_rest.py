"""ccxt REST feed: polls closed candles; ticker / order-book snapshots on demand.

The feed runs its own asyncio loop in a daemon thread; closed bars reach ``poll`` through
a thread-safe deque. Only public market-data methods are ever called (``load_markets``,
``fetch_ohlcv``, ``fetch_ticker``, ``fetch_order_book``): paper mode never sends an order.

Error handling, inside the feed:
- rate limit (HTTP 429/418, ``RateLimitExceeded``/``DDoSProtection``): back off, health 0;
- network (timeouts, 5xx, ``NetworkError``): retry with exponential backoff and jitter,
  health 0 while reconnecting;
- auth errors, unknown or bad symbols: ``FeedFatalError`` naming the symbol, raised from
  ``start()`` (when found while loading markets) or from the next ``poll()``.

Health: 1 healthy; 0 degraded (no new closed bar for ``stale_after_s``, reconnecting or
rate limited); -1 paused (stopped, or failed fatally).

Gap handling: for every symbol the feed remembers the last delivered bar and always asks
the exchange for the bars after it, so after any outage it backfills exactly: no closed
bar is missed or delivered twice, and a forming bar is never delivered.

``CcxtFeedBase`` carries everything shared with the websocket feed (``ccxt_ws``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Sequence
from urllib.parse import urlsplit

from prod_core.domain import Bar, Instrument, InstrumentKind, timeframe_to_ms
from prod_core.feeds.base import FeedHealth

log = logging.getLogger("prod_core.feeds.ccxt")

NAN = float("nan")
PAGE_LIMIT = 1000


class FeedFatalError(RuntimeError):
    """A feed error that retrying cannot fix (bad symbol, authentication, unknown exchange)."""


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
    """'rate_limit', 'network', 'fatal' or 'other' for a ccxt (or asyncio) exception."""
    import ccxt

    if isinstance(exc, (ccxt.RateLimitExceeded, ccxt.DDoSProtection)):
        return "rate_limit"
    if isinstance(exc, (ccxt.AuthenticationError, ccxt.BadSymbol, ccxt.NotSupported)):
        return "fatal"
    if isinstance(exc, (ccxt.NetworkError, asyncio.TimeoutError, ConnectionError, OSError)):
        return "network"
    return "other"


# ------------------------------------------------------------------ exchange
def _ws_rewrite(url: str, ws_base: str | None, api_url: str | None) -> str:
    if ws_base:
        return ws_base
    parts = urlsplit(url)
    api = urlsplit(api_url or "")
    scheme = "wss" if api.scheme == "https" else "ws"
    label = (parts.hostname or "ws").split(".")[0]
    # keep the original host's first label as a path prefix: '/stream/ws' stays a spot stream
    return f"{scheme}://{api.netloc}{api.path.rstrip('/')}/{label}{parts.path}"


def rewrite_urls(urls: dict, api_url: str | None, ws_url: str | None = None) -> None:
    """Point every REST url of a ccxt ``urls['api']``-like dict at ``api_url`` (paths kept),
    and every websocket url at ``ws_url`` (or a path under ``api_url``)."""
    base = api_url.rstrip("/") if api_url else None
    for key, value in list(urls.items()):
        if isinstance(value, dict):
            if key in ("ws", "ws-api") or any(isinstance(v, str) and v.startswith("ws") for v in value.values()):
                if base or ws_url:
                    for k2, v2 in list(value.items()):
                        if isinstance(v2, str):
                            value[k2] = _ws_rewrite(v2, ws_url, api_url)
                        elif isinstance(v2, dict):
                            for k3, v3 in list(v2.items()):
                                if isinstance(v3, str):
                                    v2[k3] = _ws_rewrite(v3, ws_url, api_url)
            else:
                rewrite_urls(value, api_url, ws_url)
        elif isinstance(value, str) and base and value.startswith("http"):
            parts = urlsplit(value)
            urls[key] = base + parts.path + (f"?{parts.query}" if parts.query else "")


def make_exchange(
    exchange_id: str,
    *,
    pro: bool = False,
    sync: bool = False,
    symbols: Sequence[str] = (),
    api_url: str | None = None,
    ws_url: str | None = None,
    sandbox: bool = False,
    api_key: str | None = None,
    secret: str | None = None,
    enable_rate_limit: bool = True,
    timeout_ms: int = 10_000,
    options: dict | None = None,
):
    """An async ccxt (``pro``: ccxt.pro; ``sync``: plain ccxt) exchange for public market data."""
    if pro:
        import ccxt.pro as module
    elif sync:
        import ccxt as module
    else:
        import ccxt.async_support as module
    cls = getattr(module, exchange_id, None)
    if cls is None or not isinstance(cls, type):
        raise FeedFatalError(f"unknown exchange id {exchange_id!r} (not a ccxt{'.pro' if pro else ''} exchange)")
    opts: dict = {"enableRateLimit": enable_rate_limit, "timeout": timeout_ms, "options": {}}
    if exchange_id.startswith("binance"):
        types = ["spot"] + (["linear"] if any(":" in s for s in symbols) else [])
        # defaultType alone does not stop load_markets from calling the futures endpoints
        opts["options"].update({"fetchMarkets": {"types": types}, "fetchMargins": False, "fetchCurrencies": False})
    opts["options"].update(options or {})
    if api_key:
        opts["apiKey"] = api_key
    if secret:
        opts["secret"] = secret
    ex = cls(opts)
    if api_url or ws_url:
        rewrite_urls(ex.urls["api"], api_url, ws_url)
        if isinstance(ex.urls.get("test"), dict):
            rewrite_urls(ex.urls["test"], api_url, ws_url)
    if sandbox:
        try:
            ex.set_sandbox_mode(True)
        except Exception as exc:  # ccxt raises NotSupported for exchanges without a testnet
            raise FeedFatalError(f"{exchange_id} has no sandbox/testnet in ccxt ({exc}); set exchange.sandbox: false") from None
    return ex


def _num(x) -> float:
    if x is None:
        return NAN
    try:
        return float(x)
    except (TypeError, ValueError):
        return NAN


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
        name: str = "ccxt",
        clock=time.time,
    ) -> None:
        if not symbols:
            raise ValueError("a ccxt feed needs at least one symbol")
        self.name = name
        self.exchange_id = exchange_id
        self.symbols: tuple[str, ...] = tuple(symbols)
        self.timeframe = timeframe
        self.tf_ms = timeframe_to_ms(timeframe)
        self.history_bars = max(0, int(history_bars))
        self.stale_after_s = stale_after_s if stale_after_s is not None else default_stale_after_s(self.tf_ms)
        self.backoff = backoff or Backoff()
        self.start_timeout_s = start_timeout_s
        self.clock = clock
        self._ex_kwargs = dict(
            pro=self.pro, symbols=self.symbols, api_url=api_url, ws_url=ws_url, sandbox=sandbox, api_key=api_key,
            secret=secret, enable_rate_limit=enable_rate_limit, timeout_ms=timeout_ms, options=exchange_options,
        )
        self.live_from_ms = 0
        self.last_ts: dict[str, int | None] = {s: None for s in self.symbols}
        self.markets: dict[str, dict] = {}
        self.stats = {"rate_limited": 0, "network_errors": 0, "other_errors": 0, "reconnects": 0,
                      "backfills": 0, "backfilled_bars": 0, "bars": 0}
        self._queue: deque[Bar] = deque()
        self._trouble: dict[str, str] = {}  # stream -> 'reconnecting' | 'rate_limited'
        self._last_bar_s: dict[str, float] = {}
        self._state = "stopped"
        self._fatal: FeedFatalError | None = None
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
        self._state = "starting"
        self._ready.clear()
        self._thread = threading.Thread(target=self._thread_main, name=f"feed-{self.name}", daemon=True)
        self._thread.start()
        self._ready.wait(self.start_timeout_s)
        if self._fatal is not None:
            self._join()
            raise self._fatal

    def poll(self, now_s: float) -> list[Bar]:
        q = self._queue
        if not q:
            if self._fatal is not None:
                raise self._fatal
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
        if state != "ok" or self._trouble:
            return int(FeedHealth.DEGRADED)
        if self.clock() - self._last_progress_s > self.stale_after_s:
            return int(FeedHealth.DEGRADED)
        return int(FeedHealth.HEALTHY)

    @property
    def state(self) -> str:
        """starting, ok, reconnecting, rate_limited, fatal or stopped (stale is ``health``'s job)."""
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
        if self._state != "fatal":
            self._state = "stopped"

    def restart(self) -> None:
        """Stop and start again (``cli restart-feed``); the gap is backfilled, nothing doubled."""
        log.info("%s: restart requested", self.name)
        self._join()
        self.stats["reconnects"] += 1
        self.start(self.clock())

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
        """Instrument metadata (tick, step, minimums) from ``load_markets``."""
        out = {}
        for sym, m in self.markets.items():
            prec = m.get("precision") or {}
            limits = m.get("limits") or {}
            out[sym] = Instrument(
                symbol=sym,
                kind=InstrumentKind.SPOT if m.get("spot", True) else InstrumentKind.PERP,
                price_tick=float(prec.get("price") or 0.0),
                qty_step=float(prec.get("amount") or 0.0),
                min_qty=float((limits.get("amount") or {}).get("min") or 0.0),
                min_notional_usd=float((limits.get("cost") or {}).get("min") or 0.0),
            )
        return out

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
        t = self._sync(lambda: self._call(f"fetch_ticker {symbol}", self.ex.fetch_ticker, symbol), timeout_s)
        return {"bid": _num(t.get("bid")), "ask": _num(t.get("ask")), "last": _num(t.get("last")),
                "ts_ms": t.get("timestamp")}

    def order_book(self, symbol: str, limit: int = 20, timeout_s: float = 10.0) -> dict:
        """Order-book snapshot {'bids','asks','nonce','ts_ms'} (REST, for execution)."""
        ob = self._sync(lambda: self._call(f"fetch_order_book {symbol}", self.ex.fetch_order_book, symbol, limit),
                        timeout_s)
        return {"bids": ob["bids"], "asks": ob["asks"], "nonce": ob.get("nonce"), "ts_ms": ob.get("timestamp")}

    # ----------------------------------------------------------------- loop
    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._supervise())
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()
                self._ready.set()

    async def _supervise(self) -> None:
        self._task = asyncio.current_task()
        try:
            self.ex = make_exchange(self.exchange_id, **self._ex_kwargs)
            await self._load_markets()
            self._state = "ok"
            self._ready.set()
            await self._run()
        except asyncio.CancelledError:
            pass
        except FeedFatalError as exc:
            self._fail(exc)
        except Exception as exc:  # a bug must not leave a silent zombie feed
            self._fail(FeedFatalError(f"{self.name}: unexpected error: {exc!r}"))
        finally:
            self._ready.set()
            ex, self.ex = self.ex, None
            if ex is not None:
                try:
                    await asyncio.wait_for(ex.close(), 5)
                except BaseException:
                    pass

    def _fail(self, exc: FeedFatalError) -> None:
        self._fatal = exc
        self._state = "fatal"
        log.error("%s: %s", self.name, exc)

    async def _run(self) -> None:  # pragma: no cover - subclasses
        raise NotImplementedError

    async def _load_markets(self) -> None:
        markets = await self._call("load_markets", self.ex.load_markets)
        missing = [s for s in self.symbols if s not in markets]
        if missing:
            raise FeedFatalError(
                f"{self.name}: symbol {', '.join(missing)} is not listed on {self.exchange_id} "
                f"({len(markets)} markets loaded); fix configs/symbols.yaml"
            )
        inactive = [s for s in self.symbols if markets[s].get("active") is False]
        if inactive:
            raise FeedFatalError(f"{self.name}: symbol {', '.join(inactive)} is not trading on {self.exchange_id}")
        self.markets = {s: markets[s] for s in self.symbols}

    async def _call(self, what: str, fn, *args, **kwargs):
        """Call ccxt, translating errors: back off on rate limits and network errors, fail on fatal ones."""
        while True:
            try:
                result = await fn(*args, **kwargs)
            except asyncio.CancelledError:
                raise
            except FeedFatalError:
                raise
            except Exception as exc:
                kind = classify_error(exc)
                if kind == "fatal":
                    raise FeedFatalError(f"{self.name} {self.exchange_id}: {what}: {type(exc).__name__}: {exc}") from None
                delay = self.backoff.next()
                if kind == "rate_limit":
                    self.stats["rate_limited"] += 1
                    self._state = "rate_limited"
                elif kind == "network":
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
        """Queue rows as bars (only those newer than the last delivered one). Returns the count."""
        last = self.last_ts[symbol]
        n = 0
        for r in rows:
            ts = int(r[0])
            if last is not None and ts <= last:
                continue
            self._queue.append(Bar(symbol, ts, _num(r[1]), _num(r[2]), _num(r[3]), _num(r[4]), _num(r[5])))
            last = ts
            n += 1
        if n:
            self.last_ts[symbol] = last
            self.stats["bars"] += n
            self._last_progress_s = self._last_bar_s[symbol] = self.clock()
        return n

    async def _history(self, symbol: str) -> None:
        """Warm-up bars at the first start; a catch-up from the last bar after a restart."""
        if self.last_ts[symbol] is not None:
            await self._catch_up(symbol)
            return
        if self.history_bars == 0:
            return
        rows = await self._call(f"fetch_ohlcv {symbol}", self.ex.fetch_ohlcv, symbol, self.timeframe, None,
                                min(PAGE_LIMIT, self.history_bars + 1))
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
            rows = await self._call(f"fetch_ohlcv {symbol}", self.ex.fetch_ohlcv, symbol, self.timeframe, since,
                                    PAGE_LIMIT)
            n = self._emit(symbol, self._closed(rows, before_ms))
            total += n
            if len(rows) < PAGE_LIMIT or n == 0:
                return total


# ---------------------------------------------------------------------- REST
class CcxtRestFeed(CcxtFeedBase):
    """Polls ``fetch_ohlcv`` shortly after every expected bar close."""

    pro = False

    def __init__(self, *args, poll_lag_s: float | None = None, max_poll_s: float = 60.0, **kwargs) -> None:
        kwargs.setdefault("name", "ccxt")
        super().__init__(*args, **kwargs)
        # how long after a bar's close to ask for it (exchanges need a moment to publish it)
        self.poll_lag_s = poll_lag_s if poll_lag_s is not None else min(2.0, self.tf_ms / 4000.0)
        self.max_poll_s = max_poll_s

    async def _run(self) -> None:
        for s in self.symbols:
            await self._history(s)
        tf_s = self.tf_ms / 1000.0
        while True:
            now = self.clock()
            lasts = [t for t in self.last_ts.values() if t is not None]
            if lasts:
                next_close = (min(lasts) + 2 * self.tf_ms) / 1000.0  # close of the next missing bar
            else:
                next_close = (int(now * 1000) // self.tf_ms * self.tf_ms + self.tf_ms) / 1000.0
            if next_close + self.poll_lag_s <= now:
                # behind (e.g. the exchange was slow to publish): retry at a modest pace
                delay = max(self.poll_lag_s, min(tf_s / 4.0, 15.0))
            else:
                delay = next_close + self.poll_lag_s - now
            await asyncio.sleep(min(delay, self.max_poll_s))
            for s in self.symbols:
                await self._catch_up(s)
