"""The scheduler driven only through Kafka and HTTP, on the controlled clock: events in on
core-banking, ledger and notifier topics; contacts out on scheduler.events; decisions over HTTP."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import holidays
import httpx
import pytest
import pytest_asyncio
import yaml

from services.scheduler.bootstrap import build
from services.scheduler.settings import SchedulerSettings
from shared import topics
from shared.auth import DEV_KEY
from shared.envelope import CloudEvent, decode, new_event
from shared.events import (
    AccountFlagged,
    ClockSet,
    CustomerOptedOut,
    CustomerUpserted,
    DisputeOpened,
    Payload,
    PaymentMissed,
    PaymentReceived,
    PlanActivated,
)
from shared.fingerprint import fingerprint
from shared.service import ServiceRuntime, create_app
from shared.settings import DEV_FINGERPRINT_KEY
from tests.support.databases import migrated_database
from tests.support.factories import caught_up, clock_caught_up, produce, read_topic, skip_history
from tests.support.infra import Infra

pytestmark = pytest.mark.asyncio(loop_scope="session")
AUTH = {"Authorization": f"Bearer {DEV_KEY}"}
TZ = "Asia/Shanghai"
PHONE = "+8613800000000"


@dataclass
class Scheduler:
    runtime: ServiceRuntime
    client: httpx.AsyncClient
    kafka: str

    def local(self, day: date, hour: int) -> datetime:
        return datetime.combine(day, time(hour), ZoneInfo(TZ))

    def quiet_day(self) -> date:
        """A local day from which the next fortnight has no public holiday in China."""
        day = self.runtime.clock.now().astimezone(ZoneInfo(TZ)).date() + timedelta(days=1)
        cn = holidays.country_holidays("CN", years=[day.year, day.year + 1])
        while any(day + timedelta(days=i) in cn for i in range(15)):
            day += timedelta(days=1)
        return day

    async def set_clock(self, instant: datetime) -> None:
        await produce(self.kafka, topics.CLOCK, [event(ClockSet(now=instant), "clock", instant)])
        async with asyncio.timeout(15):
            while self.runtime.clock.now() < instant:
                await asyncio.sleep(0.05)
        await self.runtime.progress(wait=15, clock=instant)  # the timer job runs on the move

    async def decisions(self, account_id: str) -> list[dict[str, Any]]:
        response = await self.client.get(f"/v1/accounts/{account_id}/decisions", headers=AUTH)
        assert response.status_code == 200, response.text
        found: list[dict[str, Any]] = response.json()
        return found

    async def until_decided(self, account_id: str, kind: str) -> list[dict[str, Any]]:
        async with asyncio.timeout(20):
            while True:
                found = await self.decisions(account_id)
                if any(d["kind"] == kind for d in found):
                    return found
                await asyncio.sleep(0.2)


def event(data: Payload, customer: str, at: datetime, source: str = "/test") -> CloudEvent:
    return new_event(data, source=source, key=customer, time=at)


async def contacts(kafka: str, account_id: str) -> list[CloudEvent]:
    records = await read_topic(kafka, topics.SCHEDULER, timeout=5)
    found = [decode(r.key, r.value, r.headers) for r in records]
    return [e for e in found if getattr(e.data, "account_id", None) == account_id]


async def until_contacts(
    kafka: str, account_id: str, expect: int, timeout: float = 20
) -> list[CloudEvent]:
    async with asyncio.timeout(timeout):
        while len(found := await contacts(kafka, account_id)) < expect:
            await asyncio.sleep(0.3)
    return found


@pytest_asyncio.fixture(loop_scope="session")
async def scheduler(kafka: str, infra: Infra) -> AsyncIterator[Scheduler]:
    url = await migrated_database(
        infra.admin_url, f"arrears_scheduler_t{uuid.uuid4().hex[:6]}", "scheduler"
    )
    settings = SchedulerSettings(
        KAFKA_BOOTSTRAP_SERVERS=kafka, ARREARS_CLOCK="controlled", database_url=url
    )
    runtime = ServiceRuntime(settings, build)
    await skip_history(kafka, runtime)
    await runtime.start()
    await clock_caught_up(kafka, runtime)  # the days the tests pick come after the session's clock
    app = create_app(runtime, manage_runtime=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://s") as c:
        yield Scheduler(runtime, c, kafka)
    await runtime.stop()


def four_days_late(customer: str, account: str, at: datetime, **more: Any) -> PaymentMissed:
    """The ledger's payment.missed for a first instalment of 1000 four days late."""
    return PaymentMissed(
        account_id=account,
        customer_id=customer,
        installment_no=1,
        due_date=at.date() - timedelta(days=4),
        amount_due=Decimal("1000.00"),
        total_overdue=Decimal("1000.00"),
        currency="CNY",
        days_past_due=4,
        bucket="1-29",
        **more,
    )


