# Every target sets up what it needs: a virtualenv in .venv with the project and its tools.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: up down status logs test lint typecheck pytest bench venv clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

venv: $(STAMP)

## Bring Kafka, PostgreSQL and the four services up (idempotent).
up: venv
	$(PY) -m scripts.stack up

down:
	@if [ -x $(PY) ]; then $(PY) -m scripts.stack down; fi

status: venv
	$(PY) -m scripts.stack status

logs: venv
	$(PY) -m scripts.stack logs

## Lint, format check, type check, then every test against real Kafka and PostgreSQL.
test: lint typecheck pytest

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: venv
	$(VENV)/bin/mypy shared services scripts tests bench tools

pytest: venv
	$(PY) -m pytest $(PYTEST_ARGS)

bench: venv
	$(PY) -m bench.backbone
	$(PY) -m bench.ledger
	$(PY) -m bench.scheduler
	$(PY) -m bench.notifier
	$(PY) -m bench.bureau

clean: down
	rm -rf .stack
