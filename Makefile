# One-command set-up: `make run` starts the bridge with a demo upstream,
# `make test` runs lint, types and the whole suite.  Only python3 (3.11+)
# and make are needed; everything else goes into .venv.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: help venv run test lint typecheck unit clean

help:
	@echo "make run        set up .venv and start the bridge with an embedded demo upstream"
	@echo "make test       set up .venv, run ruff, mypy and the whole test suite"
	@echo "make clean      remove .venv and caches"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || \
		{ echo "bridge needs Python 3.11 or newer; $(PYTHON) is $$($(PYTHON) --version)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	@echo
	@echo "Starting the bridge on http://127.0.0.1:8080 with a demo upstream. In another terminal try:"
	@echo "  curl -X POST --data-binary \$$'hello\\nworld\\n' http://127.0.0.1:8080/send"
	@echo "  curl -X POST --data-binary 'PING' http://127.0.0.1:8080/request"
	@echo "Stop with Ctrl-C."
	@echo
	$(BIN)/bridge --demo $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check bridge tests

typecheck: $(STAMP)
	$(BIN)/mypy bridge

unit: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test: lint typecheck unit

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis build *.egg-info