async def delinquent_customer(
    s: Scheduler, at: datetime, *, opted_out_sms: bool = False, country: str = "CN"
) -> tuple[str, str]:
    customer, account = f"SC-{uuid.uuid4().hex[:8]}", f"SA-{uuid.uuid4().hex[:8]}"
    upstream = [
        event(
            CustomerUpserted(
                customer_id=customer,
                full_name="Test Person",
                national_id="X",
                phone=PHONE,
                email="someone@example.com",
                postal_address="1 Road, Shanghai",
                timezone=TZ,
                locale="zh-CN",
                country=country,
                credit_score=720,
            ),
            customer,
            at,
        )
    ]
    await produce(s.kafka, topics.CORE_BANKING, upstream)
    if opted_out_sms:
        ref = fingerprint("phone", PHONE, DEV_FINGERPRINT_KEY)
        await produce(
            s.kafka,
            topics.NOTIFIER,
            [
                event(
                    CustomerOptedOut(customer_id=customer, channel="sms", address_ref=ref),
                    customer,
                    at,
                )
            ],
        )
    await caught_up(s.kafka, s.runtime)  # the customer's facts are in before the ledger's news
    missed = four_days_late(customer, account, at)
    await produce(s.kafka, topics.LEDGER, [event(missed, customer, at, "/arrears/ledger")])
    return customer, account


async def test_payment_missed_at_23_local_is_first_contacted_at_08_next_morning(
    scheduler: Scheduler,
) -> None:
    day = scheduler.quiet_day()
    await scheduler.set_clock(scheduler.local(day, 23))
    _, account = await delinquent_customer(scheduler, scheduler.local(day, 23))

    decided = await scheduler.until_decided(account, "deferred")
    deferred = next(d for d in decided if d["kind"] == "deferred")
    assert "CN.window.local-hours" in deferred["reasons"]
    assert not await contacts(scheduler.kafka, account)  # nothing at night

    await scheduler.set_clock(scheduler.local(day + timedelta(days=1), 8))
    (requested,) = await until_contacts(scheduler.kafka, account, 1)
    assert requested.type == "contact.requested"
    data = requested.data
    assert data.not_before == scheduler.local(day + timedelta(days=1), 8)  # type: ignore[attr-defined]
    assert data.not_after == scheduler.local(day + timedelta(days=1), 22)  # type: ignore[attr-defined]
    assert (data.channel, data.template) == ("sms", "reminder_soft")  # type: ignore[attr-defined]
    kinds = [d["kind"] for d in await scheduler.decisions(account)]
    assert kinds[:2] == ["segment", "variant"]
    assert "fired" in kinds


async def test_a_payment_that_clears_the_arrears_cancels_pending_steps(
    scheduler: Scheduler,
) -> None:
    day = scheduler.quiet_day()
    at = scheduler.local(day, 10)
    await scheduler.set_clock(at)
    customer, account = await delinquent_customer(scheduler, at)
    await until_contacts(scheduler.kafka, account, 1)  # day 0's step goes out at once

    paid = PaymentReceived(
        account_id=account,
        customer_id=customer,
        payment_id=f"P-{uuid.uuid4().hex[:6]}",
        amount=Decimal("1000.00"),
        currency="CNY",
        total_overdue=Decimal("0.00"),
    )
    await produce(scheduler.kafka, topics.LEDGER, [event(paid, customer, at, "/arrears/ledger")])
    decided = await scheduler.until_decided(account, "cancelled")
    cancelled = [d for d in decided if d["kind"] == "cancelled"]
    assert len(cancelled) >= 2  # every later step of the path
    # every cancellation cites the pack's rule, and says which event brought it
    assert all(d["reasons"] == ["CN.settle.nothing-overdue"] for d in cancelled)
    assert all(d["inputs"]["trigger"] == "payment.received" for d in cancelled)

    await scheduler.set_clock(scheduler.local(day + timedelta(days=15), 12))
    await caught_up(scheduler.kafka, scheduler.runtime)
    assert len(await contacts(scheduler.kafka, account)) == 1


