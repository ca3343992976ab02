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

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from services.scheduler.domain.compliance import HardshipPause, Pause, Settle

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
    bucket: str, treatment_bucket: str | None, pending_steps: int, in_hardship: bool = False
) -> Cancel | Restart | None:
    """A customer in a hardship pause keeps the hardship treatment through a bucket change:
    the breather and its offers are what they were promised."""
    if bucket == "current":
        return Cancel("nothing_overdue")
    if in_hardship:
        return None
    if treatment_bucket != bucket or not pending_steps:
        return Restart()
    return None


def hardship_pause(now: datetime, breather: HardshipPause, until: date | None, tz: str) -> Defer:
    """No contact for the breather's days, or until the day after the date the customer gave
    (in their calendar), whichever is later."""
    end = now + timedelta(days=breather.days)
    if until is not None:
        end = max(end, datetime.combine(until + timedelta(days=1), time.min, ZoneInfo(tz)))
    return Defer(end.astimezone(UTC), breather.id)


def reminder_lapsed(context: Mapping[str, Any] | None, now: datetime, tz: str) -> bool:
    """A reminder whose instalment fell due (in the customer's calendar) before it could go
    out is not sent: a reminder is for before the due date, never after it."""
    due = (context or {}).get("due_date")
    if not due:
        return False
    return now.astimezone(ZoneInfo(tz)).date() > date.fromisoformat(str(due))


def after_broken_promise(resumed_steps: int) -> Resume | Restart:
    return Resume() if resumed_steps else Restart()
