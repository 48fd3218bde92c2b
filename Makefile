# The set-up behind the project's two commands:
#   make reproduce   # the quick reproduction (Snakemake)
#   make test        # the test suite
# Both build the two pinned environments first (env/README.md says why there are two); a second
# `make setup` does nothing unless a requirements file or pyproject.toml changed.

PYTHON ?= python3
VENV ?= .venv
VENV_TF ?= .venv-tf
CORES ?= 2
CONFIGFILE ?= workflows/config/quick.yaml
PYTEST_ARGS ?=

REQ_MAIN := env/requirements-main.txt
REQ_TF := env/requirements-tf.txt
REQ_LXT := env/requirements-lxt.txt
REQ_REPORT := env/requirements-report.txt
# torch and torchvision go in a pip call of their own so pip takes the pinned wheels from this
# machine's disk; the pins are read from the requirements file (one source of truth).
TORCH_PINS = $(shell grep -E '^(torch|torchvision)==' $(REQ_MAIN))

export PIP_DISABLE_PIP_VERSION_CHECK := 1
# Where the library can find the innvestigate interpreter (subprocess backend).
export XAIBENCH_TF_PYTHON := $(CURDIR)/$(VENV_TF)/bin/python

SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PIP_FLAGS := --quiet --progress-bar off
# This machine's pip config lists local package indexes with missing folders, and pip warns once
# per such folder (~170 lines). Drop only that warning; pipefail keeps pip's exit status.
QUIET_PIP := 2>&1 | sed -u '/is ignored: it is neither a file nor a directory/d'

STAMP_MAIN := $(VENV)/.stamp-requirements
STAMP_EDITABLE := $(VENV)/.stamp-editable
STAMP_TF := $(VENV_TF)/.stamp-requirements
STAMP_REPORT := $(VENV)/.stamp-report

.PHONY: setup reproduce test mutation bench-gpu clean-results distclean check-python check-baseline update-baseline \
	check-report

setup: $(STAMP_EDITABLE) $(STAMP_TF)

check-python:
	@$(PYTHON) -c 'import sys; v = sys.version_info[:2]; sys.exit(0 if v == (3, 11) else "error: the pinned environments need Python 3.11, $(PYTHON) is %d.%d (make PYTHON=python3.11 ...)" % v)'

$(VENV)/bin/python $(VENV_TF)/bin/python:
	@$(MAKE) --no-print-directory check-python
	@echo ">> creating $(@D:/bin=)"
	$(PYTHON) -m venv $(@D:/bin=)

# lxt goes in with --no-deps: it declares accelerate, bitsandbytes and open_clip_torch, which it never
# imports (what it does import, transformers 4.52.4 included, is pinned in REQ_MAIN); it is an sdist,
# built with the venv's pinned setuptools (--no-build-isolation). env/README.md has the measurements.
$(STAMP_MAIN): $(REQ_MAIN) $(REQ_LXT) | $(VENV)/bin/python
	@echo ">> $(VENV): pip install $(TORCH_PINS)"
	@$(VENV)/bin/pip install $(PIP_FLAGS) $(TORCH_PINS) $(QUIET_PIP)
	@echo ">> $(VENV): pip install -r $(REQ_MAIN)"
	@$(VENV)/bin/pip install $(PIP_FLAGS) -r $(REQ_MAIN) $(QUIET_PIP)
	@echo ">> $(VENV): pip install --no-deps --no-build-isolation -r $(REQ_LXT)"
	@$(VENV)/bin/pip install $(PIP_FLAGS) --no-deps --no-build-isolation -r $(REQ_LXT) $(QUIET_PIP)
	@touch $@

# Also re-run when xaibench/__init__.py first appears, so the editable finder maps the package.
$(STAMP_EDITABLE): pyproject.toml $(wildcard xaibench/__init__.py) $(STAMP_MAIN)
	@echo ">> $(VENV): pip install --no-deps -e . (xaibench, editable)"
	@$(VENV)/bin/pip install $(PIP_FLAGS) --no-deps --no-build-isolation -e . $(QUIET_PIP)
	@touch $@

$(STAMP_TF): $(REQ_TF) | $(VENV_TF)/bin/python
	@echo ">> $(VENV_TF): pip install -r $(REQ_TF)"
	@$(VENV_TF)/bin/pip install $(PIP_FLAGS) -r $(REQ_TF) $(QUIET_PIP)
	@touch $@