async def test_an_sms_opt_out_suppresses_sms_only(scheduler: Scheduler) -> None:
    day = scheduler.quiet_day()
    at = scheduler.local(day, 10)
    await scheduler.set_clock(at)
    _, account = await delinquent_customer(scheduler, at, opted_out_sms=True)

    (suppressed,) = await until_contacts(scheduler.kafka, account, 1)
    assert suppressed.type == "contact.suppressed"
    assert suppressed.data.channel == "sms"  # type: ignore[attr-defined]
    assert suppressed.data.reasons == ["CN.stop.opt-out"]  # type: ignore[attr-defined]

    await scheduler.set_clock(scheduler.local(day + timedelta(days=4), 12))
    found = await until_contacts(scheduler.kafka, account, 2)
    later = [e for e in found if e.type == "contact.requested"]
    assert later
    assert all(e.data.channel != "sms" for e in later)  # type: ignore[attr-defined]


def shipped_strategy() -> dict[str, Any]:
    from services.scheduler.strategies import FILES

    document: dict[str, Any] = yaml.safe_load((FILES / "early-and-late.yaml").read_text())
    return document


async def test_strategy_versions_are_validated_stored_published_and_retired_over_http(
    scheduler: Scheduler,
) -> None:
    c = scheduler.client
    shipped = shipped_strategy()["version"]
    new = shipped + 1
    bad = shipped_strategy() | {"version": new}
    # the champion's sixth treatment, early-high-risk
    bad["variants"][0]["treatments"][5]["steps"][2]["channel"] = "pigeon"
    refused = await c.post("/v1/strategies", json=bad, headers=AUTH)
    assert refused.status_code == 422
    assert refused.headers["content-type"] == "application/problem+json"
    assert [e["field"] for e in refused.json()["errors"]] == [
        "body.variants.0.treatments.5.steps.2.channel"
    ]
    beyond = shipped_strategy() | {"version": new}
    beyond["variants"][0]["treatments"][5]["steps"][3]["offer"]["installments"] = 24
    refused = await c.post("/v1/strategies", json=beyond, headers=AUTH)
    assert refused.status_code == 422
    (error,) = refused.json()["errors"]
    assert error["field"] == "body.variants.0.treatments.5"
    assert "outside the treatment's limits (installments: 24 is more than 6)" in error["message"]
    listed = (await c.get("/v1/strategies", headers=AUTH)).json()
    assert [(v["version"], v["status"]) for v in listed] == [
        (shipped, "published")
    ]  # nothing half-applied

    good = shipped_strategy() | {"version": new, "description": "next"}
    created = await c.post("/v1/strategies", json=good, headers=AUTH)
    assert (created.status_code, created.json()["result"]) == (201, "created")
    again = await c.post("/v1/strategies", json=good, headers=AUTH)
    assert again.json()["result"] == "unchanged"
    clash = await c.post("/v1/strategies", json=good | {"description": "other"}, headers=AUTH)
    assert clash.status_code == 409

    published = await c.post(f"/v1/strategies/early-and-late/versions/{new}/publish", headers=AUTH)
    assert published.status_code == 200
    assert [(v["version"], v["status"]) for v in published.json()] == [
        (shipped, "retired"),
        (new, "published"),
    ]
    retired = await c.post(f"/v1/strategies/early-and-late/versions/{new}/retire", headers=AUTH)
    assert [v["status"] for v in retired.json()] == ["retired", "retired"]
    missing = await c.post("/v1/strategies/early-and-late/versions/9/publish", headers=AUTH)
    assert missing.status_code == 404
    assert (await c.get("/v1/strategies")).status_code == 401


