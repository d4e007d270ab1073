# survae — common tasks. `make install` creates .venv/ at the project root; other targets use it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# On machines without an NVIDIA driver, pin the CPU build of torch (see constraints-cpu.txt).
TEST_WORKERS ?= 2
CONSTRAINTS ?= $(shell command -v nvidia-smi >/dev/null 2>&1 || echo "-c constraints-cpu.txt")

.PHONY: docs docs-test install install-locked lock run test test-full lint format benchmark clean

$(VENV)/.installed: pyproject.toml constraints-cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(CONSTRAINTS) -e ".[dev,cluster]"
	touch $@

install: $(VENV)/.installed

# The exact tested environment (requirements-lock.txt) instead of the newest allowed versions.
install-locked: requirements-lock.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(CONSTRAINTS) -r requirements-lock.txt
	$(PY) -m pip install -q --no-deps -e .
	$(PY) -m pip check
	touch $(VENV)/.installed

# Rewrite requirements-lock.txt from .venv (after changing dependencies and testing).
lock: install
	$(PY) scripts/lock.py

run: install
	WANDB_MODE=$${WANDB_MODE:-offline} $(PY) run.py $(ARGS)

test: install
	$(PY) -m pytest -q -n $(TEST_WORKERS) -m "not slow and not gpu and not docs and not cluster" $(ARGS)

test-full: install
	$(PY) -m pytest -q -n $(TEST_WORKERS) $(ARGS)

lint: install
	$(VENV)/bin/ruff check survae tests scripts run.py
	$(VENV)/bin/ruff format --check survae tests scripts run.py

format: install
	$(VENV)/bin/ruff check --fix survae tests scripts run.py
	$(VENV)/bin/ruff format survae tests scripts run.py

clean:
	rm -rf $(VENV) outputs multirun logs .pytest_cache

benchmark: install
	$(PY) scripts/benchmark.py $(ARGS)

# The documentation site into docs/_build/html; warnings are errors.
docs: install
	$(PY) -m pip install -q $(CONSTRAINTS) -e ".[docs]"
	$(PY) -m sphinx -W --keep-going -q -b html docs docs/_build/html

# The built site in headless Chromium (Debian's chromium); screenshots in docs/_build/screenshots.
docs-test: docs
	$(PY) -m pytest -q -m docs tests/docs $(ARGS)
