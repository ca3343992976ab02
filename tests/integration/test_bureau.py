"""The bureau driven through Kafka with the controlled clock (daily cycles here): events in as
the ledger, notifier and core banking would send them; reports, files and events out."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import text

from services.bureau.bootstrap import build
from services.bureau.domain import metro2
from services.bureau.settings import BureauSettings
from shared import topics
from shared.auth import DEV_KEY
from shared.envelope import CloudEvent, decode, new_event
from shared.events import (
    AccountCured,
    AccountFlagged,
    ClockSet,
    ContactAttempted,
    CustomerUpserted,
    DisputeOpened,
    LoanOpened,
    NoticeDelivered,
    NoticeReturned,
    Payload,
    PaymentMissed,
    ScheduledInstallment,
)
from shared.service import ServiceRuntime, create_app
from tests.support.databases import migrated_database
from tests.support.factories import caught_up, produce, read_topic, skip_history
from tests.support.infra import Infra

pytestmark = pytest.mark.asyncio(loop_scope="session")
AUTH = {"Authorization": f"Bearer {DEV_KEY}"}
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Bureau:
    runtime: ServiceRuntime
    client: httpx.AsyncClient
    kafka: str
    folder: Path

    def day(self) -> date:
        return (self.runtime.clock.now() + timedelta(days=1)).date()

    async def set_clock(self, instant: datetime) -> None:
        await produce(self.kafka, topics.CLOCK, [event(ClockSet(now=instant), "clock", instant)])
        async with asyncio.timeout(15):
            while self.runtime.clock.now() < instant:
                await asyncio.sleep(0.05)

    async def cycle(self, day: date) -> str:
        """Moves the clock to noon (UTC) of ``day`` and waits for that day's cycle to finish."""
        await caught_up(self.kafka, self.runtime)  # the events sent before are applied
        await self.set_clock(datetime.combine(day, time(12), UTC))
        cycle = day.isoformat()
        async with asyncio.timeout(30):
            while True:
                response = await self.client.get(f"/v1/cycles/{cycle}", headers=AUTH)
                if response.status_code == 200 and response.json()["status"] == "submitted":
                    return cycle
                await asyncio.sleep(0.2)

    async def applied(self, account: str, column: str, value: Any) -> None:
        """Waits until the bureau's state shows what the events sent said (a test-side probe
        of its database, read-only)."""
        async with asyncio.timeout(30):
            while True:
                async with self.runtime.uow() as uow:
                    found = await uow.session.scalar(
                        text(f"SELECT {column} FROM account WHERE account_id = :a"),
                        {"a": account},
                    )
                if found == value:
                    return
                await asyncio.sleep(0.2)

    async def reports(self, account: str) -> list[dict[str, Any]]:
        response = await self.client.get(f"/v1/accounts/{account}/reports", headers=AUTH)
        assert response.status_code == 200, response.text
        found: list[dict[str, Any]] = response.json()
        return found

    async def send(self, topic: str, customer: str, *data: Payload) -> None:
        at = self.runtime.clock.now()
        await produce(self.kafka, topic, [event(d, customer, at) for d in data])


def event(data: Payload, customer: str, at: datetime) -> CloudEvent:
    return new_event(data, source="/test", key=customer, time=at)


