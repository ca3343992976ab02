"""Propensity to pay: a logistic model whose coefficients are data, so a collections manager can
read, and a model risk reviewer can check, exactly why an account got its score. The shipped
model (``services/scheduler/data/propensity.yaml``) was written by hand; fitted ones
(``python -m services.scheduler.models fit``) have the same shape plus how they were made:
training window, outcome, held-out metrics, and the contact rates by segment, channel and hour.

:func:`features` is the one definition of every feature, used both by the scheduler when it
scores and by the fitting when it learns, so a model is always applied to what it was fitted on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

CHANNELS = ("sms", "email", "voice", "letter", "field_visit")
# Every feature the scheduler computes (a model may use any of them, and no other).
FEATURES: tuple[str, ...] = (
    "credit_score_per_100",  # (credit score - neutral) / 100; neutral when the bank sent none
    "days_past_due_per_30",
    "payments_90d",  # payments received in the last 90 days (capped at 6)
    "broken_promises",  # capped at 5
    "kept_promises",  # capped at 5
    "right_party_contacts",  # conversations with the customer (capped at 10)
    "failed_contacts",  # failed, bounced, returned or unanswered (capped at 20)
    "log_overdue",  # log10(1 + amount overdue)
    "times_late",  # instalments missed before (capped at 10)
    "contacts",  # contact attempts of any outcome (capped at 30)
    *(f"last_channel_{c}" for c in CHANNELS),  # 1 for the channel of the last contact
    "last_hour_morning",  # the last contact reached the customer 08:00-12:00 local
    "last_hour_evening",  # ... 18:00-22:00 local
)


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ContactRate(_Data):
    """One row of the contact table: contacts of one channel at one local hour to customers of
    one segment, how many reached the customer and how many were followed by a payment."""

    segment: str
    channel: Literal["sms", "email", "voice", "letter", "field_visit"]
    hour: Annotated[int, Field(ge=0, le=23)]
    contacts: Annotated[int, Field(ge=1)]
    right_party_rate: Annotated[float, Field(ge=0, le=1)]
    payment_rate: Annotated[float, Field(ge=0, le=1)]


class Training(_Data):
    start: datetime  # the first decision point it learned from
    end: datetime  # the instant its labels were known by (history read up to here)
    decisions: int
    held_out_from: datetime  # decisions from here on were not fitted on, only evaluated


class Model(_Data):
    version: Annotated[int, Field(ge=1)]
    kind: Literal["hand-written", "fitted"] = "hand-written"
    description: str = ""
    features: Annotated[tuple[str, ...], Field(min_length=1)]
    intercept: float
    coefficients: dict[str, float]  # feature -> weight (on the log-odds scale)
    neutral_credit_score: float = 650.0  # used when the bank sent none
    bands: dict[str, float]  # band -> lowest score, e.g. {"high": 0.6, "medium": 0.3, "low": 0}
    # what the model predicts: a payment of at least what is overdue within this many days
    outcome_days: Annotated[int, Field(ge=1, le=365)] | None = None
    training: Training | None = None
    metrics: dict[str, object] | None = None
    # credit-score segments (lowest score each) and the contact table by segment, channel, hour
    segments: dict[str, int] = {"prime": 700, "near_prime": 600, "subprime": 0}
    contact_rates: tuple[ContactRate, ...] = ()

    @model_validator(mode="after")
    def _features_known_and_weighted(self) -> Self:
        for name in self.features:
            if name not in FEATURES:
                raise ValueError(f"features: {name} is not a feature the scheduler computes")
            if name not in self.coefficients:
                raise ValueError(f"coefficients: lacks {name}, one of the model's features")
        for name in self.coefficients:
            if name not in self.features:
                raise ValueError(f"coefficients: {name} is not one of the model's features")
        if not {"high", "medium", "low"} <= set(self.bands):
            raise ValueError("bands: needs high, medium and low")
        return self

    def segment_of(self, credit_score: float | None) -> str:
        credit = self.neutral_credit_score if credit_score is None else credit_score
        for name, low in sorted(self.segments.items(), key=lambda kv: -kv[1]):
            if credit >= low:
                return name
        return min(self.segments.items(), key=lambda kv: kv[1])[0]


@dataclass(frozen=True)
class Inputs:
    credit_score: float | None
    days_past_due: int
    payments_90d: int
    broken_promises: int
    kept_promises: int
    right_party_contacts: int
    failed_contacts: int
    overdue: Decimal = Decimal(0)
    times_late: int = 0
    contacts: int = 0
    last_channel: str | None = None
    last_local_hour: int | None = None


@dataclass(frozen=True)
class Score:
    value: Decimal  # probability of paying, 0..1, four places
    band: str
    model_version: int
    inputs: dict[str, float | int | str | Decimal | None]
    contributions: dict[str, float]


def features(inputs: Inputs, neutral_credit_score: float = 650.0) -> dict[str, float]:
    credit = inputs.credit_score if inputs.credit_score is not None else neutral_credit_score
    hour = inputs.last_local_hour
    return {
        "credit_score_per_100": (credit - neutral_credit_score) / 100,
        "days_past_due_per_30": inputs.days_past_due / 30,
        "payments_90d": float(min(inputs.payments_90d, 6)),
        "broken_promises": float(min(inputs.broken_promises, 5)),
        "kept_promises": float(min(inputs.kept_promises, 5)),
        "right_party_contacts": float(min(inputs.right_party_contacts, 10)),
        "failed_contacts": float(min(inputs.failed_contacts, 20)),
        "log_overdue": math.log10(1 + max(0.0, float(inputs.overdue))),
        "times_late": float(min(inputs.times_late, 10)),
        "contacts": float(min(inputs.contacts, 30)),
        **{f"last_channel_{c}": float(inputs.last_channel == c) for c in CHANNELS},
        "last_hour_morning": float(hour is not None and 8 <= hour < 12),
        "last_hour_evening": float(hour is not None and 18 <= hour < 22),
    }


def probability(values: Mapping[str, float], model: Model) -> float:
    log_odds = model.intercept + sum(model.coefficients[f] * values[f] for f in model.features)
    return 1 / (1 + math.exp(-max(-50.0, min(50.0, log_odds))))


def band_of(p: float, model: Model) -> str:
    return max(
        ((lowest, name) for name, lowest in model.bands.items() if p >= lowest),
        default=(0.0, "low"),
    )[1]


def score(inputs: Inputs, model: Model) -> Score:
    values = features(inputs, model.neutral_credit_score)
    contributions = {name: model.coefficients[name] * values[name] for name in model.features}
    p = probability(values, model)
    # a shallow copy of the fields: asdict's deep copy costs more than the whole model here
    return Score(
        Decimal(str(round(p, 4))),
        band_of(p, model),
        model.version,
        dict(vars(inputs)),
        contributions,
    )
