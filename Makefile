PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test lint demo sandbox clean browser proto

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP) browser
	$(BIN)/ruff check notion_sync notion_sync_tests benchmarks
	$(BIN)/pytest

# The UI browser test drives Debian's Chromium (never a browser downloaded by `playwright install`).
# Installed here when missing and possible (root with apt-get); otherwise that test is skipped.
browser:
	@if [ -x /usr/bin/chromium ]; then \
		echo "browser: /usr/bin/chromium is installed"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "browser: installing Debian's chromium (apt-get update; apt-get install -y chromium)"; \
		{ apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; } \
			|| echo "browser: chromium could not be installed; the browser test will be skipped"; \
	else \
		echo "browser: /usr/bin/chromium is missing and needs root with apt-get; the browser test will be skipped"; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check notion_sync notion_sync_tests benchmarks
	$(BIN)/ruff format --check notion_sync notion_sync_tests benchmarks

# The Pub/Sub API modules are generated from our pubsub_api.proto and committed (no build step needed).
proto: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. \
		notion_sync/salesforce/pubsub/pubsub_api.proto

demo: $(STAMP)
	$(BIN)/notion-sync demo

clean:
	rm -rf $(VENV) data .pytest_cache