# .venv/bin first on PATH so shell rules find `xaibench` and the right `python`.
# The workflow, then its browsable report (figures with captions, the metrics table). The report's
# stylesheet lets a figure taller than the window scroll to its top (workflows/report/report.css).
REPORT_FLAGS := --report results/report.html --report-stylesheet workflows/report/report.css
reproduce: setup
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/snakemake --cores $(CORES) --configfile $(CONFIGFILE)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/snakemake --cores $(CORES) --configfile $(CONFIGFILE) \
		$(REPORT_FLAGS)

# The report as a reader sees it: tools/check_report.py opens results/report.html in headless
# Chromium, clicks through every category and result, and fails naming a category or item that does
# not render (an image that does not load or cannot be scrolled into view, a table item without
# rows, a caption missing, a console error); a screenshot per category goes to results/report_check/.
# Chromium and its driver come from Debian (installed here when missing; needs root), selenium from
# env/requirements-report.txt. A missing report is built first, as `make reproduce` builds it (from
# the results already computed; the workflow itself is not run).
CHROMIUM ?= /usr/bin/chromium
CHROMEDRIVER ?= /usr/bin/chromedriver
check-report: $(STAMP_REPORT) | results/report.html
	@if [ ! -x $(CHROMIUM) ] || [ ! -x $(CHROMEDRIVER) ]; then \
		echo ">> apt-get install chromium chromium-driver"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	fi
	$(VENV)/bin/python tools/check_report.py results/report.html --out results/report_check \
		--chromium $(CHROMIUM) --chromedriver $(CHROMEDRIVER)

results/report.html: | $(STAMP_EDITABLE)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/snakemake --cores $(CORES) --configfile $(CONFIGFILE) \
		$(REPORT_FLAGS)

$(STAMP_REPORT): $(REQ_REPORT) $(STAMP_MAIN)
	@echo ">> $(VENV): pip install -r $(REQ_REPORT)"
	@$(VENV)/bin/pip install $(PIP_FLAGS) -r $(REQ_REPORT) $(QUIET_PIP)
	@touch $@

# The regression gate: recompute the baseline's tables and compare (exit 1 names the metric).
# The target goes before --configfile, which takes every path after it (tests/test_makefile.py).
check-baseline: setup
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/snakemake --cores $(CORES) regression --configfile $(CONFIGFILE)

# After an intended change of results: take the current tables as the new baseline.
update-baseline:
	$(VENV)/bin/xaibench regression update --results results --baseline results/baseline

# pytest's exit status is the recipe's, so make fails with it (5 = no tests collected included).
# XAIBENCH_REQUIRE_TF=1: a test needing the innvestigate worker fails instead of skipping when
# .venv-tf is missing or broken, so CI cannot pass without having run them.
# Then the mutation check: the suite must catch each defect planted in xaibench/lrp (about 2 min).
test: setup
	XAIBENCH_REQUIRE_TF=1 $(VENV)/bin/python -m pytest -q $(PYTEST_ARGS)
	$(MAKE) --no-print-directory mutation

# Plant each mutant of tools/mutation.py in a copy of the package, run the engine's tests on
# it, write the kill table to results/mutation.md; exit 1 if any mutant survives.
mutation: $(STAMP_EDITABLE)
	$(VENV)/bin/python tools/mutation.py

# Everything the workflow wrote, except the committed reference metrics in results/baseline/.
# On a machine with a CUDA GPU: the CUDA correctness tests (pytest marker cuda) and the benchmark on
# CUDA, written to results/engine/bench_cuda.csv and .md. It installs nothing: it takes the project's
# .venv if there is one, else the machine's own python3 with torch and torchvision (the lent GPU
# machines hold them; zennit is not needed: the benchmark times native against one gradient).
# Under 8 minutes on one large GPU.
GPU_PYTHON ?= $(if $(wildcard $(VENV)/bin/python),$(VENV)/bin/python,python3)
bench-gpu:
	PYTHONPATH="$(CURDIR)" $(GPU_PYTHON) -m pytest -q -p no:cacheprovider -m cuda tests/test_cuda.py
	PYTHONPATH="$(CURDIR)" $(GPU_PYTHON) -m xaibench.cli bench --device cuda --backends native --repeats 7 \
		--out results/engine

clean-results:
	@if [ -d results ]; then find results -mindepth 1 -maxdepth 1 ! -name baseline -exec rm -rf {} +; fi
	rm -rf .snakemake

distclean: clean-results
	rm -rf $(VENV) $(VENV_TF) *.egg-info .pytest_cache .hypothesis .ruff_cache
