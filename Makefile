# make test: everything CI runs. make demo: the sandbox appliance and the TUI.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test check lint typecheck pytest demo system-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

system-deps:
	@./scripts/system-deps

test: $(STAMP) system-deps check pytest

check: lint typecheck

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest -q -n 4 --dist loadfile

demo: $(STAMP) system-deps
	$(BIN)/bgtui demo

# screens/: an SVG of every TUI screen and state, from the app on a sandbox appliance.
.PHONY: screens
screens: $(STAMP) system-deps
	$(BIN)/python scripts/make_screens.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