async def test_dry_run_shows_the_path_and_its_windows_without_side_effects(
    scheduler: Scheduler,
) -> None:
    day = scheduler.quiet_day()
    body = {
        "account_id": "DRY-1",
        "bucket": "1-29",
        "days_past_due": 5,
        "overdue": "1200.00",
        "country": "US",
        "timezone": "America/Los_Angeles",
        "credit_score": 700,
        "channels": ["sms", "voice", "email"],
        "at": datetime.combine(day, time(23), ZoneInfo("America/Los_Angeles")).isoformat(),
    }
    response = await scheduler.client.post(
        "/v1/strategies/early-and-late/dry-run", json=body, headers=AUTH
    )
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["variant"] in {"champion", "early-plan"}
    first = result["steps"][0]
    assert first["channel"] == "sms"
    assert first["allowed"] is True
    first_at = datetime.fromisoformat(first["not_before"]).astimezone(
        ZoneInfo("America/Los_Angeles")
    )
    assert first_at.time() == time(8)  # 23:00 in Los Angeles waits for 08:00
    assert "US.window.local-hours" in first["rules"]
    no_sms = await scheduler.client.post(
        "/v1/strategies/early-and-late/dry-run",
        json=body | {"channels": ["voice", "email"]},
        headers=AUTH,
    )
    refused = no_sms.json()["steps"][0]
    assert (refused["channel"], refused["allowed"]) == ("sms", False)
    assert refused["rules"] == ["US.channel.usable"]
    assert await scheduler.decisions("DRY-1") == []

    invalid = await scheduler.client.post(
        "/v1/strategies/early-and-late/dry-run", json=body | {"bucket": "9000+"}, headers=AUTH
    )
    assert invalid.status_code == 422
    assert invalid.json()["errors"][0]["field"] == "body.bucket"


async def test_a_bankruptcy_flag_suppresses_the_next_steps_with_its_rule_id(
    scheduler: Scheduler,
) -> None:
    day = scheduler.quiet_day()
    at = scheduler.local(day, 10)
    await scheduler.set_clock(at)
    customer, account = await delinquent_customer(scheduler, at)
    await until_contacts(scheduler.kafka, account, 1)

    flag = AccountFlagged(customer_id=customer, flag="bankruptcy", active=True)
    await produce(scheduler.kafka, topics.CORE_BANKING, [event(flag, customer, at)])
    await caught_up(scheduler.kafka, scheduler.runtime)
    await scheduler.set_clock(scheduler.local(day + timedelta(days=15), 12))
    found = await until_contacts(scheduler.kafka, account, 2)
    later = found[1:]
    assert all(e.type == "contact.suppressed" for e in later)
    assert all(e.data.reasons == ["CN.stop.bankruptcy"] for e in later)  # type: ignore[attr-defined]


async def test_a_country_without_a_pack_is_decided_by_the_default_pack_and_says_so(
    scheduler: Scheduler,
) -> None:
    day = scheduler.quiet_day()
    at = scheduler.local(day, 10)
    await scheduler.set_clock(at)
    _, account = await delinquent_customer(scheduler, at, country="GB")
    await until_contacts(scheduler.kafka, account, 1)
    fired = next(d for d in await scheduler.until_decided(account, "fired") if d["kind"] == "fired")
    assert fired["inputs"]["pack"] == "CN@1"
    assert "no pack for GB: used the CN pack" in fired["inputs"]["notes"]


async def test_a_dispute_from_the_notifier_stops_contact_with_its_rule_id(
    scheduler: Scheduler,
) -> None:
    day = scheduler.quiet_day()
    at = scheduler.local(day, 10)
    await scheduler.set_clock(at)
    customer, account = await delinquent_customer(scheduler, at)
    await until_contacts(scheduler.kafka, account, 1)

    opened = DisputeOpened(account_id=account, dispute_id="d-1")
    await produce(
        scheduler.kafka, topics.NOTIFIER, [event(opened, customer, at, "/arrears/notifier")]
    )
    await caught_up(scheduler.kafka, scheduler.runtime)
    await scheduler.set_clock(scheduler.local(day + timedelta(days=15), 12))
    later = (await until_contacts(scheduler.kafka, account, 2))[1:]
    assert all(e.type == "contact.suppressed" for e in later)
    assert all(e.data.reasons == ["CN.stop.dispute"] for e in later)  # type: ignore[attr-defined]


