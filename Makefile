# vqi — every target documents itself: `make help`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
EXPERIMENT ?= demo
FORCE ?= 0
ARGS ?=
LOCK ?= requirements.lock
LOCK_PYTHON := 3.11
TABLES := outputs/tables
UI_PORT ?= 5000
# Print each table that exists once (the report stage logs only where it wrote them).
SHOW = @for t in $(1); do if [ -f $(TABLES)/$$t.md ]; then echo; cat $(TABLES)/$$t.md; fi; done
VQI = $(PY) -m vqi.run experiment=$(EXPERIMENT) force=$(if $(filter 1 true yes,$(FORCE)),true,false) $(ARGS)

.DEFAULT_GOAL := help
SEEDS ?= 1 2 3 4 5
STUDY_ARGS ?= 'xai_methods=[gradcam,hirescam]'
PROTOCOL ?= conf/study/development.yaml
BUDGET_SEEDS ?= 1 2 3 4 5 6 7 8 9 10
# The Quantus cross-checks' library (tests/test_quantus_parity.py; LGPL-3.0+), without its
# dependencies: it asks for opencv-python, which writes the same cv2 package as the
# opencv-python-headless that vqi uses; its other dependencies are already vqi's.
QUANTUS := quantus==0.6.0
# Off by default. Where PyTorch's CPU index is reachable, TORCH_INDEX=https://download.pytorch.org/whl/cpu
# installs the CPU build of the locked torch (2.14.1+cpu satisfies the lock's ==2.14.1, and pip
# prefers it), without the CUDA build's nvidia-* libraries (3.2 GB of the 6.7 GB .venv here).
# Not tried here: this machine reaches only PyPI.
TORCH_INDEX ?=
PIP_INDEX := $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))

.PHONY: help install lock demo table1 table2 table3 paper study budget serve ui test test-all

help: ## List the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-10s %s\n", $$1, $$2}'

install: $(VENV)/.installed ## Create .venv and install vqi (editable) with the dev and study extras, at the versions of requirements.lock

# The lock pins every package the results depend on (CPython 3.11, Linux x86-64: what CI runs);
# on another Python it cannot apply, so the install goes on unpinned and says so. LOCK= skips it.
$(VENV)/.installed: pyproject.toml $(LOCK) Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	@if [ -n "$(LOCK)" ] && $(PY) -c 'import sys; sys.exit("%d.%d" % sys.version_info[:2] != "$(LOCK_PYTHON)")'; then \
	  echo "$(PY) -m pip install -q -c $(LOCK) $(PIP_INDEX) -e '.[dev,study]'"; $(PY) -m pip install -q -c $(LOCK) $(PIP_INDEX) -e '.[dev,study]'; \
	else \
	  echo "warning: $(if $(LOCK),$(LOCK) is for CPython $(LOCK_PYTHON) and this is $$($(PY) -V);) installing unpinned: results may differ from the README's"; \
	  $(PY) -m pip install -q $(PIP_INDEX) -e '.[dev,study]'; \
	fi
	$(PY) -m pip install -q --no-deps $(QUANTUS)
	touch $@

lock: install ## Re-resolve requirements.lock from pyproject.toml (deliberately: then re-measure the README's tables)
	$(PY) -m pip install -q uv
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --extra study --python-version 3.11 \
		--python-platform x86_64-manylinux_2_28 --upgrade -o $(LOCK)

demo: install ## The main command: every stage on the generated TTPLA-like data (CPU, minutes); prints Tables I and II
	$(VQI) stage=all
	$(call SHOW,table1 table2 table2_truth)

table1: install ## Table I: prepare, train, test, explain + evaluate every method, report (EXPERIMENT=demo|paper, FORCE=1)
	$(VQI) stage=all until=report
	$(call SHOW,table1)

table2: install ## Table II: Table I's chain, then augment, retrain and compare (EXPERIMENT=demo|paper, FORCE=1)
	$(VQI) stage=all
	$(call SHOW,table2 table2_truth)

table3: install ## Table III (can the explanations be trusted?): Table I's runs, stage=sanity, report; prints its time
	@start=$$(date +%s); \
	$(VQI) stage=all until=report && $(VQI) stage=sanity && $(VQI) stage=report && \
	echo "make table3: $$(( $$(date +%s) - start )) s wall clock"
	$(call SHOW,table3)

paper: table2 ## Both tables of the paper (reruns reuse finished stages)
	$(call SHOW,table1)

study: install ## Known-truth study: every arm of PROTOCOL (default: the development seeds) -> outputs/tables/study_<protocol>.* (resumes)
	$(PY) -m vqi.study arms --protocol $(PROTOCOL)

budget: install ## Review-budget curves: every ranker at budgets 0-100%, BUDGET_SEEDS (default 1-10), no retraining -> review_budget.*
	$(PY) -m vqi.study budget --seeds $(BUDGET_SEEDS) -- experiment=$(EXPERIMENT) $(STUDY_ARGS)

serve: install ## The inspection web app and review page on http://127.0.0.1:8000 (ARGS=serve.port=8080)
	$(VQI) stage=serve

ui: install ## The MLflow UI on outputs/mlflow.db; prints each experiment's runs address (UI_PORT=5000)
	$(PY) scripts/mlflow_ui.py --store outputs/mlflow.db --port $(UI_PORT)

test: install ## Check the import layers (lint-imports, pyproject.toml), then run the fast tests (pytest -m "not slow")
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -m "not slow" -q

test-all: install ## Check the import layers, then run every test, the slow ones too
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q
