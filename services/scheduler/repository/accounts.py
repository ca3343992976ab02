"""What the scheduler knows of customers and accounts, kept up to date from the other services'
events: statements only, nothing committed here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from shared.events import ContactAttempted


@dataclass(frozen=True, slots=True)
class CustomerRow:
    customer_id: str
    country: str
    timezone: str
    locale: str
    credit_score: int | None
    phone_ref: str | None
    email_ref: str | None
    postal_ref: str | None


@dataclass(frozen=True, slots=True)
class AccountState:
    """Where the ledger last said an account stands."""

    account_id: str
    customer_id: str
    currency: str
    bucket: str
    days_past_due: int
    overdue: Decimal
    product: str | None
    next_due_date: date | None
    next_due_amount: Decimal | None


@dataclass(frozen=True, slots=True)
class Received:
    """The account's amounts a payment left (``days_past_due`` None: the ledger did not say)."""

    account_id: str
    overdue: Decimal
    days_past_due: int | None
    next_due_date: date | None
    next_due_amount: Decimal | None


async def upsert_customers(
    session: AsyncSession, customers: Sequence[CustomerRow], now: datetime
) -> None:
    await session.execute(
        text("""
            INSERT INTO customer (customer_id, country, timezone, locale, credit_score,
                                  phone_ref, email_ref, postal_ref, updated_at)
            SELECT *, CAST(:now AS timestamptz)
            FROM unnest(CAST(:ids AS text[]), CAST(:countries AS text[]),
                        CAST(:tzs AS text[]), CAST(:locales AS text[]),
                        CAST(:scores AS int[]), CAST(:phones AS text[]),
                        CAST(:emails AS text[]), CAST(:postals AS text[]))
            ON CONFLICT (customer_id) DO UPDATE
            SET country = excluded.country, timezone = excluded.timezone,
                locale = excluded.locale, credit_score = excluded.credit_score,
                phone_ref = excluded.phone_ref, email_ref = excluded.email_ref,
                postal_ref = excluded.postal_ref, updated_at = excluded.updated_at
        """),
        {
            "ids": [c.customer_id for c in customers],
            "countries": [c.country for c in customers],
            "tzs": [c.timezone for c in customers],
            "locales": [c.locale for c in customers],
            "scores": [c.credit_score for c in customers],
            "phones": [c.phone_ref for c in customers],
            "emails": [c.email_ref for c in customers],
            "postals": [c.postal_ref for c in customers],
            "now": now,
        },
    )


async def set_flag(
    session: AsyncSession,
    customer_id: str,
    account_id: str | None,
    flag: str,
    active: bool,
    now: datetime,
) -> None:
    await session.execute(
        text("""
            INSERT INTO flag (customer_id, account_id, flag, active, changed_at)
            VALUES (:c, :a, :f, :active, :now)
            ON CONFLICT (customer_id, account_id, flag) DO UPDATE
            SET active = excluded.active, changed_at = excluded.changed_at
        """),
        {"c": customer_id, "a": account_id or "", "f": flag, "active": active, "now": now},
    )


async def upsert_accounts(
    session: AsyncSession, rows: Sequence[AccountState], now: datetime
) -> None:
    await session.execute(
        text("""
            INSERT INTO account (account_id, customer_id, currency, bucket, days_past_due,
                                 overdue, product, next_due_date, next_due_amount,
                                 updated_at, dpd_as_of)
            SELECT *, CAST(:now AS timestamptz), CAST(:now AS timestamptz)
            FROM unnest(CAST(:ids AS text[]), CAST(:customers AS text[]),
                        CAST(:currencies AS text[]), CAST(:buckets AS text[]),
                        CAST(:dpds AS int[]), CAST(:overdues AS numeric[]),
                        CAST(:products AS text[]), CAST(:next_dates AS date[]),
                        CAST(:next_amounts AS numeric[]))
            ON CONFLICT (account_id) DO UPDATE
            SET currency = excluded.currency, bucket = excluded.bucket,
                product = coalesce(excluded.product, account.product),
                days_past_due = excluded.days_past_due, overdue = excluded.overdue,
                next_due_date = excluded.next_due_date,
                next_due_amount = excluded.next_due_amount,
                updated_at = excluded.updated_at, dpd_as_of = excluded.dpd_as_of
        """),
        {
            "ids": [r.account_id for r in rows],
            "customers": [r.customer_id for r in rows],
            "currencies": [r.currency for r in rows],
            "buckets": [r.bucket for r in rows],
            "dpds": [r.days_past_due for r in rows],
            "overdues": [r.overdue for r in rows],
            "products": [r.product for r in rows],
            "next_dates": [r.next_due_date for r in rows],
            "next_amounts": [r.next_due_amount for r in rows],
            "now": now,
        },
    )


