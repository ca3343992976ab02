"""docs/integration.md's examples that need no running system, run as the page writes them."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import TypeAdapter

from services.bureau.cycle import Cycles
from services.bureau.domain.reporting import Identity, identity_complete
from services.bureau.settings import BureauSettings
from services.notifier.domain.replies import intent
from services.notifier.domain.status import DELIVERY_STATUS
from services.notifier.settings import Partner
from services.scheduler.domain.compliance import Allowed, Party, Proposal, decide
from services.scheduler.domain.packs import load_packs
from shared import signing
from shared.clock import ControlledClock
from shared.events import DISPOSITIONS, CustomerUpserted
from tests.support.integration_doc import example, examples


def the_pages_signer() -> Callable[[str, bytes, int], str]:
    scope: dict[str, Any] = {}
    exec(example("signature-python"), scope)  # noqa: S102 - the page's own example
    signer: Callable[[str, bytes, int], str] = scope["signature_header"]
    return signer


def test_every_example_the_page_marks_is_there() -> None:
    assert set(examples()) == {
        "upstream-records", "cn-customer", "ingest-request", "ingest-responses",
        "partner-config", "signature-python", "signature-vector", "statuses", "replies",
        "window", "clock-record", "cycles",
    }  # fmt: skip


def test_the_pages_signature_code_gives_its_vector_and_arrears_accepts_it() -> None:
    vector = example("signature-vector")
    body = vector["body"].encode()
    header = the_pages_signer()(vector["secret"], body, vector["timestamp"])
    assert header == vector["header"]
    t = vector["timestamp"]
    for now in (t - 300, t, t + 300):  # the tolerance, both ways
        assert signing.verify(header, body, [vector["secret"]], now).ok
    for now in (t - 301, t + 301):
        verdict = signing.verify(header, body, [vector["secret"]], now)
        assert verdict.reason == "signature timestamp outside the tolerance"
    # during a rotation either secret signs
    assert signing.verify(header, body, ["whsec-next", vector["secret"]], t).ok
    assert not signing.verify(header, body + b" ", [vector["secret"]], t).ok


def test_the_pages_partner_configuration_is_what_the_notifier_reads() -> None:
    (partner,) = TypeAdapter(list[Partner]).validate_python(example("partner-config"))
    assert partner.serves("sms", "US")
    assert not partner.serves("sms", "CN")
    assert not partner.serves("voice", "US")
    assert len(partner.webhook_secrets) == 2


def test_window_ends_are_as_the_page_says() -> None:
    w = example("window")
    pack = load_packs()[w["pack"]]
    party = Party("C1", "A1", w["pack"], w["timezone"], addresses={"sms": "ref"})
    day = date.fromisoformat(w["day"])
    zone = ZoneInfo(w["timezone"])

    def instant(hms: str) -> datetime:
        return datetime.combine(day, time.fromisoformat(hms), zone)

    for hms in w["allowed"]:
        verdict = decide(pack, party, [], Proposal("sms", instant(hms)), instant(hms))
        assert isinstance(verdict, Allowed)
        assert verdict.not_before == instant(hms)
        assert verdict.not_after == instant("22:00:00")  # the first instant not allowed
    for hms in w["not_allowed"]:
        verdict = decide(pack, party, [], Proposal("sms", instant(hms)), instant(hms))
        assert isinstance(verdict, Allowed)
        assert verdict.not_before > instant(hms)
        assert verdict.not_before.astimezone(zone).time() == time(8)
        assert "CN.window.local-hours" in verdict.deferred_by


def test_the_pages_customers_pass_the_bureaus_identity_gate() -> None:
    us = example("upstream-records")[0]["value"]
    cn = example("cn-customer")
    for country, value in (("US", us), ("CN", cn)):
        CustomerUpserted.model_validate(value)  # a valid event as written
        identity = Identity(
            value["full_name"],
            value["national_id"],
            date.fromisoformat(value["birth_date"]),
            value["postal_address"],
        )
        assert identity_complete(country, identity), country


def test_the_pages_status_vocabulary_is_the_notifiers() -> None:
    statuses = example("statuses")
    assert set(statuses["delivery"]) == set(DELIVERY_STATUS)
    assert set(statuses["dispositions"]) == DISPOSITIONS


def test_the_pages_reply_keywords_mean_what_it_says() -> None:
    for meaning, texts in example("replies").items():
        for text in texts:
            assert intent(text) == meaning, text


def test_bureau_cycles_are_named_by_the_utc_month_as_the_page_says() -> None:
    bureau = Cycles(
        ControlledClock(datetime(2026, 12, 1, tzinfo=UTC)),
        BureauSettings(database_url="postgresql+asyncpg://x:y@127.0.0.1:1/none"),
    )
    for case in example("cycles"):
        at = datetime.fromisoformat(case["clock"]).astimezone(UTC)
        assert bureau.cycle_id(at) == case["cycle"]
