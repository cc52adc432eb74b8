# One-command entry points. Everything installs into .venv from the pinned requirements.txt.
# `make help` lists every target; the README's two commands are `make repro` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# stages call `python`: make it the venv's
export PATH := $(abspath $(BIN)):$(PATH)
export DVC_NO_ANALYTICS := 1

.PHONY: help setup repro test bench probe prune compare repro-check spread tolerances power clean-venv
.DEFAULT_GOAL := help

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## (.*)/  make \1\t\2/' | expand -t 22

setup: $(STAMP) .dvc/plots-offline.html ## create .venv and install the pinned dependencies and this package

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip==26.3
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# `dvc plots show` / `diff` page template with Vega inline (.dvc/config points at it; git ignores it)
.dvc/plots-offline.html: $(STAMP) tools/plots_template.py
	$(BIN)/python tools/plots_template.py --out $@

repro: setup ## set up, then run the whole DVC pipeline on the default params (dvc repro)
	$(BIN)/dvc repro

test: setup ## set up, then run the test suite (unit tests and the real pipeline on a fast profile)
	$(BIN)/python -m pytest

bench: setup ## the speed benchmark: training and evaluation against their baselines, portable against fast numerics (reports/benchmark*)
	$(BIN)/python benchmarks/train_speed.py

prune: setup ## after removing or renaming a model in params.yaml: remove its outputs and dvc.lock entries
	$(BIN)/python tools/prune.py

compare: setup ## experiments side by side in 80 columns: changed params, each model's test loss and IWAE bound
	$(BIN)/python tools/compare.py

probe: setup ## same seed, same bytes? train and evaluate natively and as emulated Intel and AMD CPUs (qemu-user)
	$(BIN)/dvc repro binarize
	$(BIN)/python tools/probe_numerics.py

repro-check: setup ## the reproduction gate: dvc repro --force, then the metrics against tolerances.yaml
	$(BIN)/python tools/repro_check.py

# The spread study (about an hour on 2 cores; its output is committed, not run by CI):
# seed experiments through DVC's queue, one job at a time (JOBS=1 suits 2 cores).
JOBS ?= 1
spread: setup ## the spread study: seed and float-order experiments -> reports/spread/ (about an hour)
	$(BIN)/python tools/spread.py all --jobs $(JOBS)

tolerances: setup ## tolerances.yaml from the committed spread study
	$(BIN)/python tools/derive_tolerances.py

power: setup ## deliberate regressions judged by the gate -> reports/spread/power.*
	$(BIN)/python tools/spread.py power --jobs $(JOBS)

clean-venv: ## remove .venv (the next target reinstalls it)
	rm -rf $(VENV)