async def count_late(session: AsyncSession, missed: Sequence[str]) -> None:
    """One more missed instalment for each account id (an account missing two in a run appears
    twice): the strategies' past lateness."""
    await session.execute(
        text("""
            UPDATE account SET times_late = account.times_late + t.n
            FROM (SELECT a, count(*) AS n FROM unnest(CAST(:a AS text[])) AS u (a) GROUP BY a) t
            WHERE account.account_id = t.a
        """),
        {"a": list(missed)},
    )


async def ensure_accounts(
    session: AsyncSession,
    accounts: Sequence[tuple[str, str, str | None, str | None]],
    now: datetime,
) -> None:
    """(account, customer, currency, product) of accounts heard of before any delinquency (a
    reminder before the due date): current and owing nothing overdue until the ledger says."""
    await session.execute(
        text("""
            INSERT INTO account (account_id, customer_id, currency, product, updated_at)
            SELECT *, CAST(:now AS timestamptz)
            FROM unnest(CAST(:a AS text[]), CAST(:c AS text[]), CAST(:cur AS text[]),
                        CAST(:p AS text[]))
            ON CONFLICT (account_id) DO NOTHING
        """),
        {
            "a": [a for a, _, _, _ in accounts],
            "c": [c for _, c, _, _ in accounts],
            "cur": [cur for _, _, cur, _ in accounts],
            "p": [p for _, _, _, p in accounts],
            "now": now,
        },
    )


async def accounts_of(session: AsyncSession, customer_id: str) -> list[str]:
    rows = await session.scalars(
        text("SELECT account_id FROM account WHERE customer_id = :c ORDER BY account_id"),
        {"c": customer_id},
    )
    return list(rows)


async def set_hardship(
    session: AsyncSession,
    account_ids: Sequence[str],
    until: datetime | None,
    reason: str | None,
    now: datetime,
) -> None:
    """The accounts' hardship pause ends at ``until`` (None: no pause)."""
    await session.execute(
        text("""
            UPDATE account SET hardship_until = :until, hardship_reason = :reason,
                               updated_at = :now
            WHERE account_id = ANY(CAST(:ids AS text[]))
        """),
        {"ids": list(account_ids), "until": until, "reason": reason, "now": now},
    )


async def hardship_until(session: AsyncSession, account_id: str) -> datetime | None:
    found: datetime | None = await session.scalar(
        text("SELECT hardship_until FROM account WHERE account_id = :a"), {"a": account_id}
    )
    return found


async def record_payments(
    session: AsyncSession,
    seen: Sequence[tuple[str, str]],
    received: Sequence[Received],
    now: datetime,
) -> None:
    """(account id, payment id) pairs seen, and each account's amounts after its last one."""
    await session.execute(
        text("""
            INSERT INTO payment_seen (account_id, payment_id, at)
            SELECT a, p, CAST(:now AS timestamptz)
            FROM unnest(CAST(:a AS text[]), CAST(:p AS text[])) AS t (a, p)
            ON CONFLICT DO NOTHING
        """),
        {"a": [a for a, _ in seen], "p": [p for _, p in seen], "now": now},
    )
    await session.execute(
        text("""
            UPDATE account
            SET overdue = t.o, updated_at = :now,
                days_past_due = coalesce(t.dpd, account.days_past_due),
                dpd_as_of = CASE WHEN t.dpd IS NULL THEN account.dpd_as_of ELSE :now END,
                next_due_date = CASE WHEN t.dpd IS NULL THEN account.next_due_date
                                     ELSE t.nd END,
                next_due_amount = CASE WHEN t.dpd IS NULL THEN account.next_due_amount
                                       ELSE t.nx END
            FROM unnest(CAST(:a AS text[]), CAST(:o AS numeric[]), CAST(:dpd AS int[]),
                        CAST(:nd AS date[]), CAST(:nx AS numeric[])) AS t (a, o, dpd, nd, nx)
            WHERE account.account_id = t.a
        """),
        {
            "a": [r.account_id for r in received],
            "o": [r.overdue for r in received],
            "dpd": [r.days_past_due for r in received],
            "nd": [r.next_due_date for r in received],
            "nx": [r.next_due_amount for r in received],
            "now": now,
        },
    )


