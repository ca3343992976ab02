"""Strategies as data: which treatment path each segment of delinquent accounts gets, in which
variants (a champion and its challengers) and with what traffic split.

A strategy file is validated against :class:`Strategy` (its JSON schema is published in the
docs); errors name the exact path of the offending field. Assignment to a variant is a pure
function of the account id and the strategy version, so it is stable across restarts and
replicas and can be recomputed to audit it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.scheduler.domain.compliance import Channel

BUCKETS = ("current", "1-29", "30-59", "60-89", "90-119", "120-149", "150-179", "180+")
Bucket = Literal["current", "1-29", "30-59", "60-89", "90-119", "120-149", "150-179", "180+"]
ScoreBand = Literal["high", "medium", "low"]
Slug = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_\-]{0,63}$")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Offer(_Model):
    kind: Literal["installments", "extension", "settlement"]
    installments: Annotated[int, Field(ge=2, le=60)] | None = None  # kind installments
    extension_days: Annotated[int, Field(ge=1, le=180)] | None = None  # kind extension
    settlement_percent: Annotated[Decimal, Field(gt=0, le=100)] | None = None  # kind settlement

    @model_validator(mode="after")
    def _terms_match_kind(self) -> Self:
        needed = {
            "installments": "installments",
            "extension": "extension_days",
            "settlement": "settlement_percent",
        }[self.kind]
        if getattr(self, needed) is None:
            raise ValueError(f"an offer of kind {self.kind} needs {needed}")
        return self


class Step(_Model):
    day: Annotated[int, Field(ge=0, le=365)]  # days after the treatment starts
    channel: Channel
    template: Slug
    offer: Offer | None = None


class Segment(_Model):
    """Which accounts a treatment is for; an empty list or a missing bound matches all."""

    buckets: tuple[Bucket, ...] = ()
    score_bands: tuple[ScoreBand, ...] = ()
    products: tuple[str, ...] = ()
    countries: tuple[Annotated[str, Field(pattern=r"^[A-Z]{2}$")], ...] = ()
    min_overdue: Annotated[Decimal, Field(ge=0)] | None = None
    max_overdue: Annotated[Decimal, Field(ge=0)] | None = None


class Treatment(_Model):
    name: Slug
    segment: Segment = Segment()
    steps: Annotated[tuple[Step, ...], Field(min_length=1, max_length=50)]

    @model_validator(mode="after")
    def _days_ascend(self) -> Self:
        days = [step.day for step in self.steps]
        if days != sorted(days):
            raise ValueError("steps must be in ascending order of day")
        return self


class Variant(_Model):
    name: Slug
    role: Literal["champion", "challenger"]
    weight: Annotated[int, Field(ge=0, le=100)]  # percent of traffic
    treatments: Annotated[tuple[Treatment, ...], Field(min_length=1)]


class Strategy(_Model):
    id: Slug
    version: Annotated[int, Field(ge=1)]
    description: str = ""
    variants: Annotated[tuple[Variant, ...], Field(min_length=1, max_length=10)]

    @model_validator(mode="after")
    def _one_champion_and_weights_sum_to_100(self) -> Self:
        if [v.role for v in self.variants].count("champion") != 1:
            raise ValueError("exactly one variant must be the champion")
        if sum(v.weight for v in self.variants) != 100:
            raise ValueError("variant weights must sum to 100")
        if len({v.name for v in self.variants}) != len(self.variants):
            raise ValueError("variant names must be unique")
        return self


@dataclass(frozen=True)
class AccountFacts:
    """What segmentation looks at."""

    bucket: str
    score_band: str
    product: str | None
    country: str | None
    overdue: Decimal


def assign_variant(strategy: Strategy, account_id: str) -> Variant:
    """Deterministic: SHA-256 of (account, strategy id, version) picks a point in [0, 10000),
    which the cumulative weights divide. Same inputs, same variant, on any replica, any day."""
    digest = hashlib.sha256(f"{account_id}|{strategy.id}|{strategy.version}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") % 10_000
    cumulative = 0
    for variant in strategy.variants:
        cumulative += variant.weight * 100
        if point < cumulative:
            return variant
    return strategy.variants[-1]  # unreachable when weights sum to 100


def matches(segment: Segment, facts: AccountFacts) -> bool:
    return (
        (not segment.buckets or facts.bucket in segment.buckets)
        and (not segment.score_bands or facts.score_band in segment.score_bands)
        and (not segment.products or facts.product in segment.products)
        and (not segment.countries or facts.country in segment.countries)
        and (segment.min_overdue is None or facts.overdue >= segment.min_overdue)
        and (segment.max_overdue is None or facts.overdue <= segment.max_overdue)
    )


def treatment_for(variant: Variant, facts: AccountFacts) -> Treatment | None:
    """The variant's first treatment whose segment matches, or None."""
    return next((t for t in variant.treatments if matches(t.segment, facts)), None)


@dataclass(frozen=True)
class PlannedStep:
    step_no: int
    due_at: datetime
    step: Step


def plan(treatment: Treatment, start: datetime) -> list[PlannedStep]:
    """The treatment's steps as timers from ``start``; the compliance engine moves each one into
    an allowed window when it fires."""
    return [
        PlannedStep(n, start + timedelta(days=step.day), step)
        for n, step in enumerate(treatment.steps, 1)
    ]


def schema() -> dict[str, object]:
    return Strategy.model_json_schema()
