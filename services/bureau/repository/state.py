"""Each account's reporting state as the bureau keeps it from the other services' events:
statements only, nothing committed here. An account the bureau hears of first from any event is
created by that event."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from shared.events import CustomerUpserted, LoanOpened, PaymentReceived


@dataclass(frozen=True, slots=True)
class NextDue:
    """The next unpaid instalment from an event that carries the ledger's standing; an older
    producer's event (without a balance) leaves what was known (``known`` False)."""

    known: bool
    next_due_date: date | None
    next_due_amount: Decimal | None


_NEXT_DUE = (
    "next_due_date = CASE WHEN CAST(:standing AS boolean) THEN CAST(:next_due_date AS date) "
    "  ELSE account.next_due_date END, "
    "next_due_amount = CASE WHEN CAST(:standing AS boolean) "
    "  THEN CAST(:next_due_amount AS numeric) ELSE account.next_due_amount END"
)


def _next(due: NextDue) -> dict[str, Any]:
    return {
        "standing": due.known,
        "next_due_date": due.next_due_date,
        "next_due_amount": due.next_due_amount,
    }


async def _update(
    session: AsyncSession,
    account_id: str,
    customer_id: str,
    sets: str,
    now: datetime,
    **params: Any,
) -> None:
    """Apply ``sets`` (always a constant of this module) to the account, creating it first if
    this is the first the bureau hears of it."""
    await session.execute(
        text("""
            INSERT INTO account (account_id, customer_id, updated_at) VALUES (:a, :c, :now)
            ON CONFLICT (account_id) DO NOTHING
        """),
        {"a": account_id, "c": customer_id, "now": now},
    )
    await session.execute(
        text(f"UPDATE account SET {sets}, updated_at = :now WHERE account_id = :a"),  # noqa: S608 - ``sets`` is a constant of this module
        {"a": account_id, "c": customer_id, "now": now} | params,
    )


async def upsert_customers(
    session: AsyncSession, customers: Sequence[CustomerUpserted], now: datetime
) -> None:
    await session.execute(
        text("""
            INSERT INTO customer (customer_id, full_name, national_id, birth_date,
                                  postal_address, country, timezone, updated_at)
            SELECT *, CAST(:now AS timestamptz)
            FROM unnest(CAST(:ids AS text[]), CAST(:names AS text[]),
                        CAST(:national AS text[]), CAST(:births AS date[]),
                        CAST(:postal AS text[]), CAST(:countries AS text[]),
                        CAST(:zones AS text[]))
            ON CONFLICT (customer_id) DO UPDATE
            SET full_name = excluded.full_name, national_id = excluded.national_id,
                birth_date = excluded.birth_date, postal_address = excluded.postal_address,
                country = excluded.country, timezone = excluded.timezone,
                updated_at = excluded.updated_at
        """),
        {
            "ids": [c.customer_id for c in customers],
            "names": [c.full_name for c in customers],
            "national": [c.national_id for c in customers],
            "births": [c.birth_date for c in customers],
            "postal": [c.postal_address for c in customers],
            "countries": [c.country for c in customers],
            "zones": [c.timezone for c in customers],
            "now": now,
        },
    )


async def set_flag(
    session: AsyncSession, customer_id: str, account_id: str | None, flag: str, active: bool
) -> None:
    await session.execute(
        text("""
            INSERT INTO flag (customer_id, account_id, flag, active)
            VALUES (:c, :a, :f, :active)
            ON CONFLICT (customer_id, account_id, flag) DO UPDATE SET active = excluded.active
        """),
        {"c": customer_id, "a": account_id or "", "f": flag, "active": active},
    )


async def set_standing(
    session: AsyncSession,
    account_id: str,
    customer_id: str,
    now: datetime,
    *,
    currency: str,
    bucket: str,
    dpd: int,
    overdue: Decimal,
    due: date,
    balance: Decimal | None,
    first_delinquency: date | None,
    next_due: NextDue,
) -> None:
    """A missed instalment or a bucket change. The date of first delinquency is the ledger's
    when its event carries one, else the first missed due date since current."""
    await _update(
        session,
        account_id,
        customer_id,
        "bucket = :bucket, days_past_due = :dpd, overdue = :overdue, currency = :cur, "
        "balance = coalesce(CAST(:balance AS numeric), account.balance), "
        f"{_NEXT_DUE}, "
        "first_delinquency = CASE WHEN CAST(:fd AS date) IS NOT NULL THEN CAST(:fd AS date) "
        "  WHEN :bucket = 'current' THEN NULL "
        "  ELSE coalesce(account.first_delinquency, CAST(:due AS date)) END",
        now,
        bucket=bucket,
        dpd=dpd,
        overdue=overdue,
        cur=currency,
        due=due,
        balance=balance,
        fd=first_delinquency,
        **_next(next_due),
    )