async def record_attempts(
    session: AsyncSession, attempts: Sequence[ContactAttempted], refs: dict[str, str | None]
) -> None:
    """One row per contact: its latest outcome, and the latest address it named (``refs``)."""
    await session.execute(
        text("""
            INSERT INTO contact_log (contact_id, customer_id, account_id, channel, address_ref,
                                     requested_at, outcome, attempted_at)
            SELECT t.id, coalesce(t.c, a.customer_id, ''), t.a, t.ch, t.ref, t.at, t.o, t.at
            FROM unnest(CAST(:id AS text[]), CAST(:c AS text[]), CAST(:a AS text[]),
                        CAST(:ch AS text[]), CAST(:ref AS text[]),
                        CAST(:at AS timestamptz[]), CAST(:o AS text[]))
                   AS t (id, c, a, ch, ref, at, o)
            LEFT JOIN account a ON a.account_id = t.a
            ON CONFLICT (contact_id) DO UPDATE
            SET outcome = excluded.outcome, attempted_at = excluded.attempted_at,
                address_ref = coalesce(excluded.address_ref, contact_log.address_ref)
        """),
        {
            "id": [r.contact_id for r in attempts],
            "c": [r.customer_id for r in attempts],
            "a": [r.account_id for r in attempts],
            "ch": [r.channel for r in attempts],
            "ref": [refs[r.contact_id] for r in attempts],
            "at": [r.attempted_at for r in attempts],
            "o": [r.outcome for r in attempts],
        },
    )


# The flags of an account the ledger's and the notifier's news set, each one statement.
_ACCOUNT_CHANGES = {
    "plan_kept": "plan_kept = true",
    "plan_ended": "plan_kept = false",
    "promise_kept": "promise_due = NULL, kept_promises = kept_promises + 1",
    "promise_broken": "promise_due = NULL, broken_promises = broken_promises + 1",
    "dispute_opened": "dispute_open = true",
    "dispute_resolved": "dispute_open = false",
}


async def change_account(
    session: AsyncSession, account_id: str, change: str, now: datetime
) -> None:
    """One of ``_ACCOUNT_CHANGES``, by name (never input: a KeyError otherwise)."""
    assignments = _ACCOUNT_CHANGES[change]
    await session.execute(
        text(f"UPDATE account SET {assignments}, updated_at = :now WHERE account_id = :a"),  # noqa: S608
        {"a": account_id, "now": now},
    )


async def promise_due(session: AsyncSession, account_id: str, due: date) -> None:
    await session.execute(
        text("UPDATE account SET promise_due = :d WHERE account_id = :a"),
        {"d": due, "a": account_id},
    )


async def opt_out(
    session: AsyncSession, customer_id: str, channel: str, address_ref: str | None, now: datetime
) -> None:
    await session.execute(
        text("""
            INSERT INTO opt_out (customer_id, channel, address_ref, at)
            VALUES (:c, :ch, :ref, :now) ON CONFLICT DO NOTHING
        """),
        {"c": customer_id, "ch": channel, "ref": address_ref or "", "now": now},
    )


async def cease(session: AsyncSession, customer_id: str, now: datetime) -> None:
    await session.execute(
        text("""
            INSERT INTO customer (customer_id, ceased, updated_at) VALUES (:c, true, :now)
            ON CONFLICT (customer_id) DO UPDATE
            SET ceased = true, updated_at = excluded.updated_at
        """),
        {"c": customer_id, "now": now},
    )


async def countries(session: AsyncSession, account_ids: Sequence[str]) -> dict[str, str | None]:
    rows = await session.execute(
        text("""
            SELECT a.account_id, c.country
            FROM account a LEFT JOIN customer c USING (customer_id)
            WHERE a.account_id = ANY(CAST(:ids AS text[]))
        """),
        {"ids": list(account_ids)},
    )
    return {r.account_id: r.country for r in rows}
