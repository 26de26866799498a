"""Market-data adapters: sim (embedded default), replay, ccxt REST and ccxt.pro websockets.

Every feed implements ``prod_core.feeds.base.Feed``: the runner polls it with the
wall-clock time and gets the closed bars due by then; health is 1 healthy, 0 degraded,
-1 paused. Feeds validate bars (hygiene) before any stage sees them.
"""
