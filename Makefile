# One-command entry points. Everything installs into .venv from the pinned requirements.txt.
# `make help` lists every target; the README's two commands are `make repro` and `make test`.
# Python: the newest supported one on PATH that runs, or PYTHON=python3.12 (a name or a path).
SUPPORTED := 3.13 3.12 3.11
PYTHON ?= $(firstword $(foreach v,$(SUPPORTED),$(shell python$(v) -c 'import sys' >/dev/null 2>&1 && echo python$(v))))
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# stages call `python`: make it the venv's
export PATH := $(abspath $(BIN)):$(PATH)
export DVC_NO_ANALYTICS := 1

.PHONY: help setup repro test bench probe prune deps compare lock repro-check verify spread study tolerances power clean-venv
.DEFAULT_GOAL := help

help: ## list the targets
	@awk -F ':.*## ' '/^[a-z-]+:.*## /{printf "  make %-15s%s\n", $$1, $$2}' $(MAKEFILE_LIST)

setup: venv-python cpu-floor $(STAMP) .dvc/plots-offline.html ## create .venv and install the pinned dependencies and this package

# One line and a stop on a CPU below what the pinned wheels need (x86-64-v2; ARMv8.1 with NEON),
# where numpy dies at its import with a bare 'Illegal instruction' (src/mnist_vae/cpu_floor.py: no numpy).
.PHONY: cpu-floor
cpu-floor: venv-python
	@$(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON)) src/mnist_vae/cpu_floor.py

# One line and a stop where .venv cannot serve: no supported Python, or a .venv made by another
# Python than the one PYTHON= asks for (every later target would reuse it).
pyver = $(shell $(1) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
.PHONY: venv-python
venv-python:
	@if [ -L $(BIN)/python ] && [ ! -e $(BIN)/python ]; then \
	  echo "make: .venv's python no longer runs (the Python it was made from is gone or upgraded): run \`make clean-venv\`, then this command again" >&2; exit 1; \
	elif [ -x $(BIN)/python ]; then \
	  have=$$($(BIN)/python -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
	  case " $(SUPPORTED) " in *" $$have "*) ;; *) echo "make: .venv runs Python $$have, which this project does not support ($(SUPPORTED)): run \`make clean-venv\`, then this command again" >&2; exit 1;; esac; \
	  if [ "$(origin PYTHON)" != file ] && [ "$(call pyver,$(PYTHON))" != "$$have" ]; then \
	    echo "make: .venv was made by Python $$have, but PYTHON=$(PYTHON) is $(or $(call pyver,$(PYTHON)),not a Python that runs): run \`make clean-venv\`, then this command again" >&2; exit 1; fi; \
	elif [ -z "$(PYTHON)" ]; then \
	  echo "make: no python3.13, python3.12 or python3.11 on PATH runs; install one (python.org, Homebrew, pyenv, your package manager) or name it: make $(or $(MAKECMDGOALS),help) PYTHON=/path/to/python3.12" >&2; exit 1; \
	else \
	  v="$(call pyver,$(PYTHON))"; \
	  case " $(SUPPORTED) " in *" $$v "*) echo "make: creating .venv with $(PYTHON) (Python $$v)";; \
	    *) echo "make: PYTHON=$(PYTHON) is $${v:+Python }$${v:-not a Python that runs}; this project needs Python 3.11, 3.12 or 3.13: make $(or $(MAKECMDGOALS),setup) PYTHON=python3.12" >&2; exit 1;; esac; \
	fi

$(STAMP): requirements.txt pyproject.toml | venv-python cpu-floor
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

bench: setup ## the speed benchmark: training and evaluation against their baselines, fast and universal numerics (reports/benchmark*)
	$(BIN)/python benchmarks/train_speed.py

prune: setup ## after removing or renaming a model in params.yaml: remove its outputs and dvc.lock entries
	$(BIN)/python tools/prune.py

deps: setup ## write each stage's code deps in dvc.yaml (and docs/pipeline.md's rerun table) from its imports
	$(BIN)/python tools/deps.py

compare: setup ## experiments side by side at terminal width: changed params, each model's test loss and IWAE bound
	$(BIN)/python tools/compare.py

probe: setup ## same seed, same bytes? four stages natively and as emulated Intel, AMD and ARM CPUs (qemu-user; root for apt)
	$(BIN)/dvc repro binarize
	tools/aarch64_sysroot.sh
	$(BIN)/python tools/probe_numerics.py

verify: setup ## the workspace's outputs and DVC's cache against dvc.lock's md5s: damaged objects and how to rebuild them
	$(BIN)/python tools/verify_outputs.py

repro-check: setup ## the reproduction gate: dvc repro --force, then the metrics against tolerances.yaml
	$(BIN)/python tools/repro_check.py

# Studies (studies.yaml, docs/studies.md; their outputs are committed, not run by CI): their
# experiments through DVC's queue, one job at a time (JOBS=1 suits 2 cores).
JOBS ?= 1
STUDY ?= latent-size
spread: setup ## the spread study: seed and float-order experiments -> reports/spread/ (about an hour)
	$(BIN)/python tools/study.py spread all --jobs $(JOBS)

study: setup ## a study of studies.yaml (STUDY=latent-size by default) -> reports/studies/$(STUDY)/
	$(BIN)/python tools/study.py $(STUDY) all --jobs $(JOBS)

tolerances: setup ## tolerances.yaml from the committed spread study
	$(BIN)/python tools/derive_tolerances.py

power: setup ## deliberate regressions judged by the gate -> reports/spread/power.*
	$(BIN)/python tools/spread.py power --jobs $(JOBS)

# The universal lock: uv resolves for every platform at once and writes environment markers
# (pip-tools resolves for the machine it runs on only). Pins already in the file are kept.
LOCK := requirements.txt
lock: setup ## regenerate requirements.txt, the universal lock, from requirements.in (uv pip compile --universal)
	$(BIN)/uv pip compile --universal --python-version 3.11 --custom-compile-command 'make lock' --quiet requirements.in -o $(LOCK)

clean-venv: ## remove .venv (the next target reinstalls it)
	rm -rf $(VENV)
