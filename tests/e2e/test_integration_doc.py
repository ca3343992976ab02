"""docs/integration.md followed as an integrator would, against a running system: its upstream
records published as written, its ingest example sent and answered as the page says, a webhook
signed by the page's code, and its clock record."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest

from services.notifier.settings import DEV_PARTNER_SECRET
from shared import topics
from tests.e2e.driver import START
from tests.e2e.support import RunningStack
from tests.support.factories import produce
from tests.support.integration_doc import example
from tests.unit.test_integration_doc import the_pages_signer
from tools.simulator.system import System

pytestmark = pytest.mark.e2e


def record(item: dict[str, Any]) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    headers = [(k, str(v).encode()) for k, v in item["headers"].items()]
    return item["key"].encode(), json.dumps(item["value"]).encode(), headers


async def clock_is_set(system: System) -> None:
    if await system.latest_clock() is None:
        await system.set_clock(START)
        await system.wait_quiet(START, limit=60)


async def test_the_pages_clock_record_moves_every_service(system_under_test: RunningStack) -> None:
    item = example("clock-record")
    await produce(system_under_test.endpoints.bootstrap, topics.CLOCK, [record(item)])
    at = datetime.fromisoformat(item["value"]["now"])
    async with System(system_under_test.endpoints) as system:
        async with asyncio.timeout(30):
            while True:  # time never goes back: a later clock stands
                states = await system.progress()
                if all(datetime.fromisoformat(s["clock"]) >= at for s in states):
                    break
                await asyncio.sleep(0.3)


async def test_the_pages_upstream_records_and_ingest_example(
    system_under_test: RunningStack,
) -> None:
    ledger = system_under_test.endpoints.services["ledger"]
    records = example("upstream-records")
    async with System(system_under_test.endpoints) as system:
        await clock_is_set(system)
        await produce(
            system_under_test.endpoints.bootstrap,
            topics.CORE_BANKING,
            [record(r) for r in records],
        )
        account_id = records[1]["value"]["account_id"]
        async with asyncio.timeout(30):
            while (found := await system.request("GET", f"{ledger}/v1/accounts/{account_id}"))\
                    .status_code != 200:  # fmt: skip
                await asyncio.sleep(0.3)
        account = found.json()
        assert Decimal(account["principal"]) == Decimal(records[1]["value"]["principal"])
        assert len(account["installments"]) == 3

        request = example("ingest-request")
        expected = example("ingest-responses")
        answers = []
        for batch in (request, request, [request[0] | {"id": expected[2][0]["id"]}]):
            response = await system.request("POST", f"{ledger}/v1/events", json=batch)
            assert response.status_code == 200, response.text
            answers.append(response.json())
        assert answers == expected


async def test_a_webhook_signed_by_the_pages_code_is_accepted(
    system_under_test: RunningStack,
) -> None:
    notifier = system_under_test.endpoints.services["notifier"]
    vector = example("signature-vector")
    body = vector["body"].encode()
    sign = the_pages_signer()
    async with System(system_under_test.endpoints) as system:
        await clock_is_set(system)
        url = f"{notifier}/v1/webhooks/standin/status"
        now = int(time.time())  # signatures guard transport: wall time
        # accepted, and orphaned (no such contact): 202; stale either way: 401
        for stamp, expected in ((now, 202), (now - 301, 401), (now + 301, 401)):
            response = await system.http.post(
                url,
                content=body,
                headers={
                    "Content-Type": "application/json",
                    "Arrears-Signature": sign(DEV_PARTNER_SECRET, body, stamp),
                },
            )
            assert response.status_code == expected, (stamp - now, response.text)
        assert response.headers["content-type"] == "application/problem+json"
