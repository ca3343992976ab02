"""The notifier's pure parts: signatures, reply keywords, templates, offers, the breaker."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.notifier.domain import offers, replies, selfservice
from services.notifier.domain.breaker import Breaker
from services.notifier.domain.offers import Terms, plan_installments
from services.notifier.domain.templates import OPT_OUT_LINE, TEMPLATES, Renderer
from shared import signing

NOW = 1_800_000_000
BODY = b'{"event_id":"e1","contact_id":"c1","status":"delivered"}'


def test_a_signature_by_the_current_secret_verifies() -> None:
    header = signing.header_value("new", NOW, BODY)
    assert signing.verify(header, BODY, ["new"], NOW).ok


def test_during_a_rotation_either_secret_verifies_and_a_third_does_not() -> None:
    for secret in ("new", "old"):
        assert signing.verify(signing.header_value(secret, NOW, BODY), BODY, ["new", "old"], NOW).ok
    forged = signing.verify(signing.header_value("guess", NOW, BODY), BODY, ["new", "old"], NOW)
    assert (forged.ok, forged.reason) == (False, "signature does not match")


def test_a_signature_older_than_five_minutes_is_refused() -> None:
    header = signing.header_value("new", NOW - 301, BODY)
    assert signing.verify(header, BODY, ["new"], NOW).reason == (
        "signature timestamp outside the tolerance"
    )


def test_a_tampered_body_or_a_malformed_header_is_refused() -> None:
    header = signing.header_value("new", NOW, BODY)
    assert not signing.verify(header, BODY.replace(b"delivered", b"failed"), ["new"], NOW).ok
    for bad in (None, "", "v1=abc", f"t={NOW}", "t=soon,v1=abc"):
        assert not signing.verify(bad, BODY, ["new"], NOW).ok


@given(st.binary(max_size=300), st.text(max_size=80))
def test_no_random_header_verifies(body: bytes, header: str) -> None:
    assert not signing.verify(header, body, ["new"], NOW).ok


@pytest.mark.parametrize(
    "text", ["STOP", "stop", " Stop ", "TD", "td", "退订", "Unsubscribe", "stop!"]
)
def test_stop_words_in_chinese_and_english_opt_out(text: str) -> None:
    assert replies.intent(text) == "opt_out"


@pytest.mark.parametrize("text", ["DISPUTE", "not my debt", "异议", "这不是我的欠款"])
def test_dispute_words_open_a_dispute(text: str) -> None:
    assert replies.intent(text) == "dispute"


@pytest.mark.parametrize("text", ["YES", "yes please", "同意", "接受"])
def test_acceptance_words_accept_the_offer(text: str) -> None:
    assert replies.intent(text) == "accept_offer"


@pytest.mark.parametrize("text", ["who is this", "", "stopwatch for sale", "call me"])
def test_other_replies_mean_nothing(text: str) -> None:
    assert replies.intent(text) == "other"


def context() -> dict[str, object]:
    return {
        "full_name": "Wang Fang",
        "first_name": "Wang",
        "postal_address": "9 Lane",
        "creditor": "Arrears Bank",
        "account_tail": "1234",
        "overdue": Decimal("900.00"),
        "currency": "CNY",
        "days_past_due": 12,
        "offer_text": "3 payments",
        "due_date": "2026-12-15",
        "amount_due": Decimal("300.00"),
    }


TEMPLATE_FILES = sorted(Path(TEMPLATES).glob("*/*.j2"))


@pytest.mark.parametrize("path", TEMPLATE_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_template_renders_and_every_sms_and_email_carries_the_opt_out(path: Path) -> None:
    template, channel, _ = path.name.split(".")
    rendered = Renderer().render(template, channel, path.parent.name, context())
    assert "{{" not in rendered.body
    if channel in ("sms", "email"):
        assert rendered.body.endswith(OPT_OUT_LINE[(path.parent.name, channel)])
    if channel == "email":
        assert rendered.subject


def test_letters_tell_the_customer_how_to_dispute() -> None:
    for locale, word in (("en-US", "dispute"), ("zh-CN", "异议")):
        for template in ("arrears_letter", "final_notice", "validation_notice"):
            assert word in Renderer().render(template, "letter", locale, context()).body


def test_the_cn_bureau_pre_notice_cites_article_15() -> None:
    body = Renderer().render("bureau_pre_notice", "letter", "zh-CN", context()).body
    assert "第十五条" in body


def test_both_locales_have_the_same_templates() -> None:
    names = {
        locale: {p.name for p in TEMPLATE_FILES if p.parent.name == locale}
        for locale in ("zh-CN", "en-US")
    }
    assert names["zh-CN"] == names["en-US"]


@given(
    st.decimals(min_value=Decimal("0.01"), max_value=Decimal("1000000"), places=2),
    st.integers(2, 24),
)
def test_plan_instalments_sum_to_what_is_owed_in_whole_cents(owed: Decimal, n: int) -> None:
    schedule = plan_installments(Terms("installments", installments=n), owed, date(2026, 12, 1))
    assert len(schedule) == n
    assert sum(a for _, a in schedule) == owed
    assert all(a == a.quantize(Decimal("0.01")) and a >= 0 for _, a in schedule)
    dates = [d for d, _ in schedule]
    assert dates == sorted(dates)
    assert dates[0] == date(2026, 12, 8)


def test_a_settlement_is_one_instalment_of_its_share() -> None:
    terms = Terms("settlement", settlement_percent=Decimal(70))
    assert plan_installments(terms, Decimal("1000.00"), date(2026, 12, 1)) == [
        (date(2026, 12, 15), Decimal("700.00"))
    ]
    extension = plan_installments(
        Terms("extension", extension_days=30), Decimal("5"), date(2026, 12, 1)
    )
    assert extension == [(date(2026, 12, 1) + timedelta(days=30), Decimal("5"))]


def test_the_breaker_opens_after_repeated_failures_and_lets_a_trial_through_later() -> None:
    breaker = Breaker(threshold=3, cooldown=10)
    for t in range(3):
        assert breaker.allows(t)
        breaker.failed(t)
    assert not breaker.allows(5)
    assert breaker.allows(12.5)  # half-open
    breaker.succeeded()
    assert breaker.state == "closed"


def test_a_partner_disposition_means_delivered_and_names_the_events_it_implies() -> None:
    from decimal import Decimal

    from services.notifier.domain.status import meaning

    promised = meaning("promise_to_pay", "sent", "reminder_soft", Decimal("50.00"), True)
    assert (promised.delivery_status, promised.promise, promised.dispute) == (
        "delivered",
        True,
        False,
    )
    assert not meaning("promise_to_pay", "sent", "reminder_soft", None, True).promise
    assert meaning("dispute", "sent", "reminder_soft", None, False).dispute
    assert meaning("plan_accepted", "sent", "offer", None, False).plan
    assert meaning("bounced", "sent", "reminder_soft", None, False).delivery_status == "failed"
    assert meaning("sent", "sending", "reminder_soft", None, False).delivery_status == "sending"
    assert meaning("returned", "sent", "bureau_pre_notice", None, False).notice == "returned"
    assert meaning("delivered", "sent", "validation_notice", None, False).notice == "delivered"
    assert meaning("delivered", "sent", "reminder_soft", None, False).notice is None


# --- humane collection: hardship words, callback times, offer limits, the page's rules ----------


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("我失业了，这个月还不上", "unemployment"),
        ("下岗了", "unemployment"),
        ("住院了，下个月再说", "illness"),
        ("家里遭了洪水", "disaster"),
        ("最近困难", "other"),
        ("I lost my job last week", "unemployment"),
        ("in hospital until Friday", "illness"),
        ("HARDSHIP", "other"),
    ],
)
def test_hardship_words_in_either_language_give_their_reason(text: str, reason: str) -> None:
    reading = replies.read(text)
    assert (reading.intent, reading.reason) == ("hardship", reason)


def test_a_stop_still_wins_over_a_hardship_word() -> None:
    assert replies.intent("STOP 困难") == "opt_out"


NOON = datetime(2026, 12, 2, 4, 0, tzinfo=UTC)  # 12:00 in Shanghai, 23:00 the day before in NY


@pytest.mark.parametrize(
    ("text", "zone", "local"),
    [
        ("call me at 19:30", "Asia/Shanghai", (2026, 12, 2, 19, 30)),
        ("Call me at 9am", "Asia/Shanghai", (2026, 12, 3, 9, 0)),  # 09:00 has passed
        ("请晚上7点半给我打电话", "Asia/Shanghai", (2026, 12, 2, 19, 30)),
        ("明天上午10点回电", "Asia/Shanghai", (2026, 12, 3, 10, 0)),
        ("please call me tomorrow at 8pm", "America/New_York", (2026, 12, 2, 20, 0)),
    ],
)
def test_a_callback_time_is_read_in_the_customers_own_zone(
    text: str, zone: str, local: tuple[int, int, int, int, int]
) -> None:
    reading = replies.read(text, NOON, zone)
    assert reading.intent == "callback"
    assert reading.at == datetime(*local, tzinfo=ZoneInfo(zone))


def test_a_call_request_without_a_time_is_no_callback() -> None:
    assert replies.read("call me tomorrow", NOON, "Asia/Shanghai").intent == "other"


OFFER = {"kind": "installments", "installments": 6, "limits": {"max_installments": 12}}


def test_terms_within_an_offers_limits_are_taken_and_beyond_them_refused_naming_the_term() -> None:
    assert offers.chosen_terms(OFFER, None).installments == 6
    assert offers.chosen_terms(OFFER, offers.Terms("installments", installments=12)).installments
    with pytest.raises(offers.OfferRefused) as beyond:
        offers.chosen_terms(OFFER, offers.Terms("installments", installments=24))
    assert beyond.value.field == "installments"
    assert "24 is more than this offer allows (12)" in beyond.value.reason
    with pytest.raises(offers.OfferRefused) as kind:
        offers.chosen_terms(OFFER, offers.Terms("settlement", settlement_percent=Decimal(50)))
    assert kind.value.field == "kind"


def test_an_offer_without_limits_is_taken_only_as_offered() -> None:
    plain = {"kind": "settlement", "settlement_percent": "70"}
    assert offers.choices(plain) == {"settlement": (Decimal(70), Decimal(70))}
    with pytest.raises(offers.OfferRefused, match="below"):
        offers.chosen_terms(plain, offers.Terms("settlement", settlement_percent=Decimal(60)))


SECRET = "test-secret"


def test_a_link_names_only_its_contact_and_expires() -> None:
    token = selfservice.link_token(SECRET, "contact-1", NOON + timedelta(days=14))
    assert selfservice.read_link(SECRET, token, NOON) == "contact-1"
    with pytest.raises(selfservice.LinkInvalid) as expired:
        selfservice.read_link(SECRET, token, NOON + timedelta(days=14))
    assert expired.value.why == "expired"
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    with pytest.raises(selfservice.LinkInvalid) as bad:
        selfservice.read_link(SECRET, forged, NOON)
    assert bad.value.why == "invalid"
    with pytest.raises(selfservice.LinkInvalid):
        selfservice.read_link("another-secret", token, NOON)


def test_the_fifth_wrong_answer_locks_for_a_day_and_even_a_right_one_waits() -> None:
    key = "fingerprint-key"
    right = selfservice.answer_ref("birth_date", "1990-01-01", key)
    wrong = selfservice.answer_ref("birth_date", "1991-01-01", key)
    failures, locked = 0, None
    for n in range(1, 5):
        verdict = selfservice.check(right, wrong, failures, locked, NOON)
        failures, locked = verdict.failures, verdict.locked_until
        assert (verdict.ok, failures, locked) == (False, n, None)
    fifth = selfservice.check(right, wrong, failures, locked, NOON)
    assert fifth.locked_until == NOON + timedelta(hours=24)
    assert not selfservice.check(right, right, 5, fifth.locked_until, NOON + timedelta(hours=1)).ok
    later = selfservice.check(right, right, 5, fifth.locked_until, NOON + timedelta(hours=25))
    assert (later.ok, later.failures) == (True, 0)


def test_the_last_four_of_the_id_match_however_they_are_typed() -> None:
    key = "fingerprint-key"
    assert selfservice.answer_ref("national_id_last4", " 123x ", key) == selfservice.answer_ref(
        "national_id_last4", "123X", key
    )
    assert selfservice.answer_ref("national_id_last4", "12345", key) is None


def test_a_session_and_a_form_token_belong_to_one_link() -> None:
    cookie = selfservice.session_token(SECRET, "link-a", NOON + timedelta(minutes=30))
    assert selfservice.session_valid(SECRET, "link-a", cookie, NOON)
    assert not selfservice.session_valid(SECRET, "link-b", cookie, NOON)
    assert not selfservice.session_valid(SECRET, "link-a", cookie, NOON + timedelta(minutes=31))
    form = selfservice.form_token(SECRET, "link-a", cookie)
    assert selfservice.form_valid(SECRET, "link-a", cookie, form)
    assert not selfservice.form_valid(SECRET, "link-a", None, form)


def test_a_promise_on_the_page_is_positive_in_cents_and_within_thirty_days() -> None:
    today = NOON.date()
    assert selfservice.promise_terms("100.50", (today + timedelta(days=5)).isoformat(), today)
    for amount, day, field in (
        ("0", today, "amount"),
        ("10.001", today, "amount"),
        ("abc", today, "amount"),
        ("10", today + timedelta(days=31), "due_date"),
        ("10", today - timedelta(days=1), "due_date"),
    ):
        with pytest.raises(selfservice.PromiseRefused) as refused:
            selfservice.promise_terms(amount, day.isoformat(), today)
        assert refused.value.field == field
