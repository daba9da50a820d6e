# The two commands of the quick start: `make demo` and `make test`.
# Installs come from the lock files in requirements/ (`make lock` refreshes them).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LOCK := requirements/dev.txt
# the fast tier: no end-to-end daemon, training, deploy-tool or benchmark runs
FAST := not slow and not training and not deploy and not bench

.PHONY: setup demo test test-fast test-latest lock lint typecheck bench image clean

setup: $(STAMP)

$(STAMP): pyproject.toml $(LOCK) scripts/bootstrap.sh
	VENV=$(VENV) ./scripts/bootstrap.sh
	touch $(STAMP)

demo: setup
	$(VENV)/bin/whalecast demo

test: setup
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -n auto --dist worksteal -m "$(FAST)"

# Drift on purpose: the newest release of every dependency in a venv of its own.
test-latest:
	VENV=.venv-latest LOCK=none ./scripts/bootstrap.sh
	.venv-latest/bin/python -m pytest

# Refresh the lock files from pyproject.toml's ranges (commit the result).
lock: setup
	./scripts/lock.sh $(VENV)/bin/uv

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/lint-imports

typecheck: setup
	$(PY) -m mypy

bench: setup
	$(VENV)/bin/whalecast bench --out bench.json

# The container image with podman, as localhost/whalecast:local (the compose file's image),
# on a Debian base made locally when none is given: PYTHON_IMAGE=python:3.11-slim-bookworm
# uses the registry's. Needs root, podman and debootstrap (scripts/bootstrap.sh installs them).
image:
	./scripts/image.sh

clean:
	rm -rf $(VENV) .venv-latest .whalecast build *.egg-info .pytest_cache .mypy_cache .ruff_cache
