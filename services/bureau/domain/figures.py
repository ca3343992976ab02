"""What a record says about an account, field by field, from what the bureau knows of it at the
cycle: the CDIA Credit Reporting Resource Guide's meanings for an instalment loan (see
``../shared/domain-notes.md``), shared by the Metro 2 base segment and the CN record.

Pure: ``figures(statement, verdict, cycle_date)`` returns every reported amount, date and code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from itertools import pairwise
from statistics import median

# Account status by days past due at the Date of Account Information (Metro 2: 11 is 0-29).
_STATUS_STEPS = ((180, "84"), (150, "83"), (120, "82"), (90, "80"), (60, "78"), (30, "71"))
# The payment rating / history profile value of each status.
RATING_OF_STATUS = {"11": "0", "71": "1", "78": "2", "80": "3", "82": "4", "83": "5", "84": "6"}
DELINQUENT = frozenset(s for s in RATING_OF_STATUS if s != "11")
PAID = "13"


def status_for(days_past_due: int) -> str:
    for floor, status in _STATUS_STEPS:
        if days_past_due >= floor:
            return status
    return "11"


def rating_for(days_past_due: int) -> str:
    """The value of a month in the payment history profile (and the rating of a payoff)."""
    return RATING_OF_STATUS[status_for(days_past_due)]


def rating_of_bucket(bucket: str) -> str:
    """The rating of a ledger bucket ("30-59", "180+", "current", ...): that of its first day."""
    first = bucket.split("-")[0].rstrip("+")
    return rating_for(int(first)) if first.isdigit() else "0"


# Terms Frequency by the typical gap between due dates, in days.
_FREQUENCIES = (
    (range(6, 9), "W"),
    (range(13, 15), "B"),
    (range(15, 17), "E"),
    (range(27, 33), "M"),
    (range(58, 63), "L"),
    (range(89, 93), "Q"),
    (range(119, 124), "T"),
    (range(180, 185), "S"),
    (range(364, 367), "Y"),
)


def terms_frequency(dues: Sequence[date]) -> str:
    """``P`` for a single payment, else the code of the median gap between due dates (``M``
    where the gap fits no code)."""
    if len(dues) < 2:
        return "P"
    ordered = sorted(dues)
    gap = median((b - a).days for a, b in pairwise(ordered))
    return next((code for days, code in _FREQUENCIES if int(gap) in days), "M")


def instalment_due(dues: Sequence[date], amounts: Sequence[Decimal], on: date) -> Decimal:
    """The instalment of the period: the first one due on or after ``on``, else the last."""
    if not dues:
        return Decimal(0)
    pairs = sorted(zip(dues, amounts, strict=True))
    return next((amount for due, amount in pairs if due >= on), pairs[-1][1])


def previous_month(key: str, back: int) -> str:
    year, month = int(key[:4]), int(key[5:7])
    index = year * 12 + (month - 1) - back
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def history_profile(
    recorded: Mapping[str, str],
    information_date: date,
    cycle_days: Mapping[str, date],
    opened: date | None,
) -> str:
    """The 24 months before the month of the Date of Account Information, the latest first,
    each as it stood at that month's cycle: ``recorded`` holds the values of the cycles that
    looked at the account ("YYYY-MM" -> value); a cycle that did not look found it under 30
    days, ``0``. ``B`` before the account was open or before the first cycle, ``D`` for a
    month without a cycle after it."""
    first = min(cycle_days, default=None)
    this = information_date.strftime("%Y-%m")
    out = []
    for back in range(1, 25):
        month = previous_month(this, back)
        day = cycle_days.get(month)
        if day is None:
            out.append("B" if first is None or month < first else "D")
        elif opened is not None and opened > day:
            out.append("B")
        else:
            out.append(recorded.get(month, "0"))
    return "".join(out)


@dataclass(frozen=True)
class Statement:
    """What the bureau knows of an account at a cycle, from the ledger's events."""

    principal: Decimal | None
    opened_on: date | None
    dues: tuple[date, ...]
    amounts: tuple[Decimal, ...]
    balance: Decimal | None
    overdue: Decimal
    days_past_due: int
    first_delinquency: date | None
    plan_active: bool = False
    plan_dues: tuple[date, ...] = ()
    plan_amounts: tuple[Decimal, ...] = ()
    closed_rating: str | None = None
    last_payment_on: date | None = None
    last_payment_amount: Decimal | None = None
    paid_in_period: Decimal = Decimal(0)
    recorded: Mapping[str, str] | None = None


@dataclass(frozen=True)
class Figures:
    highest_credit: Decimal
    terms_duration: int
    terms_frequency: str
    scheduled_payment: Decimal
    actual_payment: Decimal
    status: str
    payment_rating: str
    history: str
    special_comment: str
    compliance_code: str
    current_balance: Decimal
    amount_past_due: Decimal
    information_date: date
    first_delinquency: date | None
    date_closed: date | None
    last_payment: date | None
    last_payment_amount: Decimal | None


def figures(
    s: Statement,
    status: str,
    compliance_code: str,
    special_comment: str,
    cycle_date: date,
    cycle_days: Mapping[str, date],
) -> Figures:
    """Every field of the record, as the CRRG defines it for an instalment loan:
    - Highest Credit: the principal at opening (never falls);
    - Terms: the schedule's number of instalments and its frequency;
    - Scheduled Monthly Payment: the instalment of the period (the plan's while a plan runs;
      zero once paid off); Actual Payment: what was paid in the period, net of reversals;
    - Current Balance: everything still owed, principal not yet due included; Amount Past Due;
    - 13 (paid, zero balance) carries the date it was paid as Date of Account Information and
      Date Closed, the rating it had when paid, and its date of first delinquency if it was
      paid behind; a delinquent status carries its date of first delinquency, 11 none."""
    paid_off = status == PAID
    information_date = (s.last_payment_on or cycle_date) if paid_off else cycle_date
    rating = (s.closed_rating or "0") if paid_off else ""
    if status in DELINQUENT or (paid_off and rating != "0"):
        first_delinquency = s.first_delinquency
    else:
        first_delinquency = None
    if paid_off:
        scheduled = Decimal(0)
    elif s.plan_active and s.plan_dues:
        scheduled = instalment_due(s.plan_dues, s.plan_amounts, cycle_date)
    else:
        scheduled = instalment_due(s.dues, s.amounts, cycle_date)
    return Figures(
        highest_credit=s.principal if s.principal is not None else sum(s.amounts, Decimal(0)),
        terms_duration=len(s.dues),
        terms_frequency=terms_frequency(s.dues),
        scheduled_payment=scheduled,
        actual_payment=s.paid_in_period,
        status=status,
        payment_rating=rating,
        history=history_profile(s.recorded or {}, information_date, cycle_days, s.opened_on),
        special_comment=special_comment,
        compliance_code=compliance_code,
        current_balance=Decimal(0) if paid_off else (s.balance or Decimal(0)),
        amount_past_due=Decimal(0) if paid_off else s.overdue,
        information_date=information_date,
        first_delinquency=first_delinquency,
        date_closed=information_date if paid_off else None,
        last_payment=s.last_payment_on,
        last_payment_amount=s.last_payment_amount,
    )
