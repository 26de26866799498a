#!/usr/bin/env python3
"""Remove old run artefacts: keep the newest ``reports/run_*`` folders and ``logs/*.log`` files.

    python scripts/cleanup.py [--keep-runs 2] [--keep-logs 5] [--dry-run]
                              [--reports-dir reports] [--logs-dir logs] [--db storage/crupto.db]

"Newest" is by modification time. ``--reports-dir`` defaults to REPORTS_DIR (environment,
then ``.env``), else ``reports``; ``--logs-dir`` to LOGS_DIR, else ``logs``; ``--db`` (a SQLite
file or a ``postgresql://`` URL, never printed with its password) to DB_URL, else DB_PATH.

Never touched: ``reports/archive/``, ``reports/summary_latest.md``,
``reports/02_acceptance_checklist.md``, ``reports/telemetry_events.csv`` (only ``run_*``
folders are candidates at all), the log and report folder of a run that is still running
(status ``running`` with a fresh heartbeat in the database, when the database exists), and
any log modified in the last 10 seconds. The database itself is only read.

Exit 0 on success, 2 on bad input (bad numbers, a directory that is a file, neither
directory present).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prod_core.maintenance.cleanup import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
