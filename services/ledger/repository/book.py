"""The ledger's book: customers, accounts and their schedules, payments and what they paid,
reversals, flags, plans and promises. Statements only, typed rows out; nothing here commits
(the caller's unit of work does)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from services.ledger.domain.allocation import Allocation, Installment
from shared.events import CustomerUpserted, LoanOpened, PaymentPosted


@dataclass(frozen=True, slots=True)
class AccountRow:
    account_id: str
    customer_id: str
    currency: str


@dataclass(frozen=True, slots=True)
class PaymentRow:
    account_id: str
    reversed_at: datetime | None


@dataclass(frozen=True, slots=True)
class Paid:
    """What one instalment of an account has been paid, to write back."""

    account_id: str
    installment_no: int
    paid: Decimal


async def upsert_customers(
    session: AsyncSession, customers: Sequence[CustomerUpserted], now: datetime
) -> None:
    """One statement for a run; an account whose customer's calendar changes (or who is known
    only now) is reviewed at once."""
    await session.execute(
        text("""
            WITH incoming AS (
              SELECT * FROM unnest(CAST(:ids AS text[]), CAST(:tzs AS text[]),
                                   CAST(:countries AS text[]), CAST(:locales AS text[]))
                AS t (customer_id, timezone, country, locale)
            ),
            moved AS (
              UPDATE account a SET review_at = NULL
              FROM incoming i LEFT JOIN customer c ON c.customer_id = i.customer_id
              WHERE a.customer_id = i.customer_id AND c.timezone IS DISTINCT FROM i.timezone
            )
            INSERT INTO customer (customer_id, timezone, country, locale, updated_at)
            SELECT *, CAST(:now AS timestamptz) FROM incoming
            ON CONFLICT (customer_id) DO UPDATE
            SET timezone = excluded.timezone, country = excluded.country,
                locale = excluded.locale, updated_at = excluded.updated_at
        """),
        {
            "ids": [c.customer_id for c in customers],
            "tzs": [c.timezone for c in customers],
            "countries": [c.country for c in customers],
            "locales": [c.locale for c in customers],
            "now": now,
        },
    )


async def owners(session: AsyncSession, account_ids: Sequence[str]) -> dict[str, str]:
    """account id -> customer id, for the accounts that exist."""
    rows = await session.execute(
        text("""
            SELECT account_id, customer_id FROM account
            WHERE account_id = ANY(CAST(:ids AS text[]))
        """),
        {"ids": list(account_ids)},
    )
    return {row[0]: row[1] for row in rows}


@dataclass(frozen=True, slots=True)
class Product:
    """A product's terms: the grace days before an unpaid instalment counts as missed, and how
    many days before its due date a customer is reminded (0: never)."""

    grace_days: int = 0
    due_soon_days: int = 3


async def open_loans(
    session: AsyncSession, loans: Sequence[LoanOpened], terms: Mapping[str, Product]
) -> None:
    """Products first seen get their terms; accounts and schedules are inserted in bulk."""
    products = sorted({loan.product for loan in loans})
    await session.execute(
        text("""
            INSERT INTO product (product, grace_days, due_soon_days)
            SELECT * FROM unnest(CAST(:products AS text[]), CAST(:graces AS int[]),
                                 CAST(:leads AS int[]))
            ON CONFLICT (product) DO NOTHING
        """),
        {
            "products": products,
            "graces": [terms.get(p, Product()).grace_days for p in products],
            "leads": [terms.get(p, Product()).due_soon_days for p in products],
        },
    )
    await session.execute(
        text("""
            INSERT INTO account (account_id, customer_id, product, currency, principal,
                                 opened_on)
            SELECT * FROM unnest(CAST(:ids AS text[]), CAST(:customers AS text[]),
                                 CAST(:products AS text[]), CAST(:currencies AS text[]),
                                 CAST(:principals AS numeric[]), CAST(:opened AS date[]))
        """),
        {
            "ids": [loan.account_id for loan in loans],
            "customers": [loan.customer_id for loan in loans],
            "products": [loan.product for loan in loans],
            "currencies": [loan.currency for loan in loans],
            "principals": [loan.principal for loan in loans],
            "opened": [loan.opened_on for loan in loans],
        },
    )
    schedule = [(loan.account_id, s) for loan in loans for s in loan.schedule]
    await session.execute(
        text("""
            INSERT INTO installment (account_id, installment_no, due_date, amount)
            SELECT * FROM unnest(CAST(:ids AS text[]), CAST(:numbers AS int[]),
                                 CAST(:dues AS date[]), CAST(:amounts AS numeric[]))
        """),
        {
            "ids": [a for a, _ in schedule],
            "numbers": [s.installment_no for _, s in schedule],
            "dues": [s.due_date for _, s in schedule],
            "amounts": [s.amount for _, s in schedule],
        },
    )


async def lock_accounts(session: AsyncSession, account_ids: Sequence[str]) -> dict[str, AccountRow]:
    """The accounts, locked in id order (so concurrent batches cannot deadlock)."""
    rows = await session.execute(
        text("""
            SELECT account_id, customer_id, currency FROM account
            WHERE account_id = ANY(CAST(:ids AS text[]))
            ORDER BY account_id FOR UPDATE
        """),
        {"ids": sorted(account_ids)},
    )
    return {r.account_id: AccountRow(r.account_id, r.customer_id, r.currency) for r in rows}


async def insert_payments(session: AsyncSession, payments: Sequence[PaymentPosted]) -> set[str]:
    """The payments whose id was not seen before, inserted; returns those ids."""
    rows = await session.execute(
        text("""
            INSERT INTO payment (payment_id, account_id, amount, currency, posted_at)
            SELECT * FROM unnest(CAST(:ids AS text[]), CAST(:accounts AS text[]),
                                 CAST(:amounts AS numeric[]), CAST(:currencies AS text[]),
                                 CAST(:posted AS timestamptz[]))
            ON CONFLICT (payment_id) DO NOTHING
            RETURNING payment_id
        """),
        {
            "ids": [p.payment_id for p in payments],
            "accounts": [p.account_id for p in payments],
            "amounts": [p.amount for p in payments],
            "currencies": [p.currency for p in payments],
            "posted": [p.posted_at for p in payments],
        },
    )
    return {row[0] for row in rows}


async def schedules(
    session: AsyncSession, account_ids: Sequence[str]
) -> dict[str, list[Installment]]:
    """Each account's instalments, oldest due first, with what each has been paid."""
    found: dict[str, list[Installment]] = {}
    for row in await session.execute(
        text("""
            SELECT account_id, installment_no, due_date, amount, paid FROM installment
            WHERE account_id = ANY(CAST(:ids AS text[]))
            ORDER BY account_id, due_date, installment_no
        """),
        {"ids": sorted(account_ids)},
    ):
        found.setdefault(row[0], []).append(Installment(row[1], row[2], row[3], row[4]))
    return found


