#!/usr/bin/env bash
# A 24-hour paper run with exports in reports/run_<run_id>/.
set -euo pipefail
cd "$(dirname "$0")/.."
exec scripts/run_paper.sh --max-seconds 86400 "$@"
