# Two entry points for a fresh machine:
#   make run    installs the project into .venv and serves the web app on
#               http://127.0.0.1:8000 with the embedded default (SQLite and a
#               file-system broker under $BONSAI_HOME, default ~/.bonsai).
#   make test   installs the project, the test tools and the Debian packages the
#               tests need (Fashion-MNIST files, Chromium, docker-compose), then runs
#               ruff, mypy and pytest.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install install-test run test lint system-packages digits

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

run: install
	$(BIN)/bonsai serve --host $(HOST) --port $(PORT)

system-packages:
	scripts/install-system-packages.sh

lint: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy backend worker

test: install-test system-packages lint
	$(BIN)/python -m pytest -q

# The documented first search: 8 epochs on scikit-learn's digits, on the CPU.
digits: install
	$(BIN)/bonsai search --dataset digits --epochs 8 --out runs/digits
