# One-command set-up: `make run` starts the bridge with a demo upstream,
# `make test` runs lint, types and the whole suite.  Only python3 (3.11+)
# and make are needed; everything else goes into .venv.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Two stamps: `make run` installs what running needs, `make test` adds the
# test and lint tools on top (about three times as much to download and unpack).
# --no-compile: Python compiles a module when it is first imported, and only
# a fraction of the installed modules ever is (half the CPU time of an install).
STAMP_RUN  := $(VENV)/.installed-run
STAMP_TEST := $(VENV)/.installed-test

.PHONY: help venv run test lint typecheck unit clean bench container-test

help:
	@echo "make run        set up .venv (runtime only) and start the bridge with a demo upstream"
	@echo "                (another port: make run ARGS='--listen 127.0.0.1:9090')"
	@echo "make test       add the test tools to .venv, run ruff, mypy and the whole test suite"
	@echo "make clean      remove .venv and caches"

$(STAMP_RUN): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || \
		{ echo "bridge needs Python 3.11 or newer; $(PYTHON) is $$($(PYTHON) --version)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --no-compile -e .
	@touch $(STAMP_RUN)

# The test extra straight from pyproject.toml: `pip install -e '.[test]'` would
# build and install the project a second time.
$(STAMP_TEST): $(STAMP_RUN) pyproject.toml
	$(BIN)/python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['test']))" > $(VENV)/test-requirements.txt
	$(BIN)/python -m pip install --quiet --no-compile -r $(VENV)/test-requirements.txt
	@touch $(STAMP_TEST)

venv: $(STAMP_TEST)

run: $(STAMP_RUN)
	@$(BIN)/python -m bridge.app.banner $(ARGS)
	$(BIN)/bridge --demo $(ARGS)

lint: $(STAMP_TEST)
	$(BIN)/ruff check bridge tests

typecheck: $(STAMP_TEST)
	$(BIN)/mypy bridge

# -rs: a skipped test says why (no Docker daemon, no redis-server...).
# -n auto: one worker per CPU (pytest-xdist); most tests wait on real processes,
# so two workers halve the wall time on a 2-core machine.  PYTEST_ARGS='-n 0'
# runs them in one process.
unit: $(STAMP_TEST)
	$(BIN)/python -m pytest -q -rs -n auto $(PYTEST_ARGS)

test: lint typecheck unit

# Benchmark (issues 6, 9 and 12; not part of `make test`): about 20 minutes, `make bench
# ARGS=--quick` for a short smoke run, `ARGS=--scenarios=resp` for one scenario.  Needs the
# peers' packages in .venv (aiohttp; redis-py with hiredis for the Redis peer), never in the
# runtime dependencies, and wrk and redis-server (Debian packages; the bench starts its own
# redis-server on a free port, never the system service).
BENCH_PACKAGES := aiohttp redis hiredis
bench: $(STAMP_RUN)
	@$(BIN)/python -c 'import aiohttp, redis, hiredis' 2>/dev/null || \
		$(BIN)/python -m pip install --quiet $(BENCH_PACKAGES)
	@missing=""; \
	command -v wrk >/dev/null 2>&1 || missing="$$missing wrk"; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	if [ -n "$$missing" ]; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y $$missing; fi
	$(BIN)/python bench/run.py $(ARGS)

# Container image end to end (issue 5; not part of `make test`: needs a Docker daemon,
# reachable as `docker` finds it, e.g. through DOCKER_HOST).
# Builds the image, runs it with an upstream, checks health, POST /send, docker stop.
IMAGE ?= bridge:local
container-test:
	$(PYTHON) docker/container_test.py --image $(IMAGE) $(ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis build *.egg-info
