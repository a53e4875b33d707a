# rag-poc: `make up` starts the whole stack, `make test` runs every check. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: up test lint typecheck unit install clean docs chaos

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

up: $(STAMP)
	$(BIN)/ragpoc up

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

# pytest exits 5 when it collected no test: that is a failure, said plainly.
test: lint typecheck
	$(BIN)/pytest $(PYTEST_ARGS); code=$$?; \
	if [ $$code -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; \
	exit $$code

# The long fault run: CHAOS_MINUTES (10) of random faults against `ragpoc up` plus a second
# runner and gateway on PostgreSQL, then the history checker's table; exit 1 if a promise broke.
CHAOS_MINUTES ?= 10
chaos: $(STAMP)
	$(BIN)/python -m bench.chaos --minutes $(CHAOS_MINUTES)

# The parts of docs/ARCHITECTURE.md the code can say by itself (a test checks they are fresh).
docs: $(STAMP)
	$(BIN)/python scripts/gen_docs.py

clean:
	rm -rf $(VENV) .ragpoc .mypy_cache .pytest_cache .ruff_cache