async def insert_allocations(
    session: AsyncSession, allocations: Sequence[tuple[str, str, Allocation]]
) -> None:
    """(payment id, account id, allocation) rows."""
    await session.execute(
        text("""
            INSERT INTO allocation (payment_id, account_id, installment_no, amount)
            SELECT * FROM unnest(CAST(:p AS text[]), CAST(:a AS text[]),
                                 CAST(:n AS int[]), CAST(:x AS numeric[]))
        """),
        {
            "p": [p for p, _, _ in allocations],
            "a": [a for _, a, _ in allocations],
            "n": [x.installment_no for _, _, x in allocations],
            "x": [x.amount for _, _, x in allocations],
        },
    )


async def set_paid(session: AsyncSession, paid: Sequence[Paid]) -> None:
    if not paid:
        return
    await session.execute(
        text("""
            UPDATE installment i SET paid = u.paid
            FROM unnest(CAST(:a AS text[]), CAST(:n AS int[]), CAST(:paid AS numeric[]))
              AS u (account_id, installment_no, paid)
            WHERE i.account_id = u.account_id AND i.installment_no = u.installment_no
        """),
        {
            "a": [p.account_id for p in paid],
            "n": [p.installment_no for p in paid],
            "paid": [p.paid for p in paid],
        },
    )


