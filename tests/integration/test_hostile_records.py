"""A thousand malformed records interleaved with good ones on ``core-banking.events``: every bad
one lands in the dead-letter topic with its reason, every good one is applied, and no partition
is held up."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import Callable
from decimal import Decimal

import pytest

from shared import topics
from shared.envelope import encode
from tests.integration.test_ledger import Ledger, open_loan, payment
from tests.support.factories import produce, read_topic

pytestmark = pytest.mark.asyncio(loop_scope="session")
Record = tuple[bytes, bytes, list[tuple[str, bytes]]]
BAD_PER_KIND = 100
# what the dead letter says, by kind of garbage
EXPECTED = {
    "not json": "value is not JSON",
    "no ce_type": "missing CloudEvents header(s): ce_type",
    "no ce_id": "missing CloudEvents header(s): ce_id",
    "wrong specversion": "unsupported ce_specversion '0.3'",
    "unknown type": "unknown ce_type 'payment.teleported'",
    "wrong field type": "amount:",
    "huge value": "payment_id: String should have at most 128 characters",
    "wrong currency": "currency: does not match the account's currency",
    "future date": "posted_at: Value error, timestamp is outside 1970..2199",
    "ancient date": "posted_at: Value error, timestamp is outside 1970..2199",
}


def headers(
    event_id: str, event_type: str | None = "payment.posted", **changes: str | None
) -> list[tuple[str, bytes]]:
    values: dict[str, str | None] = {
        "ce_specversion": "1.0",
        "ce_id": event_id,
        "ce_source": "/core-banking/hostile",
        "ce_type": event_type,
        "ce_time": "2026-12-03T04:00:00+00:00",
        "content-type": "application/json",
    } | changes
    return [(k, v.encode()) for k, v in values.items() if v is not None]


def bad_records(run: str, account: str) -> dict[str, Callable[[int], Record]]:
    """Each kind of garbage, made from its index; keys carry the run so the dead letters of this
    test can be told from others'."""

    def body(**fields: object) -> bytes:
        good = {
            "account_id": account,
            "payment_id": f"bad-{run}-pay",
            "amount": "1.00",
            "currency": "CNY",
            "posted_at": "2026-12-03T04:00:00+00:00",
        }
        return json.dumps(good | fields).encode()

    def key(i: int) -> bytes:
        return f"bad-{run}-{i}".encode()

    return {
        "not json": lambda i: (key(i), b"{not json" + bytes([i % 256]), headers(f"{run}-{i}")),
        "no ce_type": lambda i: (key(i), body(), headers(f"{run}-{i}", None)),
        "no ce_id": lambda i: (key(i), body(), headers("", ce_id=None)),
        "wrong specversion": lambda i: (
            key(i),
            body(),
            headers(f"{run}-{i}", ce_specversion="0.3"),
        ),
        "unknown type": lambda i: (key(i), body(), headers(f"{run}-{i}", "payment.teleported")),
        "wrong field type": lambda i: (key(i), body(amount=[1, 2]), headers(f"{run}-{i}")),
        "huge value": lambda i: (key(i), body(payment_id="x" * 20_000), headers(f"{run}-{i}")),
        "wrong currency": lambda i: (key(i), body(currency="USD"), headers(f"{run}-{i}")),
        "future date": lambda i: (
            key(i),
            body(posted_at="2391-01-01T00:00:00+00:00"),
            headers(f"{run}-{i}"),
        ),
        "ancient date": lambda i: (
            key(i),
            body(posted_at="1901-01-01T00:00:00+00:00"),
            headers(f"{run}-{i}"),
        ),
    }


@pytest.mark.timeout(180)
async def test_a_thousand_bad_records_go_to_the_dead_letter_topic_and_the_good_flow(
    ledger: Ledger,
) -> None:
    run = uuid.uuid4().hex[:8]
    accounts = [(f"HC-{run}-{n}", f"HA-{run}-{n}") for n in range(10)]
    for customer, account in accounts:
        await ledger.send(*open_loan(ledger, customer, account))
    for _, account in accounts:
        await ledger.opened(account)

    kinds = bad_records(run, accounts[0][1])
    records: list[Record] = []
    expected_paid: Counter[str] = Counter()
    n = 0
    for round_ in range(BAD_PER_KIND):
        for make in kinds.values():
            records.append(make(n))
            n += 1
        customer, account = accounts[round_ % len(accounts)]
        good = payment(ledger, customer, account, f"HP-{run}-{round_}", amount="1.00")
        records.append(encode(good))
        expected_paid[account] += 1
    await produce(ledger.kafka, topics.CORE_BANKING, records)

    async with asyncio.timeout(90):
        while True:
            paid = {a: Decimal((await ledger.account(a))["paid"]) for _, a in accounts}
            if all(paid[a] == Decimal(expected_paid[a]) for _, a in accounts):
                break
            await asyncio.sleep(0.5)
        while True:
            dead = [
                r
                for r in await read_topic(ledger.kafka, topics.dlq(topics.CORE_BANKING), timeout=5)
                if (r.key or b"").startswith(f"bad-{run}-".encode())
            ]
            if len(dead) >= n:
                break
            await asyncio.sleep(0.5)
    assert len(dead) == n == len(kinds) * BAD_PER_KIND
    reasons = Counter(dict(r.headers).get("dlq_reason", b"").decode() for r in dead)
    assert all(reasons), "every dead letter says why"
    assert "" not in reasons
    by_key = {r.key.decode(): dict(r.headers)["dlq_reason"].decode() for r in dead}
    for index, kind in enumerate(kinds):
        for rounds in range(BAD_PER_KIND):  # every record of the kind, for the same reason
            assert EXPECTED[kind] in by_key[f"bad-{run}-{index + rounds * len(kinds)}"], kind
