"""Storage adapter: the SQLite DAO (``Storage``) behind every persisted record of crupto.

``Storage("storage/crupto.db")`` (or ``sqlite:///storage/crupto.db``) opens the database in
WAL mode and upgrades its schema through the versioned, forward-only ``MIGRATIONS``. Runs,
plans, orders, fills, positions, equity snapshots and telemetry events carry their
``run_id``; governance state and audit belong to the paper account. Hot-path writes are
buffered and flushed in one transaction per interval or N rows, while ``commit_account``
journals a fill with every consequence in one transaction before it returns. Every failure surfaces as ``StorageError`` with the path and the fix.
"""

from prod_core.storage.migrations import LATEST_VERSION, MIGRATIONS, StorageError
from prod_core.storage.sqlite import (
    EXPORT_TABLES,
    RUN_TABLES,
    AccountWrite,
    FirmReservation,
    LeaseLost,
    Storage,
    WriterLost,
    journal_fill_row,
    journal_funding_row,
    journal_row,
    resolve_sqlite_path,
)

__all__ = [
    "EXPORT_TABLES",
    "LATEST_VERSION",
    "MIGRATIONS",
    "RUN_TABLES",
    "AccountWrite",
    "FirmReservation",
    "LeaseLost",
    "Storage",
    "StorageError",
    "WriterLost",
    "journal_fill_row",
    "journal_funding_row",
    "journal_row",
    "resolve_sqlite_path",
]
