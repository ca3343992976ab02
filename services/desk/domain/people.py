"""Who works at the desk, what each role may see and do, and how far each may bend an offer.
Pure: the pages and the API ask here, then act."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any


class Role(StrEnum):
    COLLECTOR = "collector"
    FIELD_AGENT = "field_agent"
    TEAM_LEAD = "team_lead"
    MANAGER = "manager"
    TRAINER = "trainer"
    TRAINEE = "trainee"


# who works the queues (calls for collectors, visits for field agents; a team lead can step in)
WORKS_QUEUES = {Role.COLLECTOR, Role.FIELD_AGENT, Role.TEAM_LEAD}
APPROVES = {Role.TEAM_LEAD, Role.MANAGER}
SEES_FIGURES = {Role.TEAM_LEAD, Role.MANAGER}
TRAINS = {Role.TRAINEE, Role.COLLECTOR, Role.FIELD_AGENT, Role.TEAM_LEAD}
SEES_TRAINING = {Role.TRAINER, Role.TEAM_LEAD, Role.MANAGER}


@dataclass(frozen=True)
class Authority:
    """The most a person may agree on their own; beyond it, a plan waits for approval."""

    max_installments: int = 0
    min_settlement_percent: Decimal = Decimal(100)
    max_extension_days: int = 0

    @classmethod
    def of(cls, data: dict[str, Any] | None) -> Authority:
        data = data or {}
        return cls(
            int(data.get("max_installments", 0)),
            Decimal(str(data.get("min_settlement_percent", 100))),
            int(data.get("max_extension_days", 0)),
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "max_installments": self.max_installments,
            "min_settlement_percent": str(self.min_settlement_percent),
            "max_extension_days": self.max_extension_days,
        }


@dataclass(frozen=True)
class Person:
    username: str
    display_name: str
    role: Role
    team: str
    languages: tuple[str, ...]
    countries: tuple[str, ...]
    skills: tuple[str, ...]
    authority: Authority


@dataclass(frozen=True)
class Terms:
    kind: str  # installments, extension, settlement
    installments: int | None = None
    extension_days: int | None = None
    settlement_percent: Decimal | None = None


def beyond(terms: Terms, limit: Authority) -> list[str]:
    """Why ``terms`` go beyond ``limit`` (empty: within it)."""
    reasons = []
    if terms.kind == "installments" and (terms.installments or 0) > limit.max_installments:
        reasons.append(f"installments: {terms.installments} is more than {limit.max_installments}")
    if terms.kind == "extension" and (terms.extension_days or 0) > limit.max_extension_days:
        reasons.append(
            f"extension_days: {terms.extension_days} is more than {limit.max_extension_days}"
        )
    if terms.kind == "settlement" and (
        terms.settlement_percent is None or terms.settlement_percent < limit.min_settlement_percent
    ):
        reasons.append(
            f"settlement_percent: {terms.settlement_percent} is less than "
            f"{limit.min_settlement_percent}"
        )
    return reasons


def treatment_limit(offer: dict[str, Any] | None) -> Authority:
    """The treatment's own limits on an offer (what no one may go beyond, not even with
    approval); an offer without limits allows only its own terms."""
    offer = offer or {}
    limits = offer.get("limits") or {}
    return Authority(
        int(limits.get("max_installments") or offer.get("installments") or 0),
        Decimal(
            str(limits.get("min_settlement_percent") or offer.get("settlement_percent") or 100)
        ),
        int(limits.get("max_extension_days") or offer.get("extension_days") or 0),
    )


def within_both(person: Authority, treatment: Authority) -> Authority:
    """What a person may offer on their own: their authority inside the treatment's limits."""
    return Authority(
        min(person.max_installments, treatment.max_installments),
        max(person.min_settlement_percent, treatment.min_settlement_percent),
        min(person.max_extension_days, treatment.max_extension_days),
    )


@dataclass(frozen=True)
class PlanDecision:
    verdict: str  # agree, approval, refused
    reasons: tuple[str, ...] = ()


def decide_plan(terms: Terms, person: Authority, offer: dict[str, Any] | None) -> PlanDecision:
    """A plan within the person's authority (inside the treatment's limits) is agreed at once;
    within the treatment's limits but beyond the person's, it waits for approval; beyond the
    treatment's, no one may agree it."""
    limit = treatment_limit(offer)
    outside = beyond(terms, limit)
    if outside:
        return PlanDecision("refused", tuple(f"{r} (the treatment's limit)" for r in outside))
    mine = beyond(terms, within_both(person, limit))
    if mine:
        return PlanDecision("approval", tuple(f"{r} (your authority)" for r in mine))
    return PlanDecision("agree")


def may_work(person: Person, channel: str, country: str | None, locale: str | None) -> bool:
    """Matched by skill (the channel), country and language."""
    if person.role not in WORKS_QUEUES or channel not in person.skills:
        return False
    if person.countries and country not in person.countries:
        return False
    return not person.languages or locale is None or locale in person.languages


def mask_national_id(last4: str | None) -> str:
    return f"••••••••{last4}" if last4 else "not on file"
