# One-command set-up: `make run` starts the bridge with a demo upstream,
# `make test` runs lint, types and the whole suite.  Only python3 (3.11+)
# and make are needed; everything else goes into .venv.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: help venv run test lint typecheck unit clean bench container-test

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
	@echo "Starting the bridge with a demo upstream (http://127.0.0.1:8080 unless ARGS says otherwise). In another terminal try:"
	@echo "  curl -X POST --data-binary 'hello world' http://127.0.0.1:8080/send"
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

# Benchmark (issues 6 and 9; not part of `make test`): about 12 minutes, `make bench
# ARGS=--quick` for a short smoke run, `ARGS=--scenarios=resp` for one scenario.  Needs the
# peers' packages in .venv (aiohttp; redis-py with hiredis for the Redis peer), never in the
# runtime dependencies, and wrk and redis-server (Debian packages; the bench starts its own
# redis-server on a free port, never the system service).
BENCH_PACKAGES := aiohttp redis hiredis
bench: $(STAMP)
	@$(BIN)/python -c 'import aiohttp, redis, hiredis' 2>/dev/null || \
		$(BIN)/python -m pip install --quiet $(BENCH_PACKAGES)
	@missing=""; \
	command -v wrk >/dev/null 2>&1 || missing="$$missing wrk"; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	if [ -n "$$missing" ]; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y $$missing; fi
	$(BIN)/python bench/run.py $(ARGS)

# Container image end to end (issue 5; not part of `make test`: needs a Docker daemon,
# e.g. ../shared/tools/docker-local.sh up, then export DOCKER_HOST as it prints).
# Builds the image, runs it with an upstream, checks health, POST /send, docker stop.
IMAGE ?= bridge:local
container-test:
	$(PYTHON) docker/container_test.py --image $(IMAGE) $(ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis build *.egg-info
