# Every target creates .venv on first use, so a fresh machine needs only python3 and make.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test test-fast lint bench bench-phoenix clean

$(BIN)/activate:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml $(BIN)/activate
	$(BIN)/pip install -q -e ".[test,bench,serve,otel,test-otel]"
	touch $@

demo: $(VENV)/.installed  ## record a multi-agent conversation into ./lmg-data and summarise it
	$(BIN)/lmg demo

test: $(VENV)/.installed  ## lint, type-check, then every test (crash and concurrency tests included)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	LMG_TEST_GATE=1 $(BIN)/pytest -q

test-fast: $(VENV)/.installed  ## the quick loop: lint, type-check, every test but the slow ones, on every core
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest -q -m "not slow" -n auto

bench: $(VENV)/.installed  ## the benchmarks of docs/benchmarks.md (several minutes)
	$(BIN)/python -m tests.benchmarks.run

.venv-phoenix/.installed:  ## Arize Phoenix in its own venv: it pins its own versions of our dependencies
	$(PY) -m venv .venv-phoenix
	.venv-phoenix/bin/pip install -q arize-phoenix
	touch $@

bench-phoenix: $(VENV)/.installed .venv-phoenix/.installed  ## OTLP ingest beside Arize Phoenix, reads while ingesting (not in make test)
	$(BIN)/python -m tests.benchmarks.otlp_phoenix --phoenix .venv-phoenix/bin/phoenix

clean:
	rm -rf $(VENV) .venv-phoenix lmg-data lmg-data-fix* .pytest_cache .mypy_cache .ruff_cache
