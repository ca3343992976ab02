"""The notifier's pure parts: signatures, reply keywords, templates, offers, the breaker."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.notifier.domain import replies, signing
from services.notifier.domain.breaker import Breaker
from services.notifier.domain.offers import Terms, plan_installments
from services.notifier.domain.templates import OPT_OUT_LINE, TEMPLATES, Renderer

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
