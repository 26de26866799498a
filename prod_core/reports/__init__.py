"""Per-run reports: ``reports/run_<run_id>/`` with Parquet + CSV tables, summary.md and the log.

``write_run_report`` reads one run back from storage (never from live state), so the same
function serves the runner at a clean stop and ``scripts/export_run.py`` afterwards.
"""

from prod_core.reports.report import run_summary, write_run_report

__all__ = ["run_summary", "write_run_report"]
