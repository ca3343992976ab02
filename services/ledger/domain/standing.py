"""Where an account stands on a day, and what its plans and promises come to: the executable
specification of the ledger's set-based evaluation.

The daily pass runs as SQL over every account due for review (``repository/evaluation.py``);
these functions say what that SQL must compute for one account, and the differential property
test (``tests/integration/test_ledger_spec.py``) holds the SQL to them after every clock move.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum

from services.ledger.domain.delinquency import (
    Due,
    bucket_of,
    days_past_due,
    next_bucket_start,
    overdue,
)

ZERO = Decimal(0)


@dataclass(frozen=True)
class Instalment:
    number: int
    due_date: date
    amount: Decimal
    paid: Decimal
    missed: bool  # announced as missed (payment.missed) before
    reminded: bool = False  # announced as due soon (installment.due_soon) before

    @property
    def unpaid(self) -> bool:
        return self.paid < self.amount


@dataclass(frozen=True)
class Before:
    """What the account held before this evaluation."""

    in_arrears: bool
    first_delinquency: date | None
    paused_since: date | None  # a kept plan freezes the count from this day
    frozen_dpd: int | None
    paused_days: int  # days a plan kept, not counted once it ended


@dataclass(frozen=True)
class Standing:
    days_past_due: int
    bucket: str
    overdue: Decimal
    outstanding: Decimal
    in_arrears: bool
    first_delinquency: date | None
    next_due: date | None
    next_due_amount: Decimal | None
    review_on: date | None  # None: nothing can change by the passing of time alone
    newly_missed: tuple[int, ...]  # instalments past due and grace, not announced before
    newly_due_soon: tuple[int, ...]  # unpaid, due within the lead days, not reminded before
    paused_days: int  # kept while anything is overdue, forgotten once nothing is


def stand(
    instalments: Sequence[Instalment], before: Before, today: date, grace: int, lead: int = 0
) -> Standing:
    """The account's standing on ``today`` (its customer's calendar day), after ``grace`` days.

    An unpaid instalment not reminded of before is due soon once its due date is at most
    ``lead`` days away (``lead`` 0: never), except while a plan is kept (its own dates stand).

    Days past due count from the oldest unpaid instalment once its grace has run out, frozen
    while a plan is kept, less the days a plan was kept. The date of first delinquency (FCRA
    623(a)(5)) is the oldest unpaid due date when the account fell behind, kept while it stays
    behind and when it is paid off behind (the bureau reports it with status 13), gone once it
    is current again. ``review_on`` is the first later day on which any of this can change by
    time alone; early is harmless (the review finds nothing and sets a later day).
    """
    unpaid = [i for i in instalments if i.unpaid]
    oldest = min((i.due_date for i in unpaid), default=None)
    upcoming = sorted(
        (i for i in unpaid if i.due_date >= today), key=lambda i: (i.due_date, i.number)
    )
    next_due = upcoming[0].due_date if upcoming else None
    next_miss = min(
        (i.due_date for i in unpaid if not i.missed and (today - i.due_date).days <= grace),
        default=None,
    )
    reminding = lead > 0 and before.paused_since is None
    next_remind = min(
        (i.due_date for i in unpaid if not i.reminded and (i.due_date - today).days > lead),
        default=None,
    )
    dues = [Due(i.due_date, i.amount - i.paid) for i in instalments]
    owed_now = overdue(dues, today)
    outstanding = sum((i.amount - i.paid for i in instalments), ZERO)
    if before.paused_since is not None:
        dpd = before.frozen_dpd or 0
    else:
        dpd = max(0, days_past_due(dues, today, grace) - before.paused_days)
    in_arrears = True if dpd > 0 else False if owed_now == 0 else before.in_arrears
    first_delinquency: date | None = None
    if dpd > 0 or (owed_now > 0 and before.in_arrears):
        first_delinquency = (before.first_delinquency or oldest) if before.in_arrears else oldest
    elif outstanding == 0:
        first_delinquency = before.first_delinquency
    return Standing(
        days_past_due=dpd,
        bucket=bucket_of(dpd),
        overdue=owed_now,
        outstanding=outstanding,
        in_arrears=in_arrears,
        first_delinquency=first_delinquency,
        next_due=next_due,
        next_due_amount=(upcoming[0].amount - upcoming[0].paid) if upcoming else None,
        review_on=_review_on(
            today,
            grace,
            dpd,
            before,
            oldest,
            next_due,
            next_miss,
            date.fromordinal(next_remind.toordinal() - lead)
            if reminding and next_remind is not None
            else None,
        ),
        newly_missed=tuple(
            i.number
            for i in sorted(instalments, key=lambda i: i.number)
            if i.unpaid and not i.missed and (today - i.due_date).days > grace
        ),
        newly_due_soon=tuple(
            i.number
            for i in sorted(instalments, key=lambda i: i.number)
            if reminding and i.unpaid and not i.reminded and 0 <= (i.due_date - today).days <= lead
        ),
        # Not "once out of arrears": right after a plan ends, its paused days can bring the
        # count to 0 while the old instalment is still unpaid, and must go on counting.
        paused_days=before.paused_days if owed_now > 0 else 0,
    )


def _review_on(
    today: date,
    grace: int,
    dpd: int,
    before: Before,
    oldest: date | None,
    next_due: date | None,
    next_miss: date | None,
    remind_on: date | None,
) -> date | None:
    candidates: list[date] = [] if remind_on is None else [remind_on]
    if next_due is not None:
        candidates.append(date.fromordinal(next_due.toordinal() + 1))  # it becomes overdue
    if next_miss is not None:
        candidates.append(date.fromordinal(next_miss.toordinal() + grace + 1))  # it is missed
    if before.paused_since is None:
        if dpd > 0:
            start = next_bucket_start(dpd)
            if start is not None:  # the next bucket
                candidates.append(date.fromordinal(today.toordinal() + start - dpd))
        elif oldest is not None:
            candidates.append(date.fromordinal(oldest.toordinal() + grace + 1))
    if not candidates:
        return None
    return max(date.fromordinal(today.toordinal() + 1), min(candidates))


class Verdict(StrEnum):
    COMPLETED = "completed"
    BROKEN = "broken"
    KEPT = "kept"


@dataclass(frozen=True)
class Receipt:
    amount: Decimal
    posted_at: datetime
    posted_on: date  # in the customer's calendar
    reversed: bool


def plan_verdict(
    total: Decimal,
    agreed_at: datetime,
    instalments: Sequence[tuple[date, Decimal]],
    receipts: Sequence[Receipt],
    today: date,
    grace: int,
) -> Verdict | None:
    """A plan is completed once what was paid since it was agreed covers its total, broken once
    that falls short of the plan instalments past their grace, and otherwise still running."""
    paid = sum((r.amount for r in receipts if not r.reversed and r.posted_at >= agreed_at), ZERO)
    due_so_far = sum((x for d, x in instalments if (today - d).days > grace), ZERO)
    if paid >= total:
        return Verdict.COMPLETED
    if paid < due_so_far:
        return Verdict.BROKEN
    return None


def promise_verdict(
    amount: Decimal, made_at: datetime, due_date: date, receipts: Sequence[Receipt], today: date
) -> Verdict | None:
    """A promise is kept by payments since it was made, posted by its date in the customer's
    calendar, reaching its amount; broken the day after its date; pending until then."""
    paid = sum(
        (
            r.amount
            for r in receipts
            if not r.reversed and r.posted_at >= made_at and r.posted_on <= due_date
        ),
        ZERO,
    )
    if paid >= amount:
        return Verdict.KEPT
    if today > due_date:
        return Verdict.BROKEN
    return None


def resumed_paused_days(before: Before, today: date) -> int:
    """The paused days an account carries once the plan that paused it is settled."""
    if before.paused_since is None:
        return before.paused_days
    return before.paused_days + (today - before.paused_since).days
