PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test lint demo sandbox clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check notion_sync notion_sync_tests benchmarks
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check notion_sync notion_sync_tests benchmarks
	$(BIN)/ruff format --check notion_sync notion_sync_tests benchmarks

demo: $(STAMP)
	$(BIN)/notion-sync demo

clean:
	rm -rf $(VENV) data .pytest_cache
