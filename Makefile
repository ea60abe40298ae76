# vqi — every target documents itself: `make help`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
EXPERIMENT ?= demo
FORCE ?= 0
ARGS ?=
TABLES := outputs/tables
VQI = $(PY) -m vqi.run experiment=$(EXPERIMENT) force=$(if $(filter 1 true yes,$(FORCE)),true,false) $(ARGS)

.DEFAULT_GOAL := help
.PHONY: help install demo table1 table2 table3 paper serve test test-all

help: ## List the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-10s %s\n", $$1, $$2}'

install: $(VENV)/.installed ## Create .venv and install vqi (editable) with the dev extra

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

demo: install ## The main command: every stage on the generated TTPLA-like data (CPU, minutes)
	$(VQI) stage=all
	@cat $(TABLES)/table1.md $(TABLES)/table2.md

table1: install ## Table I: prepare, train, test, explain + evaluate every method, report (EXPERIMENT=demo|paper, FORCE=1)
	$(VQI) stage=all until=report
	@cat $(TABLES)/table1.md

table2: install ## Table II: Table I's chain, then augment, retrain and report (EXPERIMENT=demo|paper, FORCE=1)
	$(VQI) stage=all
	@cat $(TABLES)/table2.md

table3: install ## Table III (can the explanations be trusted?): Table I's runs, stage=sanity, report; prints its time
	@start=$$(date +%s); \
	$(VQI) stage=all until=evaluate && $(VQI) stage=sanity && $(VQI) stage=report && \
	echo "make table3: $$(( $$(date +%s) - start )) s wall clock"
	@cat $(TABLES)/table3.md

paper: table2 ## Both tables of the paper (reruns reuse finished stages)
	@cat $(TABLES)/table1.md

serve: install ## The inspection web app and review page on http://127.0.0.1:8000 (ARGS=serve.port=8080)
	$(VQI) stage=serve

test: install ## Run the fast tests (pytest -m "not slow")
	$(PY) -m pytest -m "not slow" -q

test-all: install ## Run every test, the slow ones too
	$(PY) -m pytest -q
