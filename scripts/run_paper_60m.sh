#!/usr/bin/env bash
# A 60-minute paper window; results land in reports/run_<run_id>/.
set -euo pipefail
cd "$(dirname "$0")/.."
exec scripts/run_paper.sh --max-seconds 3600 "$@"
