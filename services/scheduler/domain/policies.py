"""The scheduler's second tier of rules: what an account's pending steps do when the ledger's
news arrives. Pure functions returning intents; the service layer carries them out and records
each decision with the rule it cites.

- a payment that clears what is overdue ends the treatment; a part payment earns a breather;
- a promise to pay holds every step until the day after the promised date;
- a bucket change restarts the treatment (a new bucket may call for another path); a return to
  current ends it;
- a broken promise resumes the held steps at once, or restarts the treatment if none is left.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from services.scheduler.domain.compliance import Pause, Settle

DEFAULT_BREATHER_DAYS = 3


@dataclass(frozen=True)
class Defer:
    """Move every pending step earlier than ``until`` to ``until``."""

    until: datetime
    rule: str


@dataclass(frozen=True)
class Cancel:
    """Cancel the pending steps, citing the pack's settle rule for ``why``."""

    why: str


@dataclass(frozen=True)
class Restart:
    """Start the treatment for the account's segment again (it replaces the one in force)."""


@dataclass(frozen=True)
class Resume:
    """Fire the held steps now."""


def after_payment(total_overdue: Decimal, part_payment: Settle, now: datetime) -> Defer | Cancel:
    if total_overdue == 0:
        return Cancel("nothing_overdue")
    return Defer(now + timedelta(days=part_payment.days or DEFAULT_BREATHER_DAYS), part_payment.id)


def promise_hold(due_date: date, pending: Pause) -> Defer:
    """Nothing until the day after the promised date; the engine checks the promise then."""
    return Defer(datetime.combine(due_date + timedelta(days=1), time.min, UTC), pending.id)


def after_bucket_change(
    bucket: str, treatment_bucket: str | None, pending_steps: int
) -> Cancel | Restart | None:
    if bucket == "current":
        return Cancel("nothing_overdue")
    if treatment_bucket != bucket or not pending_steps:
        return Restart()
    return None


def after_broken_promise(resumed_steps: int) -> Resume | Restart:
    return Resume() if resumed_steps else Restart()
