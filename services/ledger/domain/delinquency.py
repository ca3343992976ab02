"""Days past due and delinquency buckets."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

# (lowest days past due, bucket name), ascending. The evaluation SQL is generated from this table,
# so the database and the domain cannot disagree about where a bucket starts.
BUCKETS: tuple[tuple[int, str], ...] = (
    (0, "current"),
    (1, "1-29"),
    (30, "30-59"),
    (60, "60-89"),
    (90, "90-119"),
    (120, "120-149"),
    (150, "150-179"),
    (180, "180+"),
)


def bucket_of(days_past_due: int) -> str:
    if days_past_due < 0:
        raise ValueError("days past due cannot be negative")
    name = BUCKETS[0][1]
    for lowest, bucket in BUCKETS:
        if days_past_due >= lowest:
            name = bucket
    return name


def bucket_case_sql(column: str) -> str:
    """``bucket_of`` as a SQL CASE over an integer column."""
    whens = " ".join(
        f"WHEN {column} >= {lowest} THEN '{name}'" for lowest, name in reversed(BUCKETS[1:])
    )
    return f"(CASE {whens} ELSE '{BUCKETS[0][1]}' END)"


def next_bucket_start(days_past_due: int) -> int | None:
    """The days past due at which the next bucket starts (None past the last one)."""
    return next((lowest for lowest, _ in BUCKETS if lowest > days_past_due), None)


def next_bucket_start_sql(column: str) -> str:
    """``next_bucket_start`` as a SQL CASE over an integer column."""
    whens = " ".join(f"WHEN {column} < {lowest} THEN {lowest}" for lowest, _ in BUCKETS[1:])
    return f"(CASE {whens} END)"


def local_date(instant: datetime, timezone: str) -> date:
    """The customer's calendar date at ``instant``: due dates are days in their timezone."""
    if instant.tzinfo is None:
        raise ValueError("instant must be timezone-aware")
    return instant.astimezone(ZoneInfo(timezone)).date()


@dataclass(frozen=True)
class Due:
    due_date: date
    outstanding: Decimal


def days_past_due(dues: Iterable[Due], today: date, grace_days: int = 0) -> int:
    """Days since the oldest unpaid instalment fell due, once its grace period has run out.

    Within the grace period the account is not delinquent (0); after it, the count starts from
    the due date itself, as bureaus and regulators count it.
    """
    unpaid = [d.due_date for d in dues if d.outstanding > 0]
    if not unpaid:
        return 0
    oldest = min(unpaid)
    if (today - oldest).days <= grace_days:
        return 0
    return (today - oldest).days


def overdue(dues: Sequence[Due], today: date) -> Decimal:
    """What has fallen due and is still unpaid (grace or not)."""
    return sum((d.outstanding for d in dues if d.due_date < today), Decimal(0))
