# Every target sets up what it needs: a virtualenv in .venv with the project and its tools.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
SUM    := $(shell cksum pyproject.toml | cut -d' ' -f1)
# what running needs (services, local PostgreSQL, the simulator's report) and, for the tests and
# tools, everything
RUN    := $(VENV)/.installed-run-$(SUM)
DEV    := $(VENV)/.installed-dev-$(SUM)

.PHONY: up services down status logs test lint typecheck pytest faults bench venv clean

$(RUN): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[local,sim]'
	@rm -f $(VENV)/.installed-run-*
	@touch $@

$(DEV): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@ $(RUN)

venv: $(DEV)

## Bring Kafka, PostgreSQL, the partner stand-in and the four services up on the controlled clock,
## play the December campaign (10,000 customers, 45 days), write its report, and leave it all
## running (idempotent: a second run reprints the report).
up: $(RUN)
	$(PY) -m scripts.stack up --campaign $(if $(REPLICAS),--replicas $(REPLICAS)) $(CAMPAIGN_ARGS)

## The same stack on the wall clock, without a campaign.
services: $(RUN)
	$(PY) -m scripts.stack up $(if $(REPLICAS),--replicas $(REPLICAS))

down:
	@if [ -x $(PY) ]; then $(PY) -m scripts.stack down; fi

status: $(RUN)
	$(PY) -m scripts.stack status

logs: $(RUN)
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

## A campaign through SIGKILLs, broker and database restarts and a stalled partner.
faults: venv
	$(PY) -m pytest -m faults tests/faults $(PYTEST_ARGS)

bench: venv
	$(PY) -m bench $(BENCH_ARGS)

clean: down
	rm -rf .stack
