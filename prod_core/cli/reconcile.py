"""`reconcile`: rebuild an account from its journal and compare it with the saved state.

Prints both sides (cash, closed R, daily counters, locks and switches, open positions) and
every difference; exits 0 only when they agree, 1 when they differ. It only reads: a
runner repairs the saved state from the journal at its next start.
"""

from __future__ import annotations

import json
from typing import Any

from prod_core.account import COUNTER_FIELDS, TRANSITION_FIELDS, compare, fold
from prod_core.cli.common import open_storage

_SHOWN = ("cash_usd", "closed_r", *COUNTER_FIELDS, *TRANSITION_FIELDS)


def add_parser(sub) -> None:
    p = sub.add_parser("reconcile", help="rebuild the account from its journal and compare it with the saved state",
                       description="Fold the account's journal (fills, funding payments, governance transitions) and compare the result "
                                   "with the saved state. Exit 0 when they agree, 1 when they differ.")
    p.add_argument("--account", default=None,
                   help="account to check (default: the ACCOUNT setting, else paper; a replay is replay:<run_id>)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.10g}"
    return str(value)


def run(args) -> int:
    if not args.account:
        from prod_core.configs import load_settings

        args.account = load_settings().account
    with open_storage(args) as storage:
        entries = storage.journal(args.account)
        saved = storage.load_governance_state(args.account)
        rows = storage.open_positions(args.account)
        known = storage.accounts()
    if not entries and saved is None:
        others = ", ".join(a for a in known if not a.startswith("replay:")) or "none"
        print(f"reconcile: account {args.account} has no journal and no saved state in this database "
              f"(accounts here: {others})")
        return 1
    book = fold(args.account, entries)
    diffs = compare(book, saved, rows) if entries else ["the account has no journal yet (a runner opens it at start)"]
    journal = {"cash_usd": book.cash_usd, "closed_r": book.state.closed_r}
    journal.update({name: getattr(book.state, name) for name in COUNTER_FIELDS + TRANSITION_FIELDS})
    saved = saved or {}
    if args.json:
        print(json.dumps({
            "account": args.account, "agree": not diffs, "journal_entries": book.entries, "fills": book.fills, "fundings": book.fundings,
            "last_seq": book.last_seq, "journal": journal, "saved": {k: saved.get(k) for k in _SHOWN},
            "journal_positions": sorted(book.positions), "saved_positions": sorted(r["position_id"] for r in rows),
            "differences": diffs,
        }, default=str, indent=2))
        return 0 if not diffs else 1
    print(f"account {args.account}: journal {book.entries} entries ({book.fills} fills, {book.fundings} funding "
          f"payments, last seq {book.last_seq})")
    print(f"  {'field':<20} {'journal':>22} {'saved':>22}")
    for name in _SHOWN:
        print(f"  {name:<20} {_fmt(journal.get(name)):>22} {_fmt(saved.get(name)):>22}")
    print(f"  {'open positions':<20} {len(book.positions):>22} {len(rows):>22}")
    for pid, p in sorted(book.positions.items()):
        print(f"    {pid}: {p.side.value} {p.qty:.10g} {p.symbol} @ {p.entry_price:.10g}")
    if diffs:
        print(f"DIFFER ({len(diffs)}):")
        for line in diffs:
            print(f"  {line}")
        print("the next runner start logs these, audits them and proceeds from the journal")
        return 1
    print("AGREE: the saved state is the fold of the journal")
    return 0