async def set_closed_rating(
    session: AsyncSession, account_id: str, customer_id: str, rating: str, now: datetime
) -> None:
    await _update(session, account_id, customer_id, "closed_rating = :rating", now, rating=rating)


async def open_loans(session: AsyncSession, loans: Sequence[LoanOpened], now: datetime) -> None:
    """A run of loans in one statement; the ledger's balance, if its events came first (another
    topic), stands."""
    await session.execute(
        text("""
            INSERT INTO account (account_id, customer_id, opened_on, currency, principal,
                                 schedule_dues, schedule_amounts, balance, updated_at)
            SELECT a, c, o, cur, p, CAST(d AS date[]), CAST(x AS numeric[]), b,
                   CAST(:now AS timestamptz)
            FROM unnest(CAST(:a AS text[]), CAST(:c AS text[]), CAST(:o AS date[]),
                        CAST(:cur AS text[]), CAST(:p AS numeric[]), CAST(:d AS text[]),
                        CAST(:x AS text[]), CAST(:b AS numeric[]))
              AS t (a, c, o, cur, p, d, x, b)
            ON CONFLICT (account_id) DO UPDATE
            SET customer_id = excluded.customer_id, opened_on = excluded.opened_on,
                currency = excluded.currency, principal = excluded.principal,
                schedule_dues = excluded.schedule_dues,
                schedule_amounts = excluded.schedule_amounts,
                balance = coalesce(account.balance, excluded.balance),
                updated_at = excluded.updated_at
        """),
        {
            "a": [loan.account_id for loan in loans],
            "c": [loan.customer_id for loan in loans],
            "o": [loan.opened_on for loan in loans],
            "cur": [loan.currency for loan in loans],
            "p": [loan.principal for loan in loans],
            # arrays of arrays travel as their literals: unnest would flatten them
            "d": ["{" + ",".join(str(i.due_date) for i in loan.schedule) + "}" for loan in loans],
            "x": ["{" + ",".join(str(i.amount) for i in loan.schedule) + "}" for loan in loans],
            "b": [sum((i.amount for i in loan.schedule), Decimal(0)) for loan in loans],
            "now": now,
        },
    )


async def record_payments(
    session: AsyncSession,
    last: Sequence[PaymentReceived],
    payments: Sequence[PaymentReceived],
    now: datetime,
) -> None:
    """Per account the last payment's amounts (``last``); every payment with its posting kept
    (for the period's actual payment and the last payment)."""
    params = {
        "a": [p.account_id for p in last],
        "c": [p.customer_id for p in last],
        "o": [p.total_overdue for p in last],
        "cur": [p.currency for p in last],
        "now": now,
    }
    await session.execute(
        text("""
            INSERT INTO account (account_id, customer_id, updated_at)
            SELECT a, c, CAST(:now AS timestamptz)
            FROM unnest(CAST(:a AS text[]), CAST(:c AS text[])) AS t (a, c)
            ON CONFLICT (account_id) DO NOTHING
        """),
        params,
    )
    await session.execute(
        text("""
            UPDATE account SET overdue = t.o, currency = t.cur,
                               balance = coalesce(t.b, account.balance),
                               next_due_date = CASE WHEN t.b IS NULL
                                                    THEN account.next_due_date ELSE t.nd END,
                               next_due_amount = CASE WHEN t.b IS NULL
                                                      THEN account.next_due_amount
                                                      ELSE t.nx END,
                               -- paid off current, unless the cure said how late
                               closed_rating = CASE WHEN t.b = 0
                                                    THEN coalesce(account.closed_rating, '0')
                                               END,
                               updated_at = :now
            FROM unnest(CAST(:a AS text[]), CAST(:o AS numeric[]), CAST(:cur AS text[]),
                        CAST(:b AS numeric[]), CAST(:nd AS date[]), CAST(:nx AS numeric[]))
                   AS t (a, o, cur, b, nd, nx)
            WHERE account.account_id = t.a
        """),
        params
        | {
            "b": [p.balance for p in last],
            "nd": [p.next_due_date for p in last],
            "nx": [p.next_due_amount for p in last],
        },
    )
    known = [p for p in payments if p.posted_at is not None and p.posted_on is not None]
    if known:
        await session.execute(
            text("""
                INSERT INTO payment (payment_id, account_id, amount, posted_at, posted_on)
                SELECT * FROM unnest(CAST(:ids AS text[]), CAST(:a AS text[]),
                                     CAST(:x AS numeric[]), CAST(:at AS timestamptz[]),
                                     CAST(:on AS date[]))
                ON CONFLICT (payment_id) DO NOTHING
            """),
            {
                "ids": [p.payment_id for p in known],
                "a": [p.account_id for p in known],
                "x": [p.amount for p in known],
                "at": [p.posted_at for p in known],
                "on": [p.posted_on for p in known],
            },
        )