async def test_a_kept_plan_cancels_pending_steps_citing_the_packs_plan_rule(
    scheduler: Scheduler,
) -> None:
    day = scheduler.quiet_day()
    at = scheduler.local(day, 10)
    await scheduler.set_clock(at)
    customer, account = await delinquent_customer(scheduler, at)
    await until_contacts(scheduler.kafka, account, 1)
    activated = PlanActivated(account_id=account, customer_id=customer, plan_id="PL-1")
    await produce(
        scheduler.kafka, topics.LEDGER, [event(activated, customer, at, "/arrears/ledger")]
    )
    decided = await scheduler.until_decided(account, "cancelled")
    cancelled = [d for d in decided if d["kind"] == "cancelled"]
    assert cancelled
    assert all(d["reasons"] == ["CN.pause.plan-kept"] for d in cancelled)
    assert all(d["inputs"]["trigger"] == "plan.activated" for d in cancelled)


async def test_a_contact_fired_days_after_the_miss_states_what_is_owed_then(
    scheduler: Scheduler,
) -> None:
    day = scheduler.quiet_day()
    at = scheduler.local(day, 10)
    await scheduler.set_clock(at)
    customer, account = await delinquent_customer(scheduler, at)
    (first,) = await until_contacts(scheduler.kafka, account, 1)
    assert (first.data.days_past_due, first.data.total_overdue) == (4, Decimal(1000))  # type: ignore[attr-defined]
    # The ledger's last word: 4 days behind with 1000 overdue, and 500 more due in two days
    # (it falls overdue then without an event: one comes only once it is missed).
    missed = four_days_late(
        customer,
        account,
        at,
        next_due_date=at.date() + timedelta(days=2),
        next_due_amount=Decimal("500.00"),
    )
    await produce(scheduler.kafka, topics.LEDGER, [event(missed, customer, at, "/arrears/ledger")])
    await caught_up(scheduler.kafka, scheduler.runtime)
    # The strategy's next steps go out days later: each says how late and how much as of then.
    await scheduler.set_clock(scheduler.local(day + timedelta(days=3), 10))
    later = await until_contacts(scheduler.kafka, account, 2)
    data = later[-1].data
    assert data.days_past_due == 7  # type: ignore[attr-defined]
    assert data.total_overdue == Decimal("1500.00")  # type: ignore[attr-defined]


async def test_a_variant_scores_with_the_model_version_it_names_and_decisions_record_it(
    scheduler: Scheduler,
) -> None:
    from services.scheduler.bootstrap import load_model

    c = scheduler.client
    day = scheduler.quiet_day()
    at = scheduler.local(day, 10)
    await scheduler.set_clock(at)  # the API writes on the clock
    listed = (await c.get("/v1/models", headers=AUTH)).json()
    assert [(m["version"], m["kind"], m["status"]) for m in listed] == [
        (1, "hand-written", "published")
    ]
    hand = load_model().model_dump(mode="json")
    lacking = hand | {"version": 2, "features": [*hand["features"], "times_late"]}
    refused = await c.post("/v1/models", json=lacking, headers=AUTH)
    assert refused.status_code == 422
    assert refused.headers["content-type"] == "application/problem+json"
    assert "lacks times_late" in refused.text
    # a model that scores everyone low: the segment's band follows the variant's model
    gloomy = hand | {"version": 2, "kind": "fitted", "intercept": -6.0}
    assert (await c.post("/v1/models", json=gloomy, headers=AUTH)).status_code == 201

    strategy = shipped_strategy()
    strategy["version"] += 1
    strategy["variants"][0] |= {"weight": 100, "model": 2}
    strategy["variants"][1]["weight"] = 0
    assert (await c.post("/v1/strategies", json=strategy, headers=AUTH)).status_code == 201
    path = f"/v1/strategies/early-and-late/versions/{strategy['version']}/publish"
    early = await c.post(path, headers=AUTH)
    assert early.status_code == 409
    assert "variants.0.model: model version 2 is not published" in early.text
    assert (await c.post("/v1/models/2/publish", headers=AUTH)).status_code == 200
    assert (await c.post(path, headers=AUTH)).status_code == 200
    in_use = await c.post("/v1/models/2/retire", headers=AUTH)
    assert in_use.status_code == 409
    assert "variants.0.model scores with model version 2" in in_use.text
    assert (await c.post("/v1/models/1/retire", headers=AUTH)).status_code == 409  # the default
    dry = await c.post(
        "/v1/strategies/early-and-late/dry-run",
        json={"account_id": "DRY-1", "bucket": "1-29", "days_past_due": 4, "overdue": "1000",
              "country": "CN", "timezone": TZ, "credit_score": 720},
        headers=AUTH,
    )  # fmt: skip
    assert dry.status_code == 200, dry.text
    assert (dry.json()["model_version"], dry.json()["score_band"]) == (2, "low")

    _, account = await delinquent_customer(scheduler, at)  # credit 720: high by the hand model
    decided = await scheduler.until_decided(account, "segment")
    segment = next(d for d in decided if d["kind"] == "segment")
    assert segment["inputs"]["model_version"] == 2
    assert segment["inputs"]["score_band"] == "low"
    assert segment["reasons"] == ["treatment:early-high-risk"]
    shown = (await c.get("/v1/models/2", headers=AUTH)).json()
    assert shown["intercept"] == -6.0