@pytest_asyncio.fixture(loop_scope="session")
async def bureau(kafka: str, infra: Infra, tmp_path: Path) -> AsyncIterator[Bureau]:
    url = await migrated_database(
        infra.admin_url, f"arrears_bureau_t{uuid.uuid4().hex[:6]}", "bureau"
    )
    settings = BureauSettings(
        KAFKA_BOOTSTRAP_SERVERS=kafka,
        ARREARS_CLOCK="controlled",
        database_url=url,
        cycle="daily",
        archive_dir=tmp_path / "archive",
        drop_dir=tmp_path / "drop",
    )
    runtime = ServiceRuntime(settings, build)
    await skip_history(kafka, runtime)
    await runtime.start()
    app = create_app(runtime, manage_runtime=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://b") as c:
        yield Bureau(runtime, c, kafka, tmp_path)
    await runtime.stop()


async def delinquent(b: Bureau, country: str, dpd: int = 35) -> tuple[str, str]:
    customer, account = f"BC-{uuid.uuid4().hex[:8]}", f"BA-{uuid.uuid4().hex[:8]}"
    today = b.runtime.clock.now().date()
    identity = (
        {"national_id": "123456789", "postal_address": "12 Elm St, Springfield, IL 62701"}
        if country == "US"
        else {"national_id": "110101198005170022", "postal_address": "北京市东城区1号"}
    )
    await b.send(
        topics.CORE_BANKING,
        customer,
        CustomerUpserted(
            customer_id=customer,
            full_name="Jane Q Public",
            birth_date=date(1980, 5, 17),
            timezone="UTC",
            locale="en-US",
            country=country,
            **identity,
        ),
        LoanOpened(
            account_id=account,
            customer_id=customer,
            product="personal_loan",
            principal=Decimal("3000.00"),
            currency="USD",
            opened_on=today - timedelta(days=120),
            schedule=[
                ScheduledInstallment(
                    installment_no=1, due_date=today - timedelta(days=dpd), amount=Decimal("500.00")
                )
            ],
        ),
    )
    await caught_up(b.kafka, b.runtime)
    await b.send(
        topics.LEDGER,
        customer,
        PaymentMissed(
            account_id=account,
            customer_id=customer,
            installment_no=1,
            due_date=today - timedelta(days=dpd),
            amount_due=Decimal("500.00"),
            total_overdue=Decimal("500.00"),
            currency="USD",
            days_past_due=dpd,
            bucket="30-59",
        ),
    )
    await b.applied(account, "days_past_due", dpd)
    return customer, account


def kinds(reports: list[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    return [(r["kind"], r["reasons"]) for r in reports]


async def test_cn_report_waits_fourteen_days_after_the_delivered_pre_notice(bureau: Bureau) -> None:
    # The day's cycle runs on its first clock move: prepare on one day, report on the next.
    prep = bureau.day()
    await bureau.set_clock(datetime.combine(prep, time(9), UTC))
    day = prep + timedelta(days=1)
    customer, account = await delinquent(bureau, "CN", dpd=31)
    await bureau.cycle(day)
    assert kinds(await bureau.reports(account)) == [("blocked", ["CN.bureau.pre-notice"])]

    delivered = NoticeDelivered(
        account_id=account,
        notice="bureau_pre_notice",
        customer_id=customer,
        delivered_at=datetime.combine(day, time(11), UTC),
    )
    await bureau.send(topics.NOTIFIER, customer, delivered)
    await bureau.applied(account, "pre_notice_delivered_at", delivered.delivered_at)
    await bureau.cycle(day + timedelta(days=1))
    await bureau.cycle(day + timedelta(days=14))
    reports = await bureau.reports(account)
    assert kinds(reports) == [
        ("blocked", ["CN.bureau.pre-notice"]),
        ("blocked", ["CN.bureau.pre-notice"]),
        ("submitted", []),
    ]
    line = reports[-1]["line"]
    assert '"five_level_class": 2' in line
    assert '"overdue_days": 31' in line
    files = list((bureau.folder / "drop").glob("CN-*.jsonl"))
    assert any(account in f.read_text() for f in files)


async def test_us_returned_notice_and_bankruptcy_block_the_report(bureau: Bureau) -> None:
    # The day's cycle runs on its first clock move: prepare on one day, report on the next.
    prep = bureau.day()
    await bureau.set_clock(datetime.combine(prep, time(9), UTC))
    day = prep + timedelta(days=1)
    returned_customer, returned = await delinquent(bureau, "US")
    bankrupt_customer, bankrupt = await delinquent(bureau, "US")
    sent = datetime.combine(day - timedelta(days=20), time(10), UTC)
    await bureau.send(
        topics.NOTIFIER,
        returned_customer,
        ContactAttempted(
            contact_id="c1",
            account_id=returned,
            channel="letter",
            outcome="delivered",
            attempted_at=sent,
        ),
        NoticeReturned(
            account_id=returned, notice="validation_notice", returned_at=sent + timedelta(days=4)
        ),
    )
    await bureau.send(
        topics.NOTIFIER,
        bankrupt_customer,
        ContactAttempted(
            contact_id="c2",
            account_id=bankrupt,
            channel="voice",
            outcome="right_party",
            attempted_at=sent,
        ),
    )
    await bureau.send(
        topics.CORE_BANKING,
        bankrupt_customer,
        AccountFlagged(customer_id=bankrupt_customer, flag="bankruptcy", active=True),
    )
    await bureau.applied(returned, "notice_returned_at", sent + timedelta(days=4))
    await bureau.applied(bankrupt, "conversation_at", sent)
    await caught_up(bureau.kafka, bureau.runtime)  # and the flag
    await bureau.cycle(day)
    assert kinds(await bureau.reports(returned)) == [("blocked", ["US.bureau.notice-returned"])]
    assert kinds(await bureau.reports(bankrupt)) == [("blocked", ["US.bureau.bankruptcy"])]
    blocked = [
        e
        for e in (
            decode(r.key, r.value, r.headers)
            for r in await read_topic(bureau.kafka, topics.BUREAU, timeout=5)
        )
        if e.subject in (returned, bankrupt)
    ]
    assert sorted(e.data.reasons[0] for e in blocked) == [  # type: ignore[attr-defined]
        "US.bureau.bankruptcy",
        "US.bureau.notice-returned",
    ]


async def test_a_dispute_is_reported_xb_and_a_cure_is_corrected(bureau: Bureau) -> None:
    # The day's cycle runs on its first clock move: prepare on one day, report on the next.
    prep = bureau.day()
    await bureau.set_clock(datetime.combine(prep, time(9), UTC))
    day = prep + timedelta(days=1)
    customer, account = await delinquent(bureau, "US", dpd=40)
    talked = datetime.combine(day - timedelta(days=5), time(10), UTC)
    await bureau.send(
        topics.NOTIFIER,
        customer,
        ContactAttempted(
            contact_id="c3",
            account_id=account,
            channel="voice",
            outcome="right_party",
            attempted_at=talked,
        ),
        DisputeOpened(account_id=account, dispute_id="d1"),
    )
    await bureau.applied(account, "dispute", "open")
    cycle = await bureau.cycle(day)
    (reported,) = await bureau.reports(account)
    assert (reported["kind"], reported["status"], reported["compliance_code"]) == (
        "submitted",
        "71",
        "XB",
    )
    fields = metro2.decode(reported["line"])
    assert (fields["AccountStatus"], fields["ComplianceConditionCode"]) == ("71", "XB")
    assert fields["AmountPastDue"] == "000000500"

    response = await bureau.client.get(f"/v1/cycles/{cycle}/file", headers=AUTH)
    assert response.status_code == 200
    path = bureau.folder / "cycle.txt"
    path.write_bytes(response.content)
    check = await asyncio.to_thread(
        subprocess.run,
        ["go", "run", ".", str(path)],
        cwd=ROOT / "tools" / "metro2check",
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stderr

    await bureau.send(
        topics.LEDGER,
        customer,
        AccountCured(account_id=account, customer_id=customer, balance=Decimal(0)),
    )
    await bureau.cycle(day + timedelta(days=1))
    reports = await bureau.reports(account)
    assert [(r["kind"], r["status"]) for r in reports] == [("submitted", "71"), ("corrected", "13")]
    corrected = [
        e
        for e in (
            decode(r.key, r.value, r.headers)
            for r in await read_topic(bureau.kafka, topics.BUREAU, timeout=5)
        )
        if e.subject == account and e.type == "bureau.report_corrected"
    ]
    assert len(corrected) == 1
    await bureau.cycle(day + timedelta(days=2))
    assert len(await bureau.reports(account)) == 2  # corrected once, then left alone
    summary = (await bureau.client.get(f"/v1/cycles/{cycle}", headers=AUTH)).json()
    assert summary["files"][0]["records"] >= 1
