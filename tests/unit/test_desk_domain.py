"""The desk's pure rules: negotiation authority, the queue's priority, visit districts, the
partner webhook an outcome makes, and training's personas and conduct scoring."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from services.desk.bootstrap import authorities
from services.desk.domain import people, queues, training
from services.desk.domain.people import Authority, Role, Terms
from services.desk.domain.queues import DeskOutcome, Facts, Weights
from services.desk.domain.training import Move
from services.desk.settings import DEV_DESK_KEY, DEV_DESK_SECRET
from services.notifier import settings as notifier_settings
from shared.events import DISPOSITIONS

NOW = datetime(2026, 12, 2, 2, 0, tzinfo=UTC)
PERSONAS = training.load_personas()
CONDUCT = training.load_conduct()
OFFER = {
    "offer_id": "o1",
    "kind": "installments",
    "installments": 6,
    "limits": {"max_installments": 12, "min_settlement_percent": "50", "max_extension_days": 90},
}


# --- authority -------------------------------------------------------------------------------


def test_a_plan_within_the_collectors_authority_is_agreed_at_once() -> None:
    collector = authorities()["collector"]
    decision = people.decide_plan(Terms("installments", 6), collector, OFFER)
    assert decision.verdict == "agree"


def test_a_plan_beyond_the_collectors_authority_but_within_the_treatments_waits() -> None:
    collector = authorities()["collector"]
    decision = people.decide_plan(Terms("installments", 12), collector, OFFER)
    assert decision.verdict == "approval"
    assert decision.reasons == ("installments: 12 is more than 6 (your authority)",)
    lead = authorities()["team_lead"]
    assert people.decide_plan(Terms("installments", 12), lead, OFFER).verdict == "agree"


def test_no_one_agrees_a_plan_beyond_the_treatments_limits() -> None:
    manager = authorities()["manager"]  # 24 instalments of authority, the treatment allows 12
    decision = people.decide_plan(Terms("installments", 18), manager, OFFER)
    assert decision.verdict == "refused"
    assert "the treatment's limit" in decision.reasons[0]
    low = people.decide_plan(Terms("settlement", settlement_percent=Decimal(40)), manager, OFFER)
    assert low.verdict == "refused"


def test_an_offer_without_limits_allows_only_its_own_terms() -> None:
    offer = {"offer_id": "o", "kind": "installments", "installments": 3}
    lead = authorities()["team_lead"]
    assert people.decide_plan(Terms("installments", 3), lead, offer).verdict == "agree"
    assert people.decide_plan(Terms("installments", 4), lead, offer).verdict == "refused"


def test_a_collector_works_only_their_skills_countries_and_languages() -> None:
    person = people.Person(
        "wang", "Wang", Role.COLLECTOR, "", ("zh-CN",), ("CN",), ("voice",), Authority()
    )
    assert people.may_work(person, "voice", "CN", "zh-CN")
    assert not people.may_work(person, "field_visit", "CN", "zh-CN")
    assert not people.may_work(person, "voice", "US", "zh-CN")
    assert not people.may_work(person, "voice", "CN", "en-US")
    trainer = people.Person("t", "T", Role.TRAINER, "", (), (), ("voice",), Authority())
    assert not people.may_work(trainer, "voice", "CN", "zh-CN")


def test_the_national_id_is_only_ever_shown_masked() -> None:
    assert people.mask_national_id("1234") == "••••••••1234"
    assert people.mask_national_id(None) == "not on file"


# --- queues ----------------------------------------------------------------------------------


def test_a_broken_promise_and_a_callback_rank_before_a_larger_balance() -> None:
    weights = Weights.load()
    late = NOW + timedelta(hours=10)
    big, _ = queues.priority(Facts(Decimal("20000"), 40, late), weights, NOW)
    broken, why = queues.priority(
        Facts(Decimal("500"), 40, late, broken_promise=True), weights, NOW
    )
    callback, _ = queues.priority(Facts(Decimal("500"), 40, late, "callback"), weights, NOW)
    assert broken > big
    assert callback > big
    assert why["broken_promise"] == "30.00"


def test_an_item_about_to_expire_moves_up() -> None:
    weights = Weights.load()
    calm, _ = queues.priority(Facts(Decimal("500"), 10, NOW + timedelta(hours=8)), weights, NOW)
    closing, why = queues.priority(
        Facts(Decimal("500"), 10, NOW + timedelta(hours=1)), weights, NOW
    )
    assert closing - calm == weights.expiring
    assert "expiring" in why


def test_visits_are_grouped_by_the_district_of_the_address() -> None:
    assert queues.district("12 Nanjing Rd, Huangpu, Shanghai") == "Huangpu"
    assert queues.district("7 Scenario Street, Springfield, IL 62701") == "Springfield"
    assert queues.district("Chaoyang") == "Chaoyang"
    assert queues.district(None) == "unknown"


def test_every_desk_outcome_reports_a_disposition_the_notifier_takes() -> None:
    for outcome in DeskOutcome:
        body = queues.status_body("e", "c", outcome, NOW, {"promise_amount": None})
        assert body["status"] in DISPOSITIONS
        assert "promise_amount" not in body  # a missing detail is left out, not sent as null
    assert queues.REPORTS[DeskOutcome.MOVED] == "wrong_party"
    assert queues.REPORTS[DeskOutcome.NOT_AT_HOME] == "no_answer"


def test_the_notifiers_dev_desk_partner_matches_the_desks_dev_credentials() -> None:
    desk = notifier_settings.dev_desk()
    assert desk.name == notifier_settings.DESK_PARTNER == "desk"
    assert desk.api_key.get_secret_value() == DEV_DESK_KEY
    assert [s.get_secret_value() for s in desk.webhook_secrets] == [DEV_DESK_SECRET]


def test_the_desk_partner_takes_only_its_countries_and_treatments() -> None:
    desk = notifier_settings.dev_desk(countries=["CN"], treatments=["late"])
    assert desk.serves("voice", "CN", "late")
    assert not desk.serves("voice", "CN", "early-low-risk")
    assert not desk.serves("voice", "US", "late")
    assert not desk.serves("sms", "CN", "late")


# --- training --------------------------------------------------------------------------------


def play(persona: str, moves: list[tuple[Move, str]], locale: str = "en-US", **kw: str):
    p = PERSONAS[persona]
    s = training.begin(p, locale, 7, kw.get("local_time"))
    for move, text in moves:
        if s.ended:
            break
        s = training.play(s, p, CONDUCT, move, text)
    return s, training.score(s, p, CONDUCT)


def test_every_persona_speaks_both_locales_and_the_six_the_seed_asks_for_exist() -> None:
    assert {
        "unemployed",
        "refuses_to_talk",
        "disputer",
        "willing_payer",
        "elderly_confused",
        "angry",
    } <= set(PERSONAS)
    for p in PERSONAS.values():
        for locale in training.LOCALES:
            assert {"greeting", "verified", "agree", "decline", "other", "hangup"} <= set(
                p.lines[locale]
            ), (p.key, locale)


def test_a_banned_phrase_is_deducted_citing_its_rule_in_either_language() -> None:
    _, english = play(
        "willing_payer",
        [
            (Move.VERIFY_IDENTITY, ""),
            (Move.FREE_TEXT, "Pay now or we will sue you"),
            (Move.END_CALL, ""),
        ],
    )
    assert [d.rule for d in english.deductions] == ["TR.threat"]
    _, chinese = play(
        "willing_payer",
        [(Move.VERIFY_IDENTITY, ""), (Move.FREE_TEXT, "我是警察，马上还钱"), (Move.END_CALL, "")],
        "zh-CN",
    )
    assert [d.rule for d in chinese.deductions] == ["TR.impersonation"]
    _, borrow = play(
        "willing_payer",
        [
            (Move.VERIFY_IDENTITY, ""),
            (Move.FREE_TEXT, "Just borrow from a friend"),
            (Move.END_CALL, ""),
        ],
    )
    assert [d.rule for d in borrow.deductions] == ["TR.borrow-to-repay"]


def test_naming_the_debt_before_verifying_identity_is_deducted() -> None:
    _, score = play("willing_payer", [(Move.NAME_DEBT, ""), (Move.VERIFY_IDENTITY, "")])
    assert [d.rule for d in score.deductions] == ["TR.identity.before-debt"]


def test_telling_the_relative_who_answers_is_a_third_party_disclosure() -> None:
    _, score = play("elderly_confused", [(Move.FREE_TEXT, "She has an overdue loan payment")])
    assert "TR.third-party" in [d.rule for d in score.deductions]


def test_a_customer_in_hardship_who_is_not_offered_the_hardship_path_costs_points() -> None:
    moves = [(Move.VERIFY_IDENTITY, ""), (Move.ASK_REASON, ""), (Move.OFFER_PLAN, "")]
    session, plan = play("unemployed", moves)
    assert session.outcome == "plan"
    assert [d.rule for d in plan.deductions] == ["TR.hardship-path"]
    session, path = play("unemployed", [*moves[:2], (Move.OFFER_HARDSHIP, "")])
    assert session.outcome == "hardship"
    assert path.deductions == ()
    assert path.total == 100 > plan.total


def test_going_on_with_a_call_outside_the_hours_is_deducted_once() -> None:
    _, score = play(
        "willing_payer",
        [(Move.VERIFY_IDENTITY, ""), (Move.NAME_DEBT, ""), (Move.END_CALL, "")],
        local_time="21:30",
    )
    assert [d.rule for d in score.deductions] == ["TR.hours"]


def test_pressure_makes_the_customer_who_refuses_to_talk_hang_up_and_a_callback_lands() -> None:
    pressed, pressed_score = play(
        "refuses_to_talk", [(Move.VERIFY_IDENTITY, ""), (Move.NAME_DEBT, ""), (Move.OFFER_PLAN, "")]
    )
    assert pressed.ended
    assert pressed.outcome == "refusal"
    assert pressed_score.outcome_points == 0
    gentle, gentle_score = play(
        "refuses_to_talk", [(Move.VERIFY_IDENTITY, ""), (Move.SCHEDULE_CALLBACK, "")]
    )
    assert gentle.outcome == "callback"
    assert gentle_score.total == 100


def test_a_session_is_the_same_for_the_same_seed_and_round_trips() -> None:
    moves = [(Move.VERIFY_IDENTITY, ""), (Move.NAME_DEBT, ""), (Move.ASK_REASON, "")]
    a, _ = play("angry", moves, "zh-CN")
    b, _ = play("angry", moves, "zh-CN")
    assert a == b
    again = training.Session.from_json(a.persona, a.locale, a.seed, a.local_time, a.as_json())
    assert again == a


def test_a_move_after_the_end_is_refused() -> None:
    session, _ = play("willing_payer", [(Move.END_CALL, "")])
    with pytest.raises(ValueError, match="ended"):
        training.play(session, PERSONAS["willing_payer"], CONDUCT, Move.NAME_DEBT)


def test_banned_phrases_name_only_known_rules(tmp_path) -> None:
    bad = tmp_path / "conduct.yaml"
    text = (training.DATA / "conduct.yaml").read_text(encoding="utf-8")
    bad.write_text(text + "\n  TR.nonsense:\n    en-US: [x]\n", encoding="utf-8")
    with pytest.raises(ValueError, match="unknown rules"):
        training.load_conduct(bad)
