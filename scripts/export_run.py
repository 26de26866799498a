#!/usr/bin/env python3
"""Export one run to ``reports/run_<run_id>/`` (Parquet + CSV tables, summary.md, run.log).

The report is read back from the database (``write_run_report``), so it can be written
again at any time after the run, and the export is recorded in the ``exports`` table.

    python scripts/export_run.py [--run-id ID] [--db storage/crupto.db] [--out reports]
                                 [--logs-dir logs] [--allow-running]

Defaults: the latest finished run; ``--db`` (a SQLite file or a ``postgresql://`` URL) from
DB_URL, else DB_PATH (environment, then ``.env``), else ``storage/crupto.db``; ``--out`` from REPORTS_DIR, else ``reports``; ``--logs-dir``
from LOGS_DIR, else ``logs`` (the run's log ``logs/<run_id>.log`` is copied when present).
Exit 0 on success, 2 on bad input (missing database, unknown run id, run still running).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prod_core.maintenance.export import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
