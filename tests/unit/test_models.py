"""Fitted propensity models: the history replayed into decision points without leakage, a
deterministic fit, a model file that round-trips, a model missing a feature refused, and a
fitted model that ranks simulated customers better than the hand-written one."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from decimal import Decimal
from functools import cache

import pytest
from pydantic import ValidationError
from sklearn.metrics import roc_auc_score

from services.scheduler.bootstrap import load_model
from services.scheduler.domain import choice, learning, scoring
from services.scheduler.domain.learning import History
from services.scheduler.domain.scoring import ContactRate
from services.scheduler.models import fit as fitting
from shared.envelope import CloudEvent, new_event
from shared.events import PaymentReceived
from tests.support.histories import history

PARAMS = fitting.FitParams.load()


@cache
def events(customers: int, seed: int) -> tuple[CloudEvent, ...]:
    return tuple(history(customers, seed))


@cache
def replayed(customers: int, seed: int) -> History:
    return learning.replay(events(customers, seed), PARAMS.outcome_days)


def test_fitting_is_deterministic_for_a_seed() -> None:
    hand = load_model()
    first = fitting.dump(fitting.fit(replayed(1500, 5), PARAMS, 2, hand))
    again = fitting.dump(fitting.fit(learning.replay(history(1500, 5), 10), PARAMS, 2, hand))
    other = fitting.dump(fitting.fit(replayed(1500, 6), PARAMS, 2, hand))
    assert first == again
    assert first != other


def test_a_model_file_round_trips() -> None:
    model = fitting.fit(replayed(1500, 5), PARAMS, 7, load_model())
    back = fitting.load(fitting.dump(model))
    assert back == model
    assert back.version == 7
    assert back.kind == "fitted"
    assert back.training is not None
    assert back.training.decisions > 0
    points = replayed(1500, 5).decisions[:50]
    assert fitting.predict(back, points) == fitting.predict(model, points)


def test_a_model_lacking_a_weight_for_one_of_its_features_is_refused_with_its_name() -> None:
    document = load_model().model_dump() | {"features": [*load_model().features, "times_late"]}
    with pytest.raises(ValidationError, match="lacks times_late"):
        scoring.Model.model_validate(document)
    unknown = load_model().model_dump()
    unknown["features"] = [*unknown["features"], "shoe_size"]
    unknown["coefficients"] = unknown["coefficients"] | {"shoe_size": 1.0}
    with pytest.raises(ValidationError, match="shoe_size is not a feature the scheduler computes"):
        scoring.Model.model_validate(unknown)


def test_no_feature_uses_information_from_after_its_decision_point() -> None:
    """Each decision point is replayed again from the history cut at its instant, and again with
    a windfall added after it: its inputs do not change."""
    full = events(400, 8)
    points = replayed(400, 8).decisions
    sample = random.Random(1).sample(points, 40)
    for point in sample:
        cut = [e for e in full if learning.ordered([e])[0][0] <= point.at]
        windfall = new_payment(point, point.at + timedelta(seconds=1))
        for variant in (cut, [*full, windfall]):
            again = [
                p
                for p in learning.replay(variant, PARAMS.outcome_days).decisions
                if (p.account_id, p.at, p.trigger) == (point.account_id, point.at, point.trigger)
            ]
            assert again, point
            assert again[0].inputs == point.inputs


def test_the_outcome_is_read_from_the_payments_after_the_decision_only() -> None:
    points = [p for p in replayed(400, 8).decisions if p.paid is False]
    point = points[0]
    before = new_payment(point, point.at - timedelta(hours=1))
    late = new_payment(point, point.at + timedelta(days=PARAMS.outcome_days, hours=1))
    soon = new_payment(point, point.at + timedelta(days=1))

    def outcome(extra: CloudEvent) -> bool | None:
        found = learning.replay([*events(400, 8), extra], PARAMS.outcome_days).decisions
        return next(p.paid for p in found if (p.account_id, p.at) == (point.account_id, point.at))

    assert outcome(before) is False
    assert outcome(late) is False
    assert outcome(soon) is True


def new_payment(point: learning.DecisionPoint, at: datetime) -> CloudEvent:
    return new_event(
        PaymentReceived(
            account_id=point.account_id,
            customer_id="C-windfall",
            payment_id=f"P-windfall-{point.account_id}",
            amount=point.overdue + Decimal(1000),
            currency="CNY",
            total_overdue=Decimal(0),
            posted_at=at,
        ),
        source="/test",
        key=point.account_id,
        time=at,
    )


def test_the_fitted_model_ranks_simulated_customers_better_than_the_hand_written_one() -> None:
    """On held-out decision points of simulated customers (whose response the simulator's
    parameters decide), the fitted model's AUC exceeds the hand-written one's by more than
    twice the standard error of the difference, from a paired bootstrap of these points."""
    hand = load_model()
    history_ = replayed(6000, 3)
    model = fitting.fit(history_, PARAMS, 2, hand)
    _, held = fitting.split(history_, PARAMS.held_out_share)
    labels = [bool(p.paid) for p in held]
    mine, theirs = fitting.predict(model, held), fitting.predict(hand, held)
    gain = roc_auc_score(labels, mine) - roc_auc_score(labels, theirs)
    draws = random.Random(11)
    diffs = []
    for _ in range(200):
        pick = [draws.randrange(len(held)) for _ in held]
        y = [labels[i] for i in pick]
        diffs.append(
            roc_auc_score(y, [mine[i] for i in pick]) - roc_auc_score(y, [theirs[i] for i in pick])
        )
    mean = sum(diffs) / len(diffs)
    se = (sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1)) ** 0.5
    assert gain > 2 * se, (gain, se)
    assert model.metrics is not None
    held_out = model.metrics["held_out"]
    assert isinstance(held_out, dict)
    assert held_out["auc"] == pytest.approx(roc_auc_score(labels, mine), abs=1e-4)


def test_the_fitted_bands_hold_the_hand_written_models_shares() -> None:
    hand = load_model()
    history_ = replayed(3000, 4)
    model = fitting.fit(history_, PARAMS, 2, hand)
    train, _ = fitting.split(history_, PARAMS.held_out_share)

    def shares(m: scoring.Model) -> dict[str, float]:
        bands = [scoring.band_of(p, m) for p in fitting.predict(m, train)]
        return {b: bands.count(b) / len(bands) for b in ("high", "medium", "low")}

    for band, share in shares(hand).items():
        assert shares(model)[band] == pytest.approx(share, abs=0.02)


def test_the_contact_table_counts_reach_and_payment_by_segment_channel_and_hour() -> None:
    history_ = replayed(3000, 4)
    rows = learning.contact_table(history_, load_model(), PARAMS.outcome_days)
    assert {r.channel for r in rows} == {"sms", "voice", "email", "letter"}
    assert sum(r.contacts for r in rows) == sum(
        1
        for a, _, _, at, _ in history_.contacts
        if history_.end and at + timedelta(days=PARAMS.outcome_days) <= history_.end
    )
    voice = [r for r in rows if r.channel == "voice"]
    by_segment = {
        s: sum(r.right_party_rate * r.contacts for r in voice if r.segment == s)
        / sum(r.contacts for r in voice if r.segment == s)
        for s in ("prime", "subprime")
    }
    # the simulator's prime customers answer more often than its subprime ones (0.45 vs 0.3)
    assert by_segment["prime"] > by_segment["subprime"]


def test_scores_in_the_scheduler_and_in_the_fitting_are_the_same_function() -> None:
    model = fitting.fit(replayed(1500, 5), PARAMS, 2, load_model())
    point = replayed(1500, 5).decisions[0]
    served = scoring.score(point.inputs, model)
    assert float(served.value) == pytest.approx(fitting.predict(model, [point])[0], abs=5e-5)
    assert served.model_version == 2


def _rate(channel: str, hour: int, paid: float, n: int = 40, segment: str = "prime") -> ContactRate:
    return ContactRate.model_validate(
        {
            "segment": segment,
            "channel": channel,
            "hour": hour,
            "contacts": n,
            "right_party_rate": 0.5,
            "payment_rate": paid,
        }
    )


def test_channels_rank_by_payment_rate_for_the_segment_and_unknown_ones_come_last() -> None:
    rates = [
        _rate("sms", 9, 0.1),
        _rate("voice", 9, 0.3, 10),
        _rate("voice", 14, 0.1, 30),
        _rate("email", 9, 0.9, segment="subprime"),
    ]
    ranked = choice.rank_channels(rates, "prime", ["email", "sms", "voice"])
    assert [(r.channel, r.payment_rate, r.contacts) for r in ranked] == [
        ("voice", 0.15, 40),
        ("sms", 0.1, 40),
        ("email", None, 0),
    ]


def test_a_later_hour_is_chosen_only_when_it_pays_better_than_now() -> None:
    rates = [
        _rate("sms", 9, 0.1),
        _rate("sms", 13, 0.2),
        _rate("sms", 19, 0.2),
        _rate("sms", 21, 0.5),
    ]
    assert choice.best_hour(rates, "prime", "sms", 9, 20) == choice.HourChoice(13, 0.2, 0.1)
    assert choice.best_hour(rates, "prime", "sms", 9, 21) == choice.HourChoice(21, 0.5, 0.1)
    assert choice.best_hour(rates, "prime", "sms", 13, 20) is None  # 19 is no better than 13
    assert choice.best_hour(rates, "prime", "voice", 9, 21) is None  # nothing known
