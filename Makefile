# The two commands of the quick start: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install run demo test lint bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev,tts]'
	touch $(STAMP)

install: $(STAMP)

## Set up, migrate and serve the API + embedded worker on 127.0.0.1:8000
## (SQLite and files under ./.vidpipe, the offline local provider, auth off on loopback).
run: install
	VIDPIPE_AUTH_DISABLED=$${VIDPIPE_AUTH_DISABLED:-true} $(BIN)/vidpipe serve

## Make one video from the command line, no server needed.
demo: install
	$(BIN)/vidpipe generate "a paper boat drifting on a calm lake at dawn" --seconds 4 --size 720x1280 -o demo.mp4

## Lint, type-check and run the whole test suite (needs PostgreSQL on 127.0.0.1:5432).
test: install
	bash scripts/system-deps.sh
	$(BIN)/ruff check src tests $(wildcard bench/*.py)
	$(BIN)/ruff format --check src tests $(wildcard bench/*.py)
	$(BIN)/mypy
	$(BIN)/pytest

bench: install
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) .vidpipe .pytest_cache .mypy_cache .ruff_cache
