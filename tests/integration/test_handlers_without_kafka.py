"""Handlers on PostgreSQL through the seam (``tests/support/seam.py``): each service built by
its own composition root, events applied through ``apply_events`` with the settle step, clock
moves running the clock jobs; what each transaction published is read in memory. No Kafka, no
sleeps: delivery is not the point here (``test_delivery_guarantees.py`` is about that)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from services.ledger.bootstrap import build as build_ledger
from services.ledger.settings import LedgerSettings
from services.notifier.bootstrap import build as build_notifier
from services.notifier.settings import NotifierSettings, dev_desk, dev_partner
from services.scheduler.bootstrap import build as build_scheduler
from services.scheduler.settings import SchedulerSettings
from shared.events import (
    ContactRequested,
    CustomerUpserted,
    LoanOpened,
    PaymentPosted,
    PaymentReceived,
    ScheduledInstallment,
)
from tests.support.databases import migrated_database
from tests.support.infra import Infra
from tests.support.seam import Seam, of_type

pytestmark = pytest.mark.asyncio(loop_scope="session")
SHANGHAI = ZoneInfo("Asia/Shanghai")
START = datetime(2026, 12, 1, 1, 0, tzinfo=UTC)  # 09:00 in Shanghai
DUE = date(2026, 12, 3)  # a Thursday: the days after it hold no public holiday in China


def local(day: date, hour: int) -> datetime:
    return datetime.combine(day, time(hour), SHANGHAI)


@pytest_asyncio.fixture(loop_scope="session")
async def seams(infra: Infra) -> AsyncIterator[tuple[Seam, Seam]]:
    suffix = uuid.uuid4().hex[:6]
    ledger_url = await migrated_database(infra.admin_url, f"arrears_ledger_s{suffix}", "ledger")
    scheduler_url = await migrated_database(
        infra.admin_url, f"arrears_scheduler_s{suffix}", "scheduler"
    )
    ledger = Seam(
        LedgerSettings(ARREARS_CLOCK="controlled", database_url=ledger_url), build_ledger, START
    )
    scheduler = Seam(
        SchedulerSettings(ARREARS_CLOCK="controlled", database_url=scheduler_url),
        build_scheduler,
        START,
    )
    await ledger.start()
    await scheduler.start()
    yield ledger, scheduler
    await ledger.close()
    await scheduler.close()


def customer(key: str) -> CustomerUpserted:
    return CustomerUpserted(
        customer_id=key,
        full_name="Test Person",
        national_id="X",
        phone="+8613800000000",
        email="someone@example.com",
        postal_address="1 Road, Shanghai",
        timezone="Asia/Shanghai",
        locale="zh-CN",
        country="CN",
        credit_score=720,
    )


def loan(key: str, account: str) -> LoanOpened:
    return LoanOpened(
        account_id=account,
        customer_id=key,
        product="credit_card",  # no grace days
        principal=Decimal("1000.00"),
        currency="CNY",
        opened_on=date(2026, 11, 1),
        schedule=[
            ScheduledInstallment(installment_no=1, due_date=DUE, amount=Decimal("400.00")),
            ScheduledInstallment(
                installment_no=2, due_date=DUE + timedelta(days=30), amount=Decimal("600.00")
            ),
        ],
    )


async def test_a_miss_announced_at_23_local_reaches_the_scheduler_and_is_contacted_at_08(
    seams: tuple[Seam, Seam],
) -> None:
    ledger, scheduler = seams
    key, account = f"SC-{uuid.uuid4().hex[:6]}", f"SA-{uuid.uuid4().hex[:6]}"
    upstream = [ledger.event(customer(key), key), ledger.event(loan(key, account), key)]
    await ledger.apply(*upstream)
    await scheduler.apply(upstream[0])

    # The day after the due date, at 23:00 in Shanghai: the ledger's daily pass finds it missed.
    night = local(DUE + timedelta(days=1), 23)
    (missed,) = of_type(await ledger.move(night), "payment.missed")
    assert missed.data.account_id == account  # type: ignore[attr-defined]
    await scheduler.move(night)
    assert not of_type(await scheduler.apply(missed), "contact.requested")  # nothing at night

    (requested,) = of_type(
        await scheduler.move(local(DUE + timedelta(days=2), 8)), "contact.requested"
    )
    assert requested.data.account_id == account  # type: ignore[attr-defined]
    assert requested.data.not_before == local(DUE + timedelta(days=2), 8)  # type: ignore[attr-defined]
    assert requested.data.country == "CN"  # type: ignore[attr-defined]


async def test_a_payment_is_announced_with_the_balance_it_leaves_and_a_redelivery_changes_nothing(
    seams: tuple[Seam, Seam],
) -> None:
    ledger, _ = seams
    key, account = f"SC-{uuid.uuid4().hex[:6]}", f"SA-{uuid.uuid4().hex[:6]}"
    await ledger.apply(ledger.event(customer(key), key), ledger.event(loan(key, account), key))
    payment = ledger.event(
        PaymentPosted(
            account_id=account,
            payment_id=f"P-{uuid.uuid4().hex[:6]}",
            amount=Decimal("150.00"),
            currency="CNY",
            posted_at=ledger.clock.now(),
        ),
        key,
    )
    (received,) = of_type(await ledger.apply(payment), "payment.received")
    assert isinstance(received.data, PaymentReceived)
    assert (received.data.balance, received.data.next_due_amount) == (
        Decimal("850.00"),
        Decimal("250.00"),
    )
    assert await ledger.apply(payment) == []  # the inbox has it: no second effect, no event


async def test_a_call_requested_before_the_notifier_knows_its_customer_goes_to_its_countrys_desk(
    infra: Infra,
) -> None:
    # A fault suite with two notifiers sent three day-0 calls to the external partner: the
    # customers' upserts (core-banking.events) were read after the requests (scheduler.events).
    url = await migrated_database(
        infra.admin_url, f"arrears_notifier_s{uuid.uuid4().hex[:6]}", "notifier"
    )
    settings = NotifierSettings(
        ARREARS_CLOCK="controlled",
        database_url=url,
        partners=[dev_desk(countries=["CN"]), dev_partner()],
    )
    notifier = Seam(settings, build_notifier, START)
    await notifier.start()
    key, contact = f"NC-{uuid.uuid4().hex[:6]}", str(uuid.uuid4())
    call = ContactRequested(
        contact_id=contact,
        account_id=f"NA-{uuid.uuid4().hex[:6]}",
        customer_id=key,
        channel="voice",
        template="call_arrears",
        not_before=START,
        not_after=START + timedelta(hours=10),
        strategy="s",
        variant="v",
        country="CN",
    )
    try:
        await notifier.apply(notifier.event(call, key))
    finally:
        await notifier.close()
    engine = create_async_engine(url)
    async with engine.connect() as conn:
        partner = (
            await conn.execute(
                text("SELECT partner FROM delivery WHERE contact_id = :c"), {"c": contact}
            )
        ).scalar_one()
    await engine.dispose()
    assert partner == "desk"


async def test_a_reminder_due_before_the_scheduler_knows_its_customer_waits_and_goes_out_with_them(
    seams: tuple[Seam, Seam],
) -> None:
    # A fault run with two schedulers read five first-day reminders (ledger.events) before
    # their customers (core-banking.events) and suppressed them: no usable channel.
    ledger, scheduler = seams
    key, account = f"SW-{uuid.uuid4().hex[:6]}", f"SW-{uuid.uuid4().hex[:6]}"
    upstream = [ledger.event(customer(key), key), ledger.event(loan(key, account), key)]
    (soon,) = of_type(await ledger.apply(*upstream), "installment.due_soon")
    before = await scheduler.apply(soon)
    assert not of_type(before, "contact.requested")
    assert not of_type(before, "contact.suppressed")
    (requested,) = of_type(await scheduler.apply(upstream[0]), "contact.requested")
    assert requested.data.account_id == account  # type: ignore[attr-defined]
    assert requested.data.country == "CN"  # type: ignore[attr-defined]
