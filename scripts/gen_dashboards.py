#!/usr/bin/env python3
"""Generate the five Grafana dashboards of the runbook into configs/grafana/dashboards/.

    python scripts/gen_dashboards.py           # (re)write the JSON files
    python scripts/gen_dashboards.py --check   # exit 1 if a committed file is not current

The JSON files are committed (Grafana provisions them from disk); this script is their
source. tests/monitoring/test_dashboards.py runs --check, so an edit made only to the
JSON, or only here, fails the suite. Standard library only.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prod_core.telemetry.dashboards import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
