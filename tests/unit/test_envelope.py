from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from shared import topics
from shared.envelope import (
    MAX_VALUE_BYTES,
    InvalidEvent,
    _validated,
    decode,
    encode,
    new_event,
)
from shared.events import REGISTRY, ClockSet, PaymentPosted
from tests.support.factories import payment_posted


def with_header(
    headers: list[tuple[str, bytes]], name: str, value: bytes | None
) -> list[tuple[str, bytes]]:
    kept = [(k, v) for k, v in headers if k != name]
    return kept if value is None else [*kept, (name, value)]


def test_event_survives_a_round_trip_through_a_kafka_record() -> None:
    event = payment_posted(customer="C42", amount="1234.56")
    key, value, headers = encode(event)
    back = decode(key, value, headers)
    assert back == event
    assert back.data.amount == Decimal("1234.56")  # type: ignore[attr-defined]


def test_record_carries_the_binary_mode_cloudevents_headers() -> None:
    event = payment_posted(customer="C42")
    key, value, headers = encode(event)
    names = dict(headers)
    assert key == b"C42"
    assert names["ce_specversion"] == b"1.0"
    assert names["ce_type"] == b"payment.posted"
    assert names["ce_source"] == b"/core-banking/test"
    assert names["ce_subject"] == b"A-C42"
    assert names["content-type"] == b"application/json"
    assert json.loads(value)["currency"] == "CNY"


def test_money_is_written_as_a_decimal_string_never_a_float() -> None:
    event = payment_posted(amount="0.10")
    _, value, _ = encode(event)
    assert json.loads(value)["amount"] == "0.10"


def test_event_topic_comes_from_the_registry() -> None:
    assert payment_posted().topic == topics.CORE_BANKING
    clock = new_event(
        ClockSet(now=datetime(2026, 12, 1, tzinfo=UTC)),
        source="/t",
        key="clock",
        time=datetime(2026, 12, 1, tzinfo=UTC),
    )
    assert clock.topic == topics.CLOCK


@pytest.mark.parametrize("missing", ["ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time"])
def test_record_missing_a_required_header_is_rejected_naming_it(missing: str) -> None:
    key, value, headers = encode(payment_posted())
    with pytest.raises(InvalidEvent, match=missing):
        decode(key, value, with_header(headers, missing, None))


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda k, v, h: (k, b"{oops", h), "not JSON"),
        (lambda k, v, h: (k, b"\xff\xfe", h), "not JSON"),
        (lambda k, v, h: (k, b"[1, 2]", h), "not a JSON object"),
        (lambda k, v, h: (k, None, h), "no value"),
        (lambda k, v, h: (None, v, h), "no key"),
        (lambda k, v, h: (k, v, with_header(h, "ce_type", b"loan.vanished")), "unknown ce_type"),
        (lambda k, v, h: (k, v, with_header(h, "ce_specversion", b"0.3")), "ce_specversion"),
        (lambda k, v, h: (k, v, with_header(h, "ce_time", b"yesterday")), "ce_time"),
        (lambda k, v, h: (k, v, with_header(h, "ce_time", b"2026-12-01T10:00:00")), "UTC offset"),
        (lambda k, v, h: (k, v, with_header(h, "content-type", b"text/xml")), "content-type"),
        (lambda k, v, h: (k, b" " * (MAX_VALUE_BYTES + 1), h), "limit"),
    ],
)
def test_unreadable_record_is_rejected_with_a_reason(mutate, reason: str) -> None:
    key, value, headers = encode(payment_posted())
    with pytest.raises(InvalidEvent, match=reason):
        decode(*mutate(key, value, headers))


@pytest.mark.parametrize(
    ("field", "bad", "message"),
    [
        ("amount", 12.5, "decimal string"),
        ("amount", "12.5.1", "decimal"),
        ("amount", "NaN", "finite"),
        ("amount", "1e20", "out of range"),
        ("amount", "1.000001", "decimal places"),
        ("currency", "yuan", "pattern"),
        ("posted_at", "2026-12-01T10:00:00", "timezone"),
        ("posted_at", "1066-10-14T10:00:00Z", "1970"),
        ("payment_id", "", "at least 1"),
        ("payment_id", "x" * 500, "at most 128"),
    ],
)
def test_field_of_the_wrong_shape_is_rejected_naming_the_field(field, bad, message) -> None:
    key, value, headers = encode(payment_posted())
    data = {**json.loads(value), field: bad}
    with pytest.raises(InvalidEvent) as caught:
        decode(key, json.dumps(data).encode(), headers)
    assert field in caught.value.reason
    assert message in caught.value.reason


def test_rejection_reason_never_echoes_the_offending_value() -> None:
    key, value, headers = encode(payment_posted())
    secret = "+8613800138000"
    data = {**json.loads(value), "currency": secret}
    with pytest.raises(InvalidEvent) as caught:
        decode(key, json.dumps(data).encode(), headers)
    assert secret not in caught.value.reason


def test_unknown_extra_fields_are_tolerated_for_forward_compatibility() -> None:
    key, value, headers = encode(payment_posted())
    data = {**json.loads(value), "channel_hint": "branch"}
    event = decode(key, json.dumps(data).encode(), headers)
    assert isinstance(event.data, PaymentPosted)


