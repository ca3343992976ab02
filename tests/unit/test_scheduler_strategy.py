"""Strategies as data: validation with exact error paths, segment matching, deterministic
champion/challenger assignment, and the propensity score."""

from __future__ import annotations

import copy
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from services.scheduler.bootstrap import load_model
from services.scheduler.domain import scoring
from services.scheduler.domain.strategy import (
    AccountFacts,
    Strategy,
    assign_variant,
    plan,
    treatment_for,
)
from services.scheduler.strategies import FILES, load_files

SHIPPED = yaml.safe_load((FILES / "early-and-late.yaml").read_text())


def strategy(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = copy.deepcopy(SHIPPED)
    document.update(changes)
    return document


def error_paths(document: dict[str, Any]) -> list[str]:
    with pytest.raises(ValidationError) as caught:
        Strategy.model_validate(document)
    return [".".join(str(p) for p in e["loc"]) for e in caught.value.errors()]


def test_shipped_strategy_files_are_valid() -> None:
    assert [s.id for s in load_files()] == ["early-and-late"]


def named(document: dict[str, Any], name: str) -> tuple[int, dict[str, Any]]:
    """The champion's treatment called ``name``, with its index."""
    treatments = document["variants"][0]["treatments"]
    index = next(i for i, t in enumerate(treatments) if t["name"] == name)
    return index, treatments[index]


def test_an_unknown_channel_is_refused_with_its_exact_path() -> None:
    document = strategy()
    n, treatment = named(document, "early-high-risk")
    treatment["steps"][2]["channel"] = "pigeon"
    assert error_paths(document) == [f"variants.0.treatments.{n}.steps.2.channel"]


def test_weights_that_do_not_sum_to_100_are_refused() -> None:
    document = strategy()
    document["variants"][1]["weight"] = 30
    with pytest.raises(ValidationError, match="sum to 100"):
        Strategy.model_validate(document)


def test_two_champions_are_refused() -> None:
    document = strategy()
    document["variants"][1]["role"] = "champion"
    with pytest.raises(ValidationError, match="exactly one variant must be the champion"):
        Strategy.model_validate(document)


def test_an_offer_without_its_terms_is_refused() -> None:
    document = strategy()
    n, treatment = named(document, "early-low-risk")
    treatment["steps"][3]["offer"] = {"kind": "settlement"}
    paths = error_paths(document)
    assert paths == [f"variants.0.treatments.{n}.steps.3.offer"]


def test_steps_out_of_day_order_are_refused() -> None:
    document = strategy()
    n, treatment = named(document, "early-low-risk")
    steps = treatment["steps"]
    steps[0]["day"], steps[1]["day"] = 5, 1
    assert error_paths(document) == [f"variants.0.treatments.{n}"]


def test_an_offer_beyond_its_treatments_limits_is_refused_at_publish_with_the_reason() -> None:
    document = strategy()
    n, treatment = named(document, "early-low-risk")
    treatment["steps"][3]["offer"] = {"kind": "installments", "installments": 24}
    with pytest.raises(ValidationError) as caught:
        Strategy.model_validate(document)
    error = caught.value.errors()[0]
    assert ".".join(map(str, error["loc"])) == f"variants.0.treatments.{n}"
    assert (
        "steps.3.offer: outside the treatment's limits (installments: 24 is more than 6)"
        in (error["msg"])
    )


def test_a_reminder_before_the_due_date_offers_nothing_and_never_calls() -> None:
    document = strategy()
    _, treatment = named(document, "pre-due")
    treatment["steps"][0]["channel"] = "voice"
    with pytest.raises(ValidationError, match=r"steps\.0\.channel: a reminder before the due date"):
        Strategy.model_validate(document)
    document = strategy()
    _, treatment = named(document, "pre-due")
    treatment["steps"][0]["offer"] = {"kind": "installments", "installments": 3}
    with pytest.raises(ValidationError, match=r"steps\.0\.offer: a reminder before the due date"):
        Strategy.model_validate(document)


def test_a_treatment_is_chosen_only_for_its_trigger() -> None:
    parsed = Strategy.model_validate(SHIPPED)
    champion = parsed.variants[0]
    current = AccountFacts("current", "high", None, "CN", Decimal(0), times_late=0)
    late_before = AccountFacts("current", "high", None, "CN", Decimal(0), times_late=2)
    behind = AccountFacts("1-29", "high", None, "CN", Decimal(100))
    assert getattr(treatment_for(champion, current, "due_soon"), "name", None) == "pre-due"
    assert getattr(treatment_for(champion, late_before, "due_soon"), "name", None) == (
        "pre-due-often-late"
    )
    assert getattr(treatment_for(champion, behind, "hardship"), "name", None) == "hardship"
    assert getattr(treatment_for(champion, behind), "name", None) == "early-low-risk"
    # the challenger is the control group: no reminder before the due date
    assert treatment_for(parsed.variants[1], current, "due_soon") is None


def test_unknown_fields_are_refused_not_ignored() -> None:
    assert error_paths(strategy(colour="blue")) == ["colour"]


def test_champion_challenger_split_is_within_one_point_over_100000_accounts() -> None:
    parsed = Strategy.model_validate(SHIPPED)
    counts = Counter(assign_variant(parsed, f"ACC-{i:06d}").name for i in range(100_000))
    for variant in parsed.variants:
        share = counts[variant.name] / 100_000 * 100
        assert abs(share - variant.weight) < 1.0, (variant.name, share)


def test_assignment_is_the_same_in_a_fresh_process() -> None:
    """No per-process salt (such as Python's str hash): a restart assigns the same variants."""
    parsed = Strategy.model_validate(SHIPPED)
    here = [assign_variant(parsed, f"ACC-{i}").name for i in range(300)]
    script = (
        "import yaml; from services.scheduler.domain.strategy import Strategy, assign_variant;"
        "from services.scheduler.strategies import FILES;"
        "s = Strategy.model_validate(yaml.safe_load((FILES / 'early-and-late.yaml').read_text()));"
        "print(','.join(assign_variant(s, f'ACC-{i}').name for i in range(300)))"
    )
    there = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert there.split(",") == here


def test_a_new_version_reshuffles_assignment_independently() -> None:
    first = Strategy.model_validate(SHIPPED)
    second = Strategy.model_validate(strategy(version=SHIPPED["version"] + 1))
    moved = sum(
        assign_variant(first, f"A{i}").name != assign_variant(second, f"A{i}").name
        for i in range(10_000)
    )
    assert 2000 < moved < 4400  # about 2 * 0.8 * 0.2 of accounts change variant


def test_a_new_version_with_the_old_salt_moves_only_the_share_given_to_a_new_variant() -> None:
    """A challenger added between the champion and the control group with the old version as
    its salt takes its accounts from the champion's share only: the control group stays."""
    first = Strategy.model_validate(SHIPPED)
    document = strategy(version=SHIPPED["version"] + 1) | {"salt": str(SHIPPED["version"])}
    champion, control = document["variants"]
    added = copy.deepcopy(champion) | {"name": "fitted", "role": "challenger", "weight": 20}
    document["variants"] = [champion | {"weight": 60}, added, control]
    second = Strategy.model_validate(document)
    pairs = Counter(
        (assign_variant(first, f"A{i}").name, assign_variant(second, f"A{i}").name)
        for i in range(10_000)
    )
    assert set(pairs) == {("champion", "champion"), ("champion", "fitted"), (control["name"],) * 2}
    assert 1800 < pairs[("champion", "fitted")] < 2200


def test_segments_pick_the_first_matching_treatment() -> None:
    champion = Strategy.model_validate(SHIPPED).variants[0]

    def facts(bucket: str, band: str) -> AccountFacts:
        return AccountFacts(bucket, band, "credit_card", "CN", Decimal("100"))

    assert treatment_for(champion, facts("1-29", "high")).name == "early-low-risk"  # type: ignore[union-attr]
    assert treatment_for(champion, facts("1-29", "low")).name == "early-high-risk"  # type: ignore[union-attr]
    assert treatment_for(champion, facts("60-89", "low")).name == "mid"  # type: ignore[union-attr]
    assert treatment_for(champion, facts("current", "low")) is None


def test_a_treatment_plans_each_step_on_its_day() -> None:
    treatment = Strategy.model_validate(SHIPPED).variants[0].treatments[0]
    start = datetime(2026, 12, 1, 3, tzinfo=UTC)
    planned = plan(treatment, start)
    assert [p.due_at for p in planned] == [start + timedelta(days=s.day) for s in treatment.steps]
    assert [p.step_no for p in planned] == list(range(1, len(treatment.steps) + 1))


def test_score_rises_with_credit_and_falls_with_broken_promises() -> None:
    model = load_model()

    def p(**kw: Any) -> Decimal:
        base: dict[str, Any] = {
            "credit_score": 650,
            "days_past_due": 10,
            "payments_90d": 0,
            "broken_promises": 0,
            "kept_promises": 0,
            "right_party_contacts": 0,
            "failed_contacts": 0,
        }
        return scoring.score(scoring.Inputs(**(base | kw)), model).value

    assert p(credit_score=780) > p() > p(credit_score=520)
    assert p(broken_promises=2) < p()
    assert p(days_past_due=100) < p()
    missing = scoring.score(scoring.Inputs(None, 10, 0, 0, 0, 0, 0), model)
    assert missing.value == p()  # no credit score: the neutral one, and the inputs say so
    assert missing.inputs["credit_score"] is None
    assert 0 <= missing.value <= 1
    assert missing.band in model.bands
