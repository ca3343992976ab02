"""Fitting a propensity model on the replayed history: a regularised logistic regression
(scikit-learn) trained on the earlier decision points and judged on the later ones."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, roc_auc_score
from sklearn.preprocessing import StandardScaler

from services.scheduler.domain import learning, scoring
from services.scheduler.domain.learning import DecisionPoint, History
from services.scheduler.domain.scoring import FEATURES, Model, Training

PARAMS = Path(__file__).resolve().parents[1] / "data" / "fitting.yaml"


class FitParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    outcome_days: Annotated[int, Field(ge=1, le=365)] = 10
    held_out_share: Annotated[float, Field(gt=0, lt=1)] = 0.3
    C: Annotated[float, Field(gt=0)] = 0.5
    features: tuple[str, ...] = FEATURES
    min_contacts: Annotated[int, Field(ge=1)] = 20

    @classmethod
    def load(cls, path: Path = PARAMS) -> FitParams:
        return cls.model_validate(yaml.safe_load(path.read_text()))


class NotEnoughHistory(ValueError):
    pass


def matrix(points: Sequence[DecisionPoint], names: Sequence[str], neutral: float) -> Any:
    return np.array(
        [[scoring.features(p.inputs, neutral)[f] for f in names] for p in points], dtype=float
    )


def predict(model: Model, points: Sequence[DecisionPoint]) -> list[float]:
    return [
        scoring.probability(scoring.features(p.inputs, model.neutral_credit_score), model)
        for p in points
    ]


def split(
    history: History, held_out_share: float
) -> tuple[list[DecisionPoint], list[DecisionPoint]]:
    """The labelled decision points, earlier ones to fit on and the latest to judge by, cut at
    an instant (two points of one instant fall on the same side)."""
    labelled = sorted(
        (p for p in history.decisions if p.paid is not None),
        key=lambda p: (p.at, p.account_id, p.trigger, p.inputs.times_late),
    )
    if not labelled:
        return [], []
    cut = labelled[min(len(labelled) - 1, int(len(labelled) * (1 - held_out_share)))].at
    return [p for p in labelled if p.at < cut], [p for p in labelled if p.at >= cut]


@dataclass(frozen=True)
class Judgement:
    decisions: int
    payers: int
    auc: float | None
    auc_se: float | None
    brier: float | None
    calibration: list[dict[str, object]]


def judge(model: Model, points: Sequence[DecisionPoint]) -> Judgement:
    labels = [bool(p.paid) for p in points]
    scores = predict(model, points)
    payers = sum(labels)
    if not points or payers in (0, len(points)):
        return Judgement(len(points), payers, None, None, None, [])
    value = float(roc_auc_score(labels, scores))
    return Judgement(
        len(points),
        payers,
        round(value, 4),
        round(learning.auc_se(value, payers, len(points) - payers), 4),
        round(float(brier_score_loss(labels, scores)), 4),
        learning.calibration(labels, scores, model),
    )


def _bands(hand: Model, train: Sequence[DecisionPoint], fitted: list[float]) -> dict[str, float]:
    """Thresholds that put the same share of the training decisions in each band as the
    hand-written model did: the fitted model changes who is in a band, not how many, so a
    strategy's segments keep their sizes."""
    hand_scores = predict(hand, train)
    ordered = sorted(fitted)

    def at_share(share: float) -> float:
        if share <= 0:
            return 1.0
        index = max(0, min(len(ordered) - 1, round(len(ordered) * (1 - share))))
        return round(ordered[index], 6)

    high = sum(1 for s in hand_scores if s >= hand.bands["high"]) / len(hand_scores)
    upper = sum(1 for s in hand_scores if s >= hand.bands["medium"]) / len(hand_scores)
    return {"high": at_share(high), "medium": min(at_share(upper), at_share(high)), "low": 0.0}


def fit(history: History, params: FitParams, version: int, hand: Model) -> Model:
    """A model fitted on the earlier labelled decision points of ``history``, with its metrics
    on the later ones beside the hand-written model's on the same points."""
    train, held = split(history, params.held_out_share)
    labels = np.array([bool(p.paid) for p in train])
    if len(train) < 20 or labels.all() or not labels.any():
        raise NotEnoughHistory(
            f"{len(train)} labelled decision points to fit on, {int(labels.sum())} of them paid: "
            "too few to fit a model"
        )
    names = list(params.features)
    x = matrix(train, names, hand.neutral_credit_score)
    scaler = StandardScaler().fit(x)
    regression = LogisticRegression(C=params.C, solver="lbfgs", max_iter=5000)
    regression.fit(scaler.transform(x), labels)
    # back to the features' own scale, so the file reads like the hand-written one
    weights = regression.coef_[0] / scaler.scale_
    intercept = float(regression.intercept_[0] - float(np.dot(weights, scaler.mean_)))
    draft = Model(
        version=version,
        kind="fitted",
        features=tuple(names),
        intercept=round(intercept, 6),
        coefficients={n: round(float(w), 6) for n, w in zip(names, weights, strict=True)},
        neutral_credit_score=hand.neutral_credit_score,
        bands=hand.bands,
        segments=hand.segments,
    )
    bands = _bands(hand, train, predict(draft, train))
    draft = draft.model_copy(update={"bands": bands})
    mine, theirs = judge(draft, held), judge(hand, held)
    end = history.end
    assert end is not None  # there were decision points
    table = [
        r
        for r in learning.contact_table(history, draft, params.outcome_days)
        if r.contacts >= params.min_contacts
    ]
    return Model.model_validate(
        draft.model_dump()
        | {
            "description": (
                f"fitted on {len(train)} decision points; paid within {params.outcome_days} days"
            ),
            "outcome_days": params.outcome_days,
            "training": Training(
                start=train[0].at,
                end=end,
                decisions=len(train),
                held_out_from=held[0].at if held else end,
            ),
            "metrics": {
                "held_out": vars(mine),
                "hand_written_on_the_same": vars(theirs) | {"version": hand.version},
                "regularisation_C": params.C,
            },
            "contact_rates": table,
        }
    )


def dump(model: Model) -> str:
    return yaml.safe_dump(model.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def load(text: str) -> Model:
    return Model.model_validate(yaml.safe_load(text))