async def test_a_step_asking_for_the_best_channel_and_hour_takes_them_from_its_models_table(
    scheduler: Scheduler,
) -> None:
    """The variant's model says email pays better than sms for prime customers, and 20:00
    better than 10:00: the day-0 step goes by email, held to 20:00 local, and says why."""
    from services.scheduler.bootstrap import load_model

    c = scheduler.client
    day = scheduler.quiet_day()
    at = scheduler.local(day, 10)
    await scheduler.set_clock(at)  # the API writes on the clock
    rates = [
        {
            "segment": "prime",
            "channel": ch,
            "hour": h,
            "contacts": 50,
            "right_party_rate": 0.9,
            "payment_rate": p,
        }
        for ch, h, p in (
            ("sms", 10, 0.05),
            ("sms", 20, 0.06),
            ("email", 10, 0.1),
            ("email", 20, 0.3),
        )
    ]
    table = load_model().model_dump(mode="json") | {"version": 2, "contact_rates": rates}
    stored = await c.post("/v1/models", json=table, headers=AUTH)
    assert stored.status_code == 201, stored.text
    assert (await c.post("/v1/models/2/publish", headers=AUTH)).status_code == 200
    strategy = shipped_strategy()
    strategy["version"] += 1
    strategy["variants"][0] |= {"weight": 100, "model": 2}
    strategy["variants"][1]["weight"] = 0
    first = strategy["variants"][0]["treatments"][4]["steps"][0]  # early-low-risk, day 0
    first |= {"best_of": {"sms": "reminder_soft", "email": "reminder_soft"}, "best_hour": True}
    assert (await c.post("/v1/strategies", json=strategy, headers=AUTH)).status_code == 201
    path = f"/v1/strategies/early-and-late/versions/{strategy['version']}/publish"
    assert (await c.post(path, headers=AUTH)).status_code == 200

    _, account = await delinquent_customer(scheduler, at)  # credit 720: prime
    decided = await scheduler.until_decided(account, "deferred")
    held = next(d for d in decided if d["kind"] == "deferred")
    assert held["reasons"] == ["best-channel:email", "best-hour:20"]
    assert held["inputs"]["segment"] == "prime"
    assert held["inputs"]["best_channel"]["ranked"][0] == {
        "channel": "email",
        "payment_rate": 0.2,
        "contacts": 100,
    }
    assert held["inputs"]["best_hour"]["hour"] == 20
    assert not await contacts(scheduler.kafka, account)

    await scheduler.set_clock(scheduler.local(day, 20))
    (requested,) = await until_contacts(scheduler.kafka, account, 1)
    assert requested.data.channel == "email"  # type: ignore[attr-defined]
    assert requested.data.not_before == scheduler.local(day, 20)  # type: ignore[attr-defined]
    fired = next(d for d in await scheduler.decisions(account) if d["kind"] == "fired")
    assert fired["reasons"][0] == "best-channel:email"
