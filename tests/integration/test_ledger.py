"""The ledger driven only through Kafka and HTTP, on the controlled clock."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import pytest_asyncio

from services.ledger.bootstrap import build
from services.ledger.settings import LedgerSettings
from shared import topics
from shared.auth import DEV_KEY
from shared.envelope import CloudEvent, decode, new_event
from shared.events import (
    AccountFlagged,
    ClockSet,
    CustomerUpserted,
    LoanOpened,
    Payload,
    PaymentPosted,
    PaymentReversalApplied,
    PaymentReversed,
    PlanAgreed,
    PlanInstallment,
    PromiseMade,
    ScheduledInstallment,
)
from shared.service import ServiceRuntime, create_app
from tests.support.databases import migrated_database
from tests.support.factories import caught_up, latest_clock, produce, read_topic, skip_history
from tests.support.infra import Infra

pytestmark = pytest.mark.asyncio(loop_scope="session")
AUTH = {"Authorization": f"Bearer {DEV_KEY}"}
TZ = "Asia/Shanghai"


def upstream(data: Payload, customer: str, at: datetime) -> CloudEvent:
    return new_event(data, source="/core-banking/test", key=customer, time=at)


@dataclass
class Ledger:
    runtime: ServiceRuntime
    client: httpx.AsyncClient
    kafka: str
    base: date  # day 0 of the scenario, in the customer's timezone

    def at(self, day: int, hour: int = 12) -> datetime:
        return datetime.combine(self.base + timedelta(days=day), time(hour), ZoneInfo(TZ))

    async def set_clock(self, day: int, hour: int = 12) -> None:
        instant = self.at(day, hour)
        await produce(self.kafka, topics.CLOCK, [upstream(ClockSet(now=instant), "clock", instant)])
        async with asyncio.timeout(15):
            while self.runtime.clock.now() < instant:
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # the evaluation job runs on the move

    async def send(self, *events: CloudEvent) -> None:
        await produce(self.kafka, topics.CORE_BANKING, list(events))

    async def opened(self, account_id: str) -> None:
        """Waits until the ledger knows the account."""
        async with asyncio.timeout(15):
            while not (
                await self.client.get(f"/v1/accounts/{account_id}", headers=AUTH)
            ).is_success:
                await asyncio.sleep(0.2)

    async def promised(self, account_id: str, promise_id: str) -> None:
        """Waits until the ledger has recorded the promise."""
        async with asyncio.timeout(15):
            while ((await self.account(account_id)).get("promise") or {}).get(
                "promise_id"
            ) != promise_id:
                await asyncio.sleep(0.2)

    async def account(self, account_id: str) -> dict[str, Any]:
        response = await self.client.get(f"/v1/accounts/{account_id}", headers=AUTH)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


@pytest_asyncio.fixture(loop_scope="session")
async def ledger(kafka: str, infra: Infra) -> AsyncIterator[Ledger]:
    url = await migrated_database(
        infra.admin_url, f"arrears_ledger_t{uuid.uuid4().hex[:6]}", "ledger"
    )
    settings = LedgerSettings(
        KAFKA_BOOTSTRAP_SERVERS=kafka, ARREARS_CLOCK="controlled", database_url=url
    )
    # The clock topic is shared by the session and time never goes back: start after it.
    latest = await latest_clock(kafka)
    start = max(date(2026, 12, 1), (latest.astimezone(ZoneInfo(TZ)).date() if latest else date.min))
    base = start + timedelta(days=2)
    runtime = ServiceRuntime(settings, build)
    await skip_history(kafka, runtime)
    await runtime.start()
    app = create_app(runtime, manage_runtime=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://l") as c:
        scenario = Ledger(runtime, c, kafka, base)
        await scenario.set_clock(0)
        yield scenario
    await runtime.stop()


async def ledger_events(
    kafka: str, account_id: str, expect: int, timeout: float = 20
) -> list[CloudEvent]:
    async with asyncio.timeout(timeout):
        while True:
            records = await read_topic(kafka, topics.LEDGER, timeout=5)
            events = [decode(r.key, r.value, r.headers) for r in records]
            mine = [e for e in events if e.subject == account_id]
            if len(mine) >= expect:
                await asyncio.sleep(0.5)  # let anything extra (a duplicate) show up too
                records = await read_topic(kafka, topics.LEDGER, timeout=5)
                return [
                    e
                    for e in (decode(r.key, r.value, r.headers) for r in records)
                    if e.subject == account_id
                ]
            await asyncio.sleep(0.3)


def open_loan(
    s: Ledger, customer: str, account: str, product: str = "personal_loan"
) -> list[CloudEvent]:
    t = s.at(0)
    return [
        upstream(
            CustomerUpserted(
                customer_id=customer,
                full_name="Test Person",
                national_id="X",
                timezone=TZ,
                locale="zh-CN",
                country="CN",
            ),
            customer,
            t,
        ),
        upstream(
            LoanOpened(
                account_id=account,
                customer_id=customer,
                product=product,
                principal=Decimal("3000.00"),
                currency="CNY",
                opened_on=s.base,
                schedule=[
                    ScheduledInstallment(
                        installment_no=n,
                        due_date=s.base + timedelta(days=d),
                        amount=Decimal("1000.00"),
                    )
                    for n, d in ((1, 5), (2, 35), (3, 65))
                ],
            ),
            customer,
            t,
        ),
    ]


def payment(
    s: Ledger,
    customer: str,
    account: str,
    payment_id: str,
    amount: str = "5.00",
    currency: str = "CNY",
    day: int = 1,
) -> CloudEvent:
    posted = PaymentPosted(
        account_id=account,
        payment_id=payment_id,
        amount=Decimal(amount),
        currency=currency,
        posted_at=s.at(day),
    )
    return upstream(posted, customer, s.at(day))


def kinds(events: list[CloudEvent]) -> list[str]:
    return [e.type for e in events]


async def test_missed_instalment_payment_cure_and_reversal_emit_the_right_events(
    ledger: Ledger,
) -> None:
    customer, account = f"C-{uuid.uuid4().hex[:8]}", f"A-{uuid.uuid4().hex[:8]}"
    await ledger.send(*open_loan(ledger, customer, account))
    await ledger.opened(account)

    # Due on day 5 with 3 days' grace: still current on day 8, delinquent on day 9.
    await ledger.set_clock(8)
    assert (await ledger.account(account))["bucket"] == "current"
    await ledger.set_clock(9)
    state = await ledger.account(account)
    assert (state["days_past_due"], state["bucket"], state["overdue"]) == (4, "1-29", "1000.0000")
    events = await ledger_events(ledger.kafka, account, expect=2)
    assert kinds(events) == ["payment.missed", "delinquency.changed"]
    missed = events[0].data
    assert missed.installment_no == 1  # type: ignore[attr-defined]
    assert missed.amount_due == Decimal("1000")  # type: ignore[attr-defined]
    assert events[0].key == customer

    paid = payment(ledger, customer, account, f"P-{account}", "1000.00", day=9)
    again = upstream(paid.data, customer, ledger.at(9))  # same payment_id, new event id
    await ledger.send(paid, paid, again)
    events = await ledger_events(ledger.kafka, account, expect=5)
    assert kinds(events)[2:] == ["delinquency.changed", "account.cured", "payment.received"]
    state = await ledger.account(account)
    assert (state["days_past_due"], state["bucket"], state["in_arrears"]) == (0, "current", False)
    assert state["installments"][0]["paid"] == "1000.0000"

    await ledger.send(
        upstream(
            PaymentReversed(account_id=account, payment_id=f"P-{account}", reason="NSF"),
            customer,
            ledger.at(10),
        )
    )
    events = await ledger_events(ledger.kafka, account, expect=7)
    assert kinds(events)[5:] == ["delinquency.changed", "payment.reversal_applied"]
    reversal = events[6].data
    assert isinstance(reversal, PaymentReversalApplied)
    # the whole loan is owed again: three instalments of 1000, the first one overdue
    assert (reversal.amount, reversal.balance, reversal.total_overdue) == tuple(
        Decimal(x) for x in (1000, 3000, 1000)
    )
    assert events[5].data.bucket == "1-29"  # type: ignore[attr-defined]

    # Days pass; the missed instalment is announced once, however often the clock moves.
    await ledger.set_clock(40)
    await ledger.set_clock(41)
    events = await ledger_events(ledger.kafka, account, expect=7)
    assert kinds(events).count("payment.missed") == 2  # instalment 1 once, instalment 2 once
    assert sorted(e.data.installment_no for e in events if e.type == "payment.missed") == [1, 2]  # type: ignore[attr-defined]
    assert (await ledger.account(account))["bucket"] == "30-59"

    history = (await ledger.client.get(f"/v1/accounts/{account}/history", headers=AUTH)).json()
    assert [(h["kind"], h.get("to_bucket")) for h in history] == [
        ("bucket_change", "1-29"),  # day 9: the instalment is missed
        ("payment", None),
        ("bucket_change", "current"),  # the payment cures it
        ("reversal", None),
        ("bucket_change", "1-29"),  # the reversal makes it delinquent again
        ("bucket_change", "30-59"),  # day 40
    ]


async def test_bad_input_goes_to_the_dead_letter_topic_and_the_rest_flows(ledger: Ledger) -> None:
    customer, account = f"C-{uuid.uuid4().hex[:8]}", f"A-{uuid.uuid4().hex[:8]}"
    unknown = payment(ledger, customer, f"A-nope-{account}", f"P1-{account}")
    wrong_currency = payment(ledger, customer, account, f"P2-{account}", currency="USD")
    good = payment(ledger, customer, account, f"P3-{account}")
    await ledger.send(*open_loan(ledger, customer, account), unknown, wrong_currency, good)
    events = await ledger_events(ledger.kafka, account, expect=1)
    assert kinds(events) == ["payment.received"]
    dead = await read_topic(ledger.kafka, topics.dlq(topics.CORE_BANKING), timeout=5)
    reasons = {  # (other tests dead-letter records without any ce_id on purpose)
        dict(r.headers).get("ce_id", b"").decode(): dict(r.headers)["dlq_reason"].decode()
        for r in dead
    }
    assert reasons[unknown.id] == "account_id: payment for an unknown account"
    assert reasons[wrong_currency.id] == "currency: does not match the account's currency"


async def test_http_ingest_shares_handlers_and_deduplication_with_kafka(ledger: Ledger) -> None:
    customer, account = f"C-{uuid.uuid4().hex[:8]}", f"A-{uuid.uuid4().hex[:8]}"

    def structured(event: CloudEvent) -> dict[str, Any]:
        return {
            "specversion": "1.0",
            "id": event.id,
            "source": event.source,
            "type": event.type,
            "time": event.time.isoformat(),
            "partitionkey": event.key,
            "data": event.data.model_dump(mode="json", exclude_none=True),
        }

    opening = open_loan(ledger, customer, account)
    response = await ledger.client.post(
        "/v1/events", json=[structured(e) for e in opening], headers=AUTH
    )
    assert response.status_code == 200, response.text
    assert [r["status"] for r in response.json()] == ["applied", "applied"]
    # The same events through Kafka: already applied, no second effect.
    await ledger.send(*opening)
    posted = payment(ledger, customer, account, f"P-{account}", "250.00")
    first = await ledger.client.post("/v1/events", json=[structured(posted)], headers=AUTH)
    second = await ledger.client.post("/v1/events", json=[structured(posted)], headers=AUTH)
    assert first.json()[0]["status"] == "applied"
    assert second.json()[0]["status"] == "duplicate"
    state = await ledger.account(account)
    assert state["installments"][0]["paid"] == "250.0000"
    # Forwarded to core-banking.events for the other services, once, with its own ce_id.
    async with asyncio.timeout(15):
        while True:
            records = await read_topic(ledger.kafka, topics.CORE_BANKING, timeout=5)
            forwarded = [r for r in records if ("ce_id", posted.id.encode()) in r.headers]
            if forwarded:
                break
            await asyncio.sleep(0.3)
    await caught_up(ledger.kafka, ledger.runtime)  # a second forward would be out by now
    records = await read_topic(ledger.kafka, topics.CORE_BANKING, timeout=5)
    assert len([r for r in records if ("ce_id", posted.id.encode()) in r.headers]) == 1

    bad = structured(posted) | {"id": str(uuid.uuid4())}
    bad["data"] = {**bad["data"], "amount": "-3.00"}
    refused = await ledger.client.post("/v1/events", json=[bad], headers=AUTH)
    assert refused.status_code == 422
    assert refused.headers["content-type"] == "application/problem+json"
    assert "amount" in refused.json()["detail"]
    missing = await ledger.client.post("/v1/events", json=[{"specversion": "1.0"}], headers=AUTH)
    assert missing.status_code == 422
    assert any("id" in e["field"] for e in missing.json()["errors"])
    assert (await ledger.client.post("/v1/events", json=[structured(posted)])).status_code == 401
    metrics = (await ledger.client.get("/metrics", headers=AUTH)).text
    assert 'arrears_http_rejected_total{route="/v1/events"}' in metrics
    lookup = await ledger.client.get(f"/v1/customers/{customer}/accounts", headers=AUTH)
    assert [a["account_id"] for a in lookup.json()] == [account]
    assert (await ledger.client.get("/v1/accounts/A-none", headers=AUTH)).status_code == 404

    # The same payment_id under a new event id had no effect: a duplicate, and why.
    again = structured(posted) | {"id": str(uuid.uuid4())}
    repeated = await ledger.client.post("/v1/events", json=[again], headers=AUTH)
    assert repeated.json() == [{"id": again["id"], "status": "duplicate", "reason": "payment_id"}]
    assert second.json()[0]["reason"] == "id"
    # A batch whose second event breaks a business rule: refused whole, naming that event.
    good = structured(payment(ledger, customer, account, f"P2-{account}", "10.00"))
    wrong = structured(payment(ledger, customer, account, f"P3-{account}", "10.00"))
    wrong["data"]["amount"] = "-1"
    batch = await ledger.client.post("/v1/events", json=[good, wrong], headers=AUTH)
    assert batch.status_code == 422
    body = batch.json()
    assert body["detail"] == f"event 1 ({wrong['id']}): amount: must be positive"
    assert body["errors"] == [
        {
            "field": "body.1.data.amount",
            "message": "must be positive",
            "index": 1,
            "id": wrong["id"],
        }
    ]
    state = await ledger.account(account)
    assert state["installments"][0]["paid"] == "250.0000"  # the good one was not applied either


async def test_missed_instalments_are_announced_once_across_a_restart(
    ledger: Ledger, kafka: str
) -> None:
    customer, account = f"C-{uuid.uuid4().hex[:8]}", f"A-{uuid.uuid4().hex[:8]}"
    await ledger.send(*open_loan(ledger, customer, account, product="credit_card"))
    await ledger.opened(account)
    await ledger.set_clock(70)
    await ledger.runtime.stop()
    await ledger.runtime.start()  # a restart: the clock is read back from system.clock
    await ledger.set_clock(71)
    events = await ledger_events(kafka, account, expect=3)
    missed = [e.data.installment_no for e in events if e.type == "payment.missed"]  # type: ignore[attr-defined]
    assert sorted(missed) == [1, 2, 3]


async def notify(s: Ledger, customer: str, data: Payload, day: int) -> None:
    await produce(s.kafka, topics.NOTIFIER, [upstream(data, customer, s.at(day))])


async def pay(s: Ledger, customer: str, account: str, amount: str, day: int, ref: str) -> None:
    """Posts a payment and waits until the ledger has applied it."""
    payment_id = f"{ref}-{account}"
    await s.send(payment(s, customer, account, payment_id, amount, day=day))
    async with asyncio.timeout(20):
        while True:
            events = await ledger_events(s.kafka, account, expect=1)
            if any(getattr(e.data, "payment_id", None) == payment_id for e in events):
                return
            await asyncio.sleep(0.2)


async def test_a_kept_plan_freezes_days_past_due_and_a_broken_one_resumes_from_there(
    ledger: Ledger,
) -> None:
    customer, account = f"C-{uuid.uuid4().hex[:8]}", f"A-{uuid.uuid4().hex[:8]}"
    await ledger.send(*open_loan(ledger, customer, account, product="credit_card"))
    await ledger.set_clock(15)  # instalment 1 (day 5) is 10 days late
    await ledger.opened(account)
    await ledger.set_clock(16)
    assert (await ledger.account(account))["days_past_due"] == 11
    plan = PlanAgreed(
        plan_id=f"PL-{account}",
        account_id=account,
        kind="installments",
        installments=[
            PlanInstallment(due_date=ledger.base + timedelta(days=20), amount=Decimal("500.00")),
            PlanInstallment(due_date=ledger.base + timedelta(days=30), amount=Decimal("500.00")),
        ],
    )
    await notify(ledger, customer, plan, 16)
    events = await ledger_events(ledger.kafka, account, expect=3)
    assert kinds(events)[-1] == "plan.activated"
    await pay(ledger, customer, account, "500.00", 19, "P1")
    await ledger.set_clock(25)
    state = await ledger.account(account)
    assert state["days_past_due"] == 11  # frozen while the plan is kept
    assert state["plan"]["status"] == "active"
    await ledger.set_clock(31)  # the second plan instalment (day 30) passes unpaid
    events = await ledger_events(ledger.kafka, account, expect=5)
    assert "plan.broken" in kinds(events)
    state = await ledger.account(account)
    assert state["plan"]["status"] == "broken"
    # Counting resumes from the frozen 11: the paused days (16..31) are not counted.
    await ledger.set_clock(33)
    assert (await ledger.account(account))["days_past_due"] == 11 + 2


async def test_plan_paid_in_full_completes(ledger: Ledger) -> None:
    customer, account = f"C-{uuid.uuid4().hex[:8]}", f"A-{uuid.uuid4().hex[:8]}"
    await ledger.send(*open_loan(ledger, customer, account, product="credit_card"))
    await ledger.set_clock(34)
    await ledger.opened(account)
    plan = PlanAgreed(
        plan_id=f"PL-{account}",
        account_id=account,
        kind="settlement",
        installments=[
            PlanInstallment(due_date=ledger.base + timedelta(days=40), amount=Decimal("1000.00"))
        ],
    )
    await notify(ledger, customer, plan, 34)
    await pay(ledger, customer, account, "1000.00", 35, "P1")
    await ledger.set_clock(36)
    events = await ledger_events(ledger.kafka, account, expect=5)
    assert "plan.completed" in kinds(events)
    assert (await ledger.account(account))["plan"]["status"] == "completed"


async def test_promises_are_kept_by_paying_in_time_and_broken_otherwise(ledger: Ledger) -> None:
    customer, account = f"C-{uuid.uuid4().hex[:8]}", f"A-{uuid.uuid4().hex[:8]}"
    await ledger.send(*open_loan(ledger, customer, account, product="credit_card"))
    await ledger.set_clock(37)
    await ledger.opened(account)
    kept = PromiseMade(
        account_id=account,
        amount=Decimal("300.00"),
        currency="CNY",
        due_date=ledger.base + timedelta(days=39),
        promise_id=f"PR1-{account}",
    )
    await notify(ledger, customer, kept, 37)
    await ledger.promised(account, f"PR1-{account}")
    await pay(ledger, customer, account, "300.00", 38, "P1")
    events = await ledger_events(ledger.kafka, account, expect=1)
    async with asyncio.timeout(20):
        while "promise.kept" not in kinds(events):
            events = await ledger_events(ledger.kafka, account, expect=len(events) + 1)
    await ledger.set_clock(38, hour=18)  # a second promise, after the first was kept
    broken = PromiseMade(
        account_id=account,
        amount=Decimal("300.00"),
        currency="CNY",
        due_date=ledger.base + timedelta(days=40),
        promise_id=f"PR2-{account}",
    )
    await notify(ledger, customer, broken, 38)
    await ledger.promised(account, f"PR2-{account}")
    await pay(ledger, customer, account, "100.00", 39, "P2")
    await ledger.set_clock(41)
    events = await ledger_events(ledger.kafka, account, expect=len(events) + 1)
    assert [e.data.promise_id for e in events if e.type.startswith("promise.")] == [  # type: ignore[attr-defined]
        f"PR1-{account}",
        f"PR2-{account}",
    ]
    assert [e.type for e in events if e.type.startswith("promise.")] == [
        "promise.kept",
        "promise.broken",
    ]


async def test_flags_are_kept_with_their_history_and_carried_in_events(ledger: Ledger) -> None:
    customer, account = f"C-{uuid.uuid4().hex[:8]}", f"A-{uuid.uuid4().hex[:8]}"
    await ledger.send(*open_loan(ledger, customer, account, product="credit_card"))
    await ledger.send(
        upstream(
            AccountFlagged(customer_id=customer, flag="hardship", active=True),
            customer,
            ledger.at(41),
        ),
        upstream(
            AccountFlagged(account_id=account, flag="legal_hold", active=True),
            customer,
            ledger.at(41),
        ),
        upstream(
            AccountFlagged(account_id=account, flag="legal_hold", active=False),
            customer,
            ledger.at(41),
        ),
        upstream(
            AccountFlagged(account_id=account, flag="bankruptcy", active=True),
            customer,
            ledger.at(41),
        ),
    )

    async def flags() -> Any:
        response = await ledger.client.get(f"/v1/accounts/{account}", headers=AUTH)
        return response.json().get("flags")

    async with asyncio.timeout(15):
        while await flags() != ["bankruptcy", "hardship"]:
            await asyncio.sleep(0.2)
    await ledger.set_clock(42)  # the instalments are missed: the events carry the flags
    events = await ledger_events(ledger.kafka, account, expect=2)
    assert all(e.data.flags == ["bankruptcy", "hardship"] for e in events)  # type: ignore[attr-defined]
    history = (await ledger.client.get(f"/v1/accounts/{account}/history", headers=AUTH)).json()
    assert [h["detail"] for h in history if h["kind"] == "flag"] == [
        "hardship set",
        "legal_hold set",
        "legal_hold cleared",
        "bankruptcy set",
    ]


async def test_payments_arriving_together_are_allocated_in_order_and_once(ledger: Ledger) -> None:
    customer, account = f"C-{uuid.uuid4().hex[:8]}", f"A-{uuid.uuid4().hex[:8]}"
    payments = [payment(ledger, customer, account, f"P{k}-{account}", "400.00") for k in range(3)]
    repeat = upstream(payments[1].data, customer, ledger.at(1))  # a payment_id sent twice
    await ledger.send(*open_loan(ledger, customer, account), *payments, repeat)
    events = await ledger_events(ledger.kafka, account, expect=3)
    assert kinds(events) == ["payment.received"] * 3
    state = await ledger.account(account)
    assert [i["paid"] for i in state["installments"]] == ["1000.0000", "200.0000", "0.0000"]
    history = (await ledger.client.get(f"/v1/accounts/{account}/history", headers=AUTH)).json()
    assert [h["ref"] for h in history if h["kind"] == "payment"] == [
        f"P{k}-{account}" for k in range(3)
    ]
