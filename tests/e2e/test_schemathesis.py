"""Every operation of every service's OpenAPI document, fuzzed by schemathesis against the
running system with a valid key: no answer is a server error, and every refusal is
problem+json. (Runs after the scenarios: what it creates, strategies included, is noise they
must not see.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from shared.auth import DEV_KEY
from tests.e2e.support import RunningStack

Case = Any  # schemathesis.Case, generic in its schema type
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
DOCS = Path(__file__).resolve().parents[2] / "docs" / "openapi"
AUTH = {"Authorization": f"Bearer {DEV_KEY}"}
FUZZ = settings(
    max_examples=10,
    deadline=None,
    derandomize=True,  # the same requests every run
    suppress_health_check=list(HealthCheck),
)

ledger = schemathesis.openapi.from_path(DOCS / "ledger.json")
scheduler = schemathesis.openapi.from_path(DOCS / "scheduler.json")
notifier = schemathesis.openapi.from_path(DOCS / "notifier.json")
bureau = schemathesis.openapi.from_path(DOCS / "bureau.json")
desk = schemathesis.openapi.from_path(DOCS / "desk.json")


def answers_well(case: Case, running: RunningStack, service: str) -> None:
    # longer than the longest wait an operation may be asked for (/v1/ops/progress?wait=30)
    response = case.call(base_url=running.endpoints.services[service], headers=AUTH, timeout=45)
    where = f"{case.method} {case.formatted_path} -> {response.status_code}"
    assert response.status_code < 500, where + " " + response.text[:500]
    if response.status_code >= 400:
        kinds = response.headers.get("content-type") or [""]  # schemathesis keeps header lists
        assert kinds[0].startswith("application/problem+json"), where


@ledger.parametrize()
@FUZZ
def test_the_ledger_api_never_fails_on_any_input(
    case: Case, system_under_test: RunningStack
) -> None:
    answers_well(case, system_under_test, "ledger")


@scheduler.parametrize()
@FUZZ
def test_the_scheduler_api_never_fails_on_any_input(
    case: Case, system_under_test: RunningStack
) -> None:
    answers_well(case, system_under_test, "scheduler")


@notifier.parametrize()
@FUZZ
def test_the_notifier_api_never_fails_on_any_input(
    case: Case, system_under_test: RunningStack
) -> None:
    answers_well(case, system_under_test, "notifier")


@bureau.parametrize()
@FUZZ
def test_the_bureau_api_never_fails_on_any_input(
    case: Case, system_under_test: RunningStack
) -> None:
    answers_well(case, system_under_test, "bureau")


@desk.parametrize()
@FUZZ
def test_the_desk_api_never_fails_on_any_input(case: Case, system_under_test: RunningStack) -> None:
    answers_well(case, system_under_test, "desk")
