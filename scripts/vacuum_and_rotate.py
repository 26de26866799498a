#!/usr/bin/env python3
"""Rotate the database: archive old runs to Parquet + CSV, delete them, then VACUUM.

    python scripts/vacuum_and_rotate.py --db storage/crupto.db --out reports/archive
                                        [--keep-days 30] [--keep-runs 5] [--dry-run]

The ``--keep-runs`` newest runs always stay, whatever their age; so does every run active
within the last ``--keep-days`` days (last heartbeat or end). Each older run is written to
``<out>/run_<run_id>/<table>.parquet`` + ``.csv`` (every per-run table: runs, feed_states,
plans, orders, fills, positions, equity, events) plus ``manifest.json``; the files are read
back and their row counts compared with the database, and only then are the rows deleted,
all runs in ONE transaction that re-checks the counts (a run that changed meanwhile aborts
the delete, nothing is lost). Then ``VACUUM``.

Never rotated: a run still ``running`` with a fresh heartbeat, and a run that still owns an
OPEN position (open positions belong to the account). Account-level tables
(governance_state, audit, commands, exports, journal) are never deleted. ``--dry-run`` opens the
database read-only, prints the plan and changes nothing.

``--db`` is a SQLite file or a ``postgresql://user:password@host/db`` URL (default: DB_URL,
else DB_PATH, else ``storage/crupto.db``); a URL is printed without its password. On
PostgreSQL VACUUM is the plain one (space reusable, rarely returned to the disk).

Exit 0 on success, 2 on bad input (missing database, bad numbers), 1 when writing failed.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prod_core.maintenance.rotate import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