async def record_reversal(
    session: AsyncSession,
    account_id: str,
    customer_id: str,
    now: datetime,
    *,
    payment_id: str,
    reversed_at: datetime | None,
    overdue: Decimal,
    balance: Decimal | None,
    next_due: NextDue,
) -> None:
    await _update(
        session,
        account_id,
        customer_id,
        f"overdue = :overdue, balance = coalesce(:balance, account.balance), {_NEXT_DUE}, "
        "closed_rating = CASE WHEN CAST(:balance AS numeric) = 0 "
        "  THEN account.closed_rating END",
        now,
        overdue=overdue,
        balance=balance,
        **_next(next_due),
    )
    await session.execute(
        text("UPDATE payment SET reversed_at = :at WHERE payment_id = :p"),
        {"at": reversed_at, "p": payment_id},
    )


async def bucket_of(session: AsyncSession, account_id: str) -> str | None:
    found: str | None = await session.scalar(
        text("SELECT bucket FROM account WHERE account_id = :a"), {"a": account_id}
    )
    return found


async def set_cured(
    session: AsyncSession,
    account_id: str,
    customer_id: str,
    now: datetime,
    *,
    paid_off: bool,
    first_delinquency: date | None,
    balance: Decimal | None,
    rating: str,
    next_due: NextDue,
) -> None:
    await _update(
        session,
        account_id,
        customer_id,
        "bucket = 'current', days_past_due = 0, overdue = 0, first_delinquency = :fd, "
        "balance = coalesce(CAST(:balance AS numeric), account.balance), "
        f"{_NEXT_DUE}, "
        "closed_rating = CASE WHEN CAST(:paid_off AS boolean) "
        "  THEN coalesce(account.closed_rating, :rating) END",
        now,
        paid_off=paid_off,
        fd=first_delinquency,
        balance=balance,
        rating=rating,
        **_next(next_due),
    )


async def set_plan(
    session: AsyncSession,
    account_id: str,
    customer_id: str,
    now: datetime,
    active: bool,
    installments: Sequence[tuple[date, Decimal]] | None,
    hardship: bool = False,
    kind: str | None = None,
) -> None:
    """A plan started (with its instalments, kind and whether it was agreed under hardship) or
    ended (``installments`` None keeps them)."""
    if installments is None:
        await _update(session, account_id, customer_id, "plan_active = :on", now, on=active)
        return
    await _update(
        session,
        account_id,
        customer_id,
        "plan_active = :on, plan_dues = CAST(:dues AS date[]), "
        "plan_amounts = CAST(:amounts AS numeric[]), plan_hardship = :hardship, "
        "plan_kind = :kind",
        now,
        on=active,
        dues=[d for d, _ in installments],
        amounts=[x for _, x in installments],
        hardship=hardship,
        kind=kind,
    )


async def notice_returned(
    session: AsyncSession, account_id: str, customer_id: str, at: datetime, now: datetime
) -> None:
    await _update(session, account_id, customer_id, "notice_returned_at = :at", now, at=at)


async def notice_sent(
    session: AsyncSession,
    account_id: str,
    customer_id: str,
    at: datetime,
    now: datetime,
    *,
    pre_notice: bool = False,
) -> None:
    """A written communication delivered; the first one counts (and, ``pre_notice``, the first
    delivered pre-notice)."""
    sets = "notice_sent_at = coalesce(account.notice_sent_at, :at)"
    if pre_notice:
        sets += ", pre_notice_delivered_at = coalesce(account.pre_notice_delivered_at, :at)"
    await _update(session, account_id, customer_id, sets, now, at=at)


async def conversation(
    session: AsyncSession, account_id: str, customer_id: str, at: datetime, now: datetime
) -> None:
    await _update(session, account_id, customer_id, "conversation_at = :at", now, at=at)


async def set_dispute(
    session: AsyncSession, account_id: str, customer_id: str, state: str, now: datetime
) -> None:
    await _update(session, account_id, customer_id, "dispute = :state", now, state=state)
