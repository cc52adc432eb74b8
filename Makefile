# One-command entry points. Everything installs into .venv from the pinned requirements.txt.
#   make repro   set up, then run the whole DVC pipeline on the default params
#   make test    set up, then run the test suite
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# stages call `python`: make it the venv's
export PATH := $(abspath $(BIN)):$(PATH)
export DVC_NO_ANALYTICS := 1

.PHONY: setup repro test bench repro-check spread tolerances power clean-venv

setup: $(STAMP) .dvc/plots-offline.html

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip==26.3
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# `dvc plots show` / `diff` page template with Vega inline (.dvc/config points at it; git ignores it)
.dvc/plots-offline.html: $(STAMP) tools/plots_template.py
	$(BIN)/python tools/plots_template.py --out $@

repro: setup
	$(BIN)/dvc repro

test: setup
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python benchmarks/train_speed.py

repro-check: setup
	$(BIN)/python tools/repro_check.py

# The spread study (about an hour on 2 cores; its output is committed, not run by CI):
# seed experiments through DVC's queue, one job at a time (JOBS=1 suits 2 cores).
JOBS ?= 1
spread: setup
	$(BIN)/python tools/spread.py all --jobs $(JOBS)

# tolerances.yaml from the committed study
tolerances: setup
	$(BIN)/python tools/derive_tolerances.py

# deliberate regressions against the gate (README, power table)
power: setup
	$(BIN)/python tools/spread.py power --jobs $(JOBS)

clean-venv:
	rm -rf $(VENV)
