"""The ledger's SQL and its domain rules must agree; checked on the real database."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.ledger.bootstrap import products
from services.ledger.domain.delinquency import (
    bucket_case_sql,
    bucket_of,
    next_bucket_start,
    next_bucket_start_sql,
)
from services.ledger.handlers import Ledger
from services.ledger.repository.evaluation import STATE_SQL
from shared.clock import ControlledClock
from shared.consumer import Touched
from shared.db import make_engine, uow_factory
from shared.events import (
    CustomerUpserted,
    LoanOpened,
    PaymentPosted,
    PaymentReversed,
    ScheduledInstallment,
)
from tests.support.databases import migrated_database
from tests.support.infra import Infra

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_sql_bucket_case_matches_the_domain_for_every_day_up_to_two_years(
    backbone_engine: AsyncEngine,
) -> None:
    async with backbone_engine.connect() as conn:
        rows = await conn.execute(
            text(f"SELECT c.dpd, {bucket_case_sql('c.dpd')} FROM generate_series(0, 730) c(dpd)")
        )
        from_sql: dict[int, str] = {int(dpd): str(bucket) for dpd, bucket in rows.all()}
    assert from_sql == {dpd: bucket_of(dpd) for dpd in range(731)}


async def test_sql_next_bucket_start_matches_the_domain(backbone_engine: AsyncEngine) -> None:
    async with backbone_engine.connect() as conn:
        rows = await conn.execute(
            text(
                f"SELECT c.dpd, {next_bucket_start_sql('c.dpd')} "
                "FROM generate_series(0, 400) c(dpd)"
            )
        )
        from_sql = {int(dpd): start for dpd, start in rows.all()}
    assert from_sql == {dpd: next_bucket_start(dpd) for dpd in range(401)}


ZONES = ("Asia/Shanghai", "America/New_York", "Pacific/Kiritimati", "Pacific/Pago_Pago", "UTC")
PRODUCTS = ("credit_card", "personal_loan", "auto_loan", "mortgage")
DAY0 = date(2026, 9, 1)


def book(rng: random.Random, n: int) -> tuple[list[CustomerUpserted], list[LoanOpened]]:
    customers, loans = [], []
    for i in range(n):
        customers.append(
            CustomerUpserted(
                customer_id=f"RC{i}",
                full_name="Test Person",
                national_id="0",
                timezone=rng.choice(ZONES),
                locale="zh-CN",
                country="CN",
            )
        )
        first = DAY0 + timedelta(days=rng.randrange(0, 40))
        loans.append(
            LoanOpened(
                account_id=f"RA{i}",
                customer_id=f"RC{i}",
                product=rng.choice(PRODUCTS),
                principal=Decimal("900.00"),
                currency="CNY",
                opened_on=DAY0,
                schedule=[
                    ScheduledInstallment(
                        installment_no=k + 1,
                        due_date=first + timedelta(days=30 * k),
                        amount=Decimal("300.00"),
                    )
                    for k in range(3)
                ],
            )
        )
    return customers, loans


async def instalments_announced(conn: AsyncConnection, event_type: str) -> list[Any]:
    """(account, instalment) of each ``event_type`` event in the outbox (no relay runs here)."""
    rows = await conn.execute(
        text("""
            SELECT convert_from(value, 'UTF8')::jsonb ->> 'account_id',
                   convert_from(value, 'UTF8')::jsonb ->> 'installment_no'
            FROM outbox WHERE headers LIKE '%"' || :type || '"%'
        """),
        {"type": event_type},
    )
    return list(rows.all())


# One chunk, and many: a chunk's events are built while the next chunk is evaluated.
@pytest.mark.parametrize("chunk", [5000, 7])
async def test_evaluating_only_accounts_due_for_review_matches_evaluating_every_account(
    infra: Infra, chunk: int
) -> None:
    """The daily pass reads only accounts whose review date has come. Over half a year of
    clock moves (with payments, reversals and time zone changes between them, and some loans
    opened days before their customer is known), what it stores must equal a fresh computation
    over every account, and every instalment past due and grace must have been marked missed."""
    url = await migrated_database(infra.admin_url, f"arrears_test_review_{chunk}", "ledger")
    engine = make_engine(url)
    rng = random.Random(11)
    clock = ControlledClock(datetime.combine(DAY0, time(6), UTC))
    ledger = Ledger(clock, products(), review_chunk=chunk)
    units = uow_factory(engine)
    customers, loans = book(rng, 300)
    late = customers[::10]  # their loans are evaluated in UTC until they arrive
    async with units() as uow:
        await ledger.upsert_customers(uow, [c for c in customers if c not in late])
        await ledger.settle(uow, await ledger.open_loans(uow, loans))
        await uow.commit()
    payments = 0
    try:
        for step in range(120):
            await clock.set(clock.now() + timedelta(hours=rng.choice([5, 24, 24, 24, 49])))
            async with units() as uow:
                touched = Touched()
                if step == 8:
                    await ledger.upsert_customers(uow, late)
                if rng.random() < 0.5:  # some customers pay, some payments bounce
                    paying = rng.sample(loans, 10)
                    posted = await ledger.post_payments(
                        uow,
                        [
                            PaymentPosted(
                                account_id=loan.account_id,
                                payment_id=f"RP{(payments := payments + 1)}",
                                amount=Decimal(rng.choice(["50.00", "300.00", "450.00"])),
                                currency="CNY",
                                posted_at=clock.now(),
                            )
                            for loan in paying
                        ],
                    )
                    touched.add(posted)
                    if payments > 20 and rng.random() < 0.3:
                        victim = f"RP{rng.randrange(1, payments)}"
                        owner = await uow.session.scalar(
                            text("SELECT account_id FROM payment WHERE payment_id = :p"),
                            {"p": victim},
                        )
                        touched.add(
                            await ledger.reverse_payment(
                                uow,
                                PaymentReversed(account_id=owner, payment_id=victim, reason="NSF"),
                            )
                        )
                if rng.random() < 0.1:
                    moved = rng.choice(customers)
                    moved = moved.model_copy(update={"timezone": rng.choice(ZONES)})
                    await ledger.upsert_customers(uow, [moved])
                await ledger.settle(uow, touched)  # as the consumer runner does before commit
                await uow.commit()
            async with units() as uow:
                await ledger.evaluate(uow)
                await uow.commit()
            async with engine.connect() as conn:
                stored = {
                    r[0]: tuple(r[1:])
                    for r in await conn.execute(
                        text("SELECT account_id, bucket, overdue, in_arrears FROM account")
                    )
                }
                fresh = {
                    r["account_id"]: (r["bucket"], r["overdue"], r["in_arrears"])
                    for r in (await conn.execute(STATE_SQL[0], {"now": clock.now()})).mappings()
                }
                unmarked = await conn.scalar(
                    text("""
                        SELECT count(*) FROM installment i
                        JOIN account a USING (account_id) JOIN customer c USING (customer_id)
                        JOIN product p USING (product)
                        WHERE i.missed_at IS NULL AND i.paid < i.amount
                          AND (CAST(:now AS timestamptz) AT TIME ZONE c.timezone)::date
                              - i.due_date > p.grace_days
                    """),
                    {"now": clock.now()},
                )
                # every unpaid instalment within its product's reminder days was announced
                # due soon (once: installment.reminded_at, set with the announcement)
                unreminded = await conn.scalar(
                    text("""
                        SELECT count(*) FROM installment i
                        JOIN account a USING (account_id) JOIN customer c USING (customer_id)
                        JOIN product p USING (product)
                        WHERE i.reminded_at IS NULL AND i.paid < i.amount
                          AND i.due_date - (CAST(:now AS timestamptz) AT TIME ZONE c.timezone)::date
                              BETWEEN 0 AND p.due_soon_days
                    """),
                    {"now": clock.now()},
                )
            assert stored == fresh, clock.now()
            assert unmarked == 0, clock.now()
            assert unreminded == 0, clock.now()
        async with engine.connect() as conn:
            buckets = set(await conn.scalars(text("SELECT DISTINCT to_bucket FROM bucket_change")))
            # no relay runs here: every event the walk published is still in the outbox
            announced = await instalments_announced(conn, "installment.due_soon")
            reminded = await conn.scalar(
                text("SELECT count(*) FROM installment WHERE reminded_at IS NOT NULL")
            )
            missed = await instalments_announced(conn, "payment.missed")
            marked = await conn.scalar(
                text("SELECT count(*) FROM installment WHERE missed_at IS NOT NULL")
            )
        assert {"1-29", "30-59", "60-89", "90-119"} <= buckets  # the walk went somewhere
        assert len(announced) == len(set(announced)) == reminded > 0  # each once
        assert len(missed) == len(set(missed)) == marked > 0
    finally:
        await engine.dispose()


async def test_roll_rate_transitions_in_sql_match_the_domain(infra: Infra) -> None:
    """Random books and bucket histories, random period boundaries: the set-based SQL counts
    the same (period, from, to) transitions as the domain's specification."""
    from services.ledger.domain import rollrate
    from services.ledger.repository import rollrate as rollrate_rows

    url = await migrated_database(infra.admin_url, "arrears_test_rollrate", "ledger")
    engine = make_engine(url)
    units = uow_factory(engine)
    rng = random.Random(5)
    start = datetime(2026, 9, 1, tzinfo=UTC)
    names = rollrate.NAMES
    try:
        for trial in range(4):
            book_rows, changes = [], []
            for n in range(150):
                account = f"RR{trial}-{n}"
                opened = DAY0 + timedelta(days=rng.randint(-40, 60))
                at, bucket = start, "current"
                for _ in range(rng.choice([0, 0, 1, 2, 4])):
                    at += timedelta(days=rng.randint(1, 30), hours=rng.randint(0, 23))
                    to = rng.choice([b for b in names[:5] if b != bucket])
                    changes.append(rollrate.Change(account, at, bucket, to))
                    bucket = to
                book_rows.append(rollrate.Book(account, opened, bucket))
            as_of = start + timedelta(days=rng.randint(40, 120), hours=rng.randint(0, 23))
            bounds = rollrate.boundaries(as_of, rng.choice([5, 10, 30]), rng.randint(1, 6))
            changes.sort(key=lambda c: c.at)
            async with units() as uow:
                await uow.session.execute(text("DELETE FROM bucket_change"))
                await uow.session.execute(text("DELETE FROM account"))
                await uow.session.execute(
                    text("""
                        INSERT INTO account (account_id, customer_id, product, currency,
                                             principal, opened_on, bucket)
                        VALUES (:a, 'C', 'personal_loan', 'CNY', 1000, :opened, :bucket)
                    """),
                    [
                        {"a": b.account_id, "opened": b.opened_on, "bucket": b.bucket}
                        for b in book_rows
                    ],
                )
                if changes:
                    await uow.session.execute(
                        text("""
                            INSERT INTO bucket_change (account_id, from_bucket, to_bucket,
                                                       days_past_due, changed_at)
                            VALUES (:a, :f, :t, 0, :at)
                        """),
                        [
                            {"a": c.account_id, "f": c.from_bucket, "t": c.to_bucket, "at": c.at}
                            for c in changes
                        ],
                    )
                from_sql = await rollrate_rows.transitions(uow.session, bounds)
                await uow.commit()
            assert from_sql == rollrate.transitions(book_rows, changes, bounds), trial
            assert sum(from_sql.values()) > 0
    finally:
        await engine.dispose()
