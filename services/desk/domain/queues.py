"""Work items and their order: the priority (weights as data), what a collector's outcome
reports to the notifier, and where a visit is (its district). Pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from shared.events import Outcome

DATA = Path(__file__).resolve().parent.parent / "data"


class DeskOutcome(StrEnum):
    """What a collector or a field agent logs: the one vocabulary of the desk's forms."""

    NO_ANSWER = "no_answer"
    WRONG_PARTY = "wrong_party"
    RIGHT_PARTY = "right_party"
    PROMISE = "promise"
    PLAN = "plan"
    HARDSHIP = "hardship"
    DISPUTE = "dispute"
    CALLBACK = "callback"
    REFUSAL = "refusal"
    NOT_AT_HOME = "not_at_home"  # a visit: nobody opened
    MOVED = "moved"  # a visit: the customer no longer lives there


# what each reports to the notifier, as any partner's disposition
REPORTS: dict[DeskOutcome, Outcome] = {
    DeskOutcome.NO_ANSWER: Outcome.NO_ANSWER,
    DeskOutcome.WRONG_PARTY: Outcome.WRONG_PARTY,
    DeskOutcome.RIGHT_PARTY: Outcome.RIGHT_PARTY,
    DeskOutcome.PROMISE: Outcome.PROMISE_TO_PAY,
    DeskOutcome.PLAN: Outcome.PLAN_ACCEPTED,
    DeskOutcome.HARDSHIP: Outcome.HARDSHIP,
    DeskOutcome.DISPUTE: Outcome.DISPUTE,
    DeskOutcome.CALLBACK: Outcome.CALLBACK,
    DeskOutcome.REFUSAL: Outcome.REFUSED,
    DeskOutcome.NOT_AT_HOME: Outcome.NO_ANSWER,
    DeskOutcome.MOVED: Outcome.WRONG_PARTY,
}
CALL_OUTCOMES = [o for o in DeskOutcome if o not in (DeskOutcome.NOT_AT_HOME, DeskOutcome.MOVED)]
VISIT_OUTCOMES = list(DeskOutcome)


@dataclass(frozen=True)
class Weights:
    """How much each fact adds to an item's priority (``data/priority.yaml``)."""

    base: Decimal
    broken_promise: Decimal
    per_thousand_overdue: Decimal
    overdue_cap: Decimal
    per_day_past_due: Decimal
    days_past_due_cap: Decimal
    low_propensity: Decimal
    expiring_within_hours: Decimal
    expiring: Decimal
    callback: Decimal
    hardship: Decimal

    @classmethod
    def load(cls, path: Path = DATA / "priority.yaml") -> Weights:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))["weights"]
        return cls(**{k: Decimal(str(v)) for k, v in data.items()})


@dataclass(frozen=True)
class Facts:
    total_overdue: Decimal
    days_past_due: int
    not_after: datetime
    purpose: str | None = None
    broken_promise: bool = False
    propensity: Decimal | None = None  # 0..1 when the case carries a score


def priority(facts: Facts, weights: Weights, now: datetime) -> tuple[Decimal, dict[str, str]]:
    """The item's priority and what made it up (shown to the team lead)."""
    parts: dict[str, Decimal] = {"base": weights.base}
    if facts.broken_promise:
        parts["broken_promise"] = weights.broken_promise
    parts["overdue"] = min(
        weights.overdue_cap, facts.total_overdue / 1000 * weights.per_thousand_overdue
    )
    parts["days_past_due"] = min(
        weights.days_past_due_cap, facts.days_past_due * weights.per_day_past_due
    )
    if facts.propensity is not None and facts.propensity < Decimal("0.3"):
        parts["low_propensity"] = weights.low_propensity
    hours_left = Decimal((facts.not_after - now).total_seconds()) / 3600
    if hours_left <= weights.expiring_within_hours:
        parts["expiring"] = weights.expiring
    if facts.purpose == "callback":
        parts["callback"] = weights.callback
    if facts.purpose == "hardship":
        parts["hardship"] = weights.hardship
    total = sum(parts.values(), Decimal(0)).quantize(Decimal("0.0001"))
    return total, {k: str(v.quantize(Decimal("0.01"))) for k, v in parts.items()}


def district(postal_address: str | None) -> str:
    """The part of a postal address a field day is grouped by: the district or city (the
    second component from the end of a comma-separated address), else the whole."""
    if not postal_address:
        return "unknown"
    parts = [p.strip() for p in postal_address.split(",") if p.strip()]
    if len(parts) >= 3:
        return parts[-2]
    return parts[-1] if parts else "unknown"


def status_body(
    event_id: str, contact_id: str, outcome: DeskOutcome, at: datetime, detail: dict[str, Any]
) -> dict[str, Any]:
    """The partner webhook's body for an outcome (the notifier's status webhook)."""
    body: dict[str, Any] = {
        "event_id": event_id,
        "contact_id": contact_id,
        "status": REPORTS[outcome].value,
        "occurred_at": at.isoformat(),
    }
    return body | {k: v for k, v in detail.items() if v is not None}