async def set_unallocated(session: AsyncSession, amounts: dict[str, Decimal]) -> None:
    """payment id -> the overpayment kept as credit on it."""
    await session.execute(
        text("""
            UPDATE payment p SET unallocated = u.amount
            FROM unnest(CAST(:p AS text[]), CAST(:u AS numeric[])) AS u (id, amount)
            WHERE p.payment_id = u.id
        """),
        {"p": list(amounts), "u": list(amounts.values())},
    )


async def lock_payment(session: AsyncSession, payment_id: str) -> PaymentRow | None:
    row = (
        await session.execute(
            text("SELECT account_id, reversed_at FROM payment WHERE payment_id = :p FOR UPDATE"),
            {"p": payment_id},
        )
    ).first()
    return None if row is None else PaymentRow(row.account_id, row.reversed_at)


async def allocations_of(session: AsyncSession, payment_id: str) -> list[Allocation]:
    rows = await session.execute(
        text("SELECT installment_no, amount FROM allocation WHERE payment_id = :p"),
        {"p": payment_id},
    )
    return [Allocation(r.installment_no, r.amount) for r in rows]


async def mark_reversed(
    session: AsyncSession, payment_id: str, reason: str | None, now: datetime
) -> None:
    await session.execute(
        text("""
            UPDATE payment
            SET reversed_at = :now, reversal_reason = :r, reversal_seq = nextval('history_seq')
            WHERE payment_id = :p
        """),
        {"now": now, "r": reason, "p": payment_id},
    )


async def insert_flag(
    session: AsyncSession,
    account_id: str | None,
    customer_id: str,
    flag: str,
    active: bool,
    now: datetime,
) -> None:
    await session.execute(
        text("""
            INSERT INTO flag_change (account_id, customer_id, flag, active, changed_at)
            VALUES (:a, :c, :f, :active, :now)
        """),
        {"a": account_id, "c": customer_id, "f": flag, "active": active, "now": now},
    )


async def plan_known(session: AsyncSession, plan_id: str) -> bool:
    found = await session.scalar(text("SELECT 1 FROM plan WHERE plan_id = :p"), {"p": plan_id})
    return found is not None


async def has_active_plan(session: AsyncSession, account_id: str) -> bool:
    found = await session.scalar(
        text("SELECT 1 FROM plan WHERE account_id = :a AND status = 'active'"), {"a": account_id}
    )
    return found is not None


@dataclass(frozen=True, slots=True)
class NewPlan:
    plan_id: str
    account_id: str
    kind: str
    hardship: bool = False  # agreed under hardship
    source: str | None = None  # where it was agreed: a channel, self_service or desk


async def insert_plan(
    session: AsyncSession,
    plan: NewPlan,
    schedule: Sequence[tuple[int, date, Decimal]],
    now: datetime,
) -> None:
    plan_id = plan.plan_id
    await session.execute(
        text("""
            INSERT INTO plan (plan_id, account_id, kind, agreed_at, total, hardship, source)
            VALUES (:p, :a, :k, :now, :total, :hardship, :source)
        """),
        {
            "p": plan_id,
            "a": plan.account_id,
            "k": plan.kind,
            "now": now,
            "total": sum((amount for _, _, amount in schedule), Decimal(0)),
            "hardship": plan.hardship,
            "source": plan.source,
        },
    )
    await session.execute(
        text("""
            INSERT INTO plan_installment (plan_id, installment_no, due_date, amount)
            VALUES (:p, :n, :d, :x)
        """),
        [{"p": plan_id, "n": n, "d": d, "x": x} for n, d, x in schedule],
    )


async def pause(session: AsyncSession, account_id: str, dpd: int, today: date) -> None:
    """A plan starts: the count of days past due is frozen from ``today``."""
    await session.execute(
        text("UPDATE account SET frozen_dpd = :dpd, paused_since = :today WHERE account_id = :a"),
        {"dpd": dpd, "today": today, "a": account_id},
    )


async def insert_promise(
    session: AsyncSession,
    promise_id: str,
    account_id: str,
    amount: Decimal,
    due_date: date,
    now: datetime,
) -> None:
    await session.execute(
        text("""
            INSERT INTO promise (promise_id, account_id, amount, due_date, made_at)
            VALUES (:p, :a, :x, :d, :now) ON CONFLICT (promise_id) DO NOTHING
        """),
        {"p": promise_id, "a": account_id, "x": amount, "d": due_date, "now": now},
    )
