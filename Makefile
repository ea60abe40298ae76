# vqi — every target documents itself: `make help`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
EXPERIMENT ?= demo
FORCE ?= 0
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install demo test test-all

help: ## List the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-10s %s\n", $$1, $$2}'

install: $(VENV)/.installed ## Create .venv and install vqi (editable) with the dev extra

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

demo: install ## Run every stage on the generated TTPLA-like data (CPU, minutes)
	$(PY) -m vqi.run stage=all experiment=$(EXPERIMENT) $(ARGS)

test: install ## Run the fast tests (pytest -m "not slow")
	$(PY) -m pytest -m "not slow" -q

test-all: install ## Run every test, the slow ones too
	$(PY) -m pytest -q
