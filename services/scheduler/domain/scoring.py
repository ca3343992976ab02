"""Propensity to pay: a transparent logistic model whose coefficients are data
(``services/scheduler/data/propensity.yaml``), so a collections manager can read, and a model
risk reviewer can check, exactly why an account got its score."""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    version: Annotated[int, Field(ge=1)]
    intercept: float
    coefficients: dict[str, float]  # feature -> weight (on the log-odds scale)
    neutral_credit_score: float = 650.0  # used when the bank sent none
    bands: dict[str, float]  # band -> lowest score, e.g. {"high": 0.6, "medium": 0.3, "low": 0}


@dataclass(frozen=True)
class Inputs:
    credit_score: float | None
    days_past_due: int
    payments_90d: int
    broken_promises: int
    kept_promises: int
    right_party_contacts: int
    failed_contacts: int


@dataclass(frozen=True)
class Score:
    value: Decimal  # probability of paying, 0..1, four places
    band: str
    model_version: int
    inputs: dict[str, float | int | None]
    contributions: dict[str, float]


def features(inputs: Inputs, model: Model) -> dict[str, float]:
    credit = inputs.credit_score if inputs.credit_score is not None else model.neutral_credit_score
    return {
        "credit_score_per_100": (credit - model.neutral_credit_score) / 100,
        "days_past_due_per_30": inputs.days_past_due / 30,
        "payments_90d": float(min(inputs.payments_90d, 6)),
        "broken_promises": float(min(inputs.broken_promises, 5)),
        "kept_promises": float(min(inputs.kept_promises, 5)),
        "right_party_contacts": float(min(inputs.right_party_contacts, 10)),
        "failed_contacts": float(min(inputs.failed_contacts, 20)),
    }


def score(inputs: Inputs, model: Model) -> Score:
    values = features(inputs, model)
    contributions = {name: model.coefficients.get(name, 0.0) * x for name, x in values.items()}
    log_odds = model.intercept + sum(contributions.values())
    probability = 1 / (1 + math.exp(-max(-50.0, min(50.0, log_odds))))
    value = Decimal(str(round(probability, 4)))
    band = max(
        ((lowest, name) for name, lowest in model.bands.items() if probability >= lowest),
        default=(0.0, "low"),
    )[1]
    # a shallow copy of the fields: asdict's deep copy costs more than the whole model here
    return Score(value, band, model.version, dict(vars(inputs)), contributions)
