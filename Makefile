# The two commands: `make demo` and `make test`. Both create ./.venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup test test-slow test-browser app demo lint format bench clean

setup: $(STAMP)

# Re-install only when pyproject.toml changes (the stamp is newer than it otherwise).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

test: setup
	$(BIN)/python -m pytest -q -m "not slow" --ignore=tests/browser

test-slow: setup
	$(BIN)/python -m pytest -q -m slow --ignore=tests/browser

# The web app in a real browser: Debian's headless Chromium (installed with apt-get when missing; as root, or
# through sudo) driven by Playwright (installed into the venv when missing; no browser download).
CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
test-browser: setup
	test -x $(CHROMIUM) || ($(SUDO) apt-get update && $(SUDO) apt-get install -y chromium)
	$(BIN)/python -c "import playwright" 2>/dev/null || $(BIN)/python -m pip install --quiet -e ".[browser]"
	CROSSVIS_REQUIRE_BROWSER=1 CROSSVIS_CHROMIUM=$(CHROMIUM) $(BIN)/python -m pytest -q tests/browser

app: setup
	$(BIN)/crossvis app

demo: setup
	$(BIN)/crossvis demo

lint: setup
	$(BIN)/ruff check src tests benchmarks tools
	$(BIN)/ruff format --check src tests benchmarks tools

format: setup
	$(BIN)/ruff format src tests benchmarks tools
	$(BIN)/ruff check --fix src tests benchmarks tools

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