def test_every_event_type_of_the_design_contract_is_registered_on_its_topic() -> None:
    expected = {
        topics.CORE_BANKING: {
            "customer.upserted",
            "loan.opened",
            "payment.posted",
            "payment.reversed",
            "account.flagged",
        },
        topics.LEDGER: {
            "payment.missed",
            "payment.received",
            "delinquency.changed",
            "account.cured",
            "plan.activated",
            "plan.broken",
            "plan.completed",
            "promise.kept",
            "promise.broken",
            "installment.due_soon",
            "payment.reversal_applied",  # project extension (docs/asyncapi.yaml)
        },
        topics.SCHEDULER: {"contact.requested", "contact.suppressed"},
        topics.NOTIFIER: {
            "contact.attempted",
            "customer.opted_out",
            "dispute.opened",
            "dispute.resolved",
            "promise.made",
            "plan.agreed",
            "notice.delivered",
            "hardship.reported",
            "callback.requested",
            "customer.cease_requested",  # project extensions (docs/asyncapi.yaml)
            "notice.returned",
        },
        topics.BUREAU: {
            "bureau.report_submitted",
            "bureau.report_blocked",
            "bureau.report_corrected",
        },
        topics.CLOCK: {"clock.set"},
    }
    actual: dict[str, set[str]] = {}
    for name, spec in REGISTRY.items():
        actual.setdefault(spec.topic, set()).add(name)
    assert actual == expected


def test_a_nul_character_in_any_text_field_is_refused() -> None:
    event = payment_posted(customer="C42")
    key, value, headers = encode(event)
    poisoned = value.replace(b'"currency":"CNY"', b'"currency":"CNY","payment_id":"P\\u0000"')
    with pytest.raises(InvalidEvent, match="payment_id"):
        decode(key, poisoned, headers)


def test_contact_attempted_takes_only_the_one_outcome_vocabulary() -> None:
    from pydantic import ValidationError

    from shared.events import CONNECTED, FAILURES, RIGHT_PARTY, ContactAttempted, Outcome

    base = {
        "contact_id": "K1",
        "account_id": "A1",
        "channel": "voice",
        "attempted_at": "2026-12-02T09:00:00Z",
    }
    assert (
        ContactAttempted.model_validate(base | {"outcome": "no_answer"}).outcome
        is Outcome.NO_ANSWER
    )
    with pytest.raises(ValidationError):
        ContactAttempted.model_validate(base | {"outcome": "teleported"})
    assert RIGHT_PARTY < CONNECTED  # the customer answered is a kind of someone answered
    assert Outcome.WRONG_PARTY in CONNECTED & FAILURES  # someone answered, not the customer
    assert not RIGHT_PARTY & FAILURES


VALUES = [
    # valid, and valid in the other ways a producer may write it
    json.dumps(
        {
            "account_id": "A1",
            "payment_id": "P1",
            "amount": "1.5",
            "currency": "CNY",
            "posted_at": "2026-12-01T08:00:00+08:00",
        }
    ),
    json.dumps(
        {
            "account_id": "A1",
            "payment_id": "P1",
            "amount": "1.5",
            "currency": "CNY",
            "posted_at": "2026-12-01T08:00:00Z",
            "new_field": [1, 2],
        }
    ),
    '{"account_id": "A1", "account_id": "A2", "payment_id": "P1", "amount": "2", '
    '"currency": "CNY", "posted_at": "2026-12-01T00:00:00Z"}',
    # refused: each for its own reason
    json.dumps(
        {
            "account_id": "A1",
            "payment_id": "P1",
            "amount": 1.5,
            "currency": "CNY",
            "posted_at": "2026-12-01T00:00:00Z",
        }
    ),
    json.dumps(
        {
            "account_id": "A\u00001",
            "payment_id": "P1",
            "amount": "1",
            "currency": "CNY",
            "posted_at": "2026-12-01T00:00:00Z",
        }
    ),
    json.dumps(
        {
            "account_id": "A1",
            "payment_id": "P1",
            "amount": "1",
            "currency": "CNY",
            "posted_at": "2026-12-01T00:00:00",
        }
    ),
    json.dumps(
        {
            "account_id": "A1",
            "payment_id": "P1",
            "amount": "NaN",
            "currency": "CNY",
            "posted_at": "2026-12-01T00:00:00Z",
        }
    ),
    '{"account_id": "A1", "amount": NaN}',
    "[1, 2]",
    '"a string"',
    "{not json",
    "",
]


@pytest.mark.parametrize("text", VALUES)
@pytest.mark.parametrize("encoding", ["utf-8", "utf-16"])
def test_the_one_pass_decode_accepts_and_refuses_as_json_loads_then_validate(
    text: str, encoding: str
) -> None:
    """``decode`` validates the bytes in one pass and falls back to ``json.loads`` + validation
    for a refusal: what it accepts, and the reason it gives, are the slower path's."""
    key, _, headers = encode(payment_posted(customer="C1"))
    value = text.encode(encoding)
    try:
        expected: object = _validated("payment.posted", PaymentPosted, value)
    except InvalidEvent as exc:
        expected = exc.reason
    try:
        got: object = decode(key, value, headers).data
    except InvalidEvent as exc:
        got = exc.reason
    assert got == expected
