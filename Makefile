# Two set-up commands for a fresh machine: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV ?= .venv
VPY := $(VENV)/bin/python
RUN_STAMP := $(VENV)/.stamp-run
DEV_STAMP := $(VENV)/.stamp-dev
PYTEST_ARGS ?=

.PHONY: run test bench compiled clean-venv

$(VPY):
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip

$(RUN_STAMP): pyproject.toml | $(VPY)
	$(VPY) -m pip install -q -e .
	touch $@

$(DEV_STAMP): pyproject.toml | $(VPY)
	$(VPY) -m pip install -q -e '.[dev]'
	touch $(RUN_STAMP) $@

.env:
	cp .env.example .env

# The paper loop on the embedded simulated market until Ctrl+C (MAX_SECONDS=N bounds it).
run: $(RUN_STAMP) .env
	PYTHON=$(VPY) scripts/run_paper.sh $(if $(MAX_SECONDS),--max-seconds $(MAX_SECONDS)) $(ARGS)

# The whole suite.
test: $(DEV_STAMP)
	$(VPY) -m pytest $(PYTEST_ARGS)

bench: $(RUN_STAMP)
	$(VPY) scripts/bench_replay.py

# The hot modules compiled with Cython into build/compiled/ (prod_core/compiled.py); optional.
compiled: $(DEV_STAMP)
	$(VPY) scripts/build_compiled.py

clean-venv:
	rm -rf $(VENV)
