#!/usr/bin/env bash
# Starts the paper loop. Arguments pass through to `python -m prod_core.runner`
# (e.g. --max-seconds 600 --scenario crash --seed 7). No GNU `timeout` needed:
# the runner bounds itself with --max-seconds. `exec` hands signals to Python.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
exec "$PYTHON" -m prod_core.runner "$@"
