"""The notifier with the real partner stand-in over HTTP, on the controlled clock: requests in on
scheduler.events, sends to the stand-in, signed webhooks back, events out on notifier.events."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
import pytest_asyncio
import uvicorn

from services.notifier.bootstrap import build
from services.notifier.settings import NotifierSettings
from shared import topics
from shared.auth import DEV_KEY
from shared.envelope import CloudEvent, decode, new_event
from shared.events import ClockSet, ContactOffer, ContactRequested, CustomerUpserted, Payload
from shared.fingerprint import fingerprint
from shared.service import ServiceRuntime, create_app
from shared.settings import DEV_FINGERPRINT_KEY
from shared.signing import HEADER, header_value
from tests.support.databases import migrated_database
from tests.support.factories import caught_up, produce, read_topic, skip_history
from tests.support.infra import Infra
from tools.partners.app import Standin
from tools.partners.app import create_app as standin_app

pytestmark = pytest.mark.asyncio(loop_scope="session")
AUTH = {"Authorization": f"Bearer {DEV_KEY}"}
SECRET, OLD_SECRET, API_KEY = "s3cret-now", "s3cret-before", "partner-key"
PHONE, EMAIL = "+8613911112222", "payer@example.com"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def serve(app: Any, port: int) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(10):
        while not server.started:
            await asyncio.sleep(0.02)
    return server, task


@dataclass
class World:
    runtime: ServiceRuntime
    kafka: str
    notifier: httpx.AsyncClient  # the notifier over real HTTP
    partner: httpx.AsyncClient  # the stand-in's control API over real HTTP
    standin: Standin

    def now(self) -> datetime:
        return self.runtime.clock.now()

    async def set_clock(self, instant: datetime) -> None:
        await produce(self.kafka, topics.CLOCK, [event(ClockSet(now=instant), "clock", instant)])
        async with asyncio.timeout(15):
            while self.runtime.clock.now() < instant:
                await asyncio.sleep(0.05)

    async def sends(self) -> dict[str, Any]:
        found: dict[str, Any] = (await self.partner.get("/control/sends")).json()
        return found

    async def contacts(self, account_id: str) -> list[dict[str, Any]]:
        response = await self.notifier.get(f"/v1/accounts/{account_id}/contacts", headers=AUTH)
        assert response.status_code == 200, response.text
        found: list[dict[str, Any]] = response.json()
        return found

    async def until_status(
        self, account_id: str, statuses: set[str], timeout: float = 30
    ) -> list[dict[str, Any]]:
        async with asyncio.timeout(timeout):
            while True:
                found = await self.contacts(account_id)
                if found and all(c["status"] in statuses for c in found):
                    return found
                await asyncio.sleep(0.2)

    async def signed(
        self, path: str, body: dict[str, Any], secret: str = SECRET, at: float | None = None
    ) -> httpx.Response:
        raw = json.dumps(body).encode()
        stamp = int(at if at is not None else time.time())
        headers = {HEADER: header_value(secret, stamp, raw), "content-type": "application/json"}
        return await self.notifier.post(
            f"/v1/webhooks/test-partner/{path}", content=raw, headers=headers
        )


def event(data: Payload, customer: str, at: datetime, source: str = "/test") -> CloudEvent:
    return new_event(data, source=source, key=customer, time=at)


@pytest_asyncio.fixture(loop_scope="session")
async def world(kafka: str, infra: Infra) -> AsyncIterator[World]:
    url = await migrated_database(
        infra.admin_url, f"arrears_notifier_t{uuid.uuid4().hex[:6]}", "notifier"
    )
    standin_port, notifier_port = free_port(), free_port()
    partner = {
        "name": "test-partner",
        "channels": ["sms", "email", "voice", "letter", "field_visit"],
        "base_url": f"http://127.0.0.1:{standin_port}",
        "api_key": API_KEY,
        "webhook_secrets": [SECRET, OLD_SECRET],
        "timeout_seconds": 1.0,
        "rate_limit_per_second": 50,
    }
    settings = NotifierSettings(
        KAFKA_BOOTSTRAP_SERVERS=kafka,
        ARREARS_CLOCK="controlled",
        database_url=url,
        partners=[partner],
        retry_max_seconds=3,
        send_poll_seconds=0.1,
    )
    standin = Standin("test-partner", f"http://127.0.0.1:{notifier_port}", SECRET, API_KEY)
    runtime = ServiceRuntime(settings, build)
    await skip_history(kafka, runtime)
    await runtime.start()
    servers = [
        await serve(standin_app(standin), standin_port),
        await serve(create_app(runtime, manage_runtime=False), notifier_port),
    ]
    async with (
        # a flood of 120 requests waits for the pool's 100 connections: on a loaded machine
        # longer than httpx's default 5 s (a PoolTimeout, not an answer, failed a run)
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{notifier_port}", timeout=30) as n,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{standin_port}") as p,
    ):
        w = World(runtime, kafka, n, p, standin)
        now = datetime.now(UTC).replace(microsecond=0)
        if runtime.clock.now() < now:
            await w.set_clock(now)
        yield w
    for server, task in servers:
        server.should_exit = True
        await task
    await runtime.stop()


async def customer(w: World) -> str:
    customer_id = f"NC-{uuid.uuid4().hex[:8]}"
    data = CustomerUpserted(
        customer_id=customer_id,
        full_name="Wang Fang",
        national_id="X",
        phone=PHONE,
        email=EMAIL,
        postal_address="9 Lane, Shanghai",
        timezone="Asia/Shanghai",
        locale="zh-CN",
        country="CN",
    )
    await produce(w.kafka, topics.CORE_BANKING, [event(data, customer_id, w.now())])
    return customer_id


def request(
    w: World,
    customer_id: str,
    account_id: str | None = None,
    channel: str = "sms",
    template: str = "reminder_soft",
    window: timedelta = timedelta(hours=10),
    offer: ContactOffer | None = None,
    **extra: Any,
) -> ContactRequested:
    fields: dict[str, Any] = {
        "total_overdue": Decimal("900.00"),
        "currency": "CNY",
        "days_past_due": 12,
        "locale": "zh-CN",
    } | extra
    return ContactRequested(
        contact_id=str(uuid.uuid4()),
        account_id=account_id or f"NA-{uuid.uuid4().hex[:8]}",
        customer_id=customer_id,
        channel=channel,
        template=template,
        not_before=w.now(),
        not_after=w.now() + window,
        strategy="early-and-late",
        variant="champion",
        offer=offer,
        **fields,
    )


async def ask(w: World, *requests: ContactRequested) -> None:
    await produce(
        w.kafka,
        topics.SCHEDULER,
        [event(r, r.customer_id, w.now(), "/arrears/scheduler") for r in requests],
    )


async def notifier_events(
    w: World, subject: str, kinds: set[str], expect: int, timeout: float = 20
) -> list[CloudEvent]:
    async with asyncio.timeout(timeout):
        while True:
            records = await read_topic(w.kafka, topics.NOTIFIER, timeout=5)
            found = [decode(r.key, r.value, r.headers) for r in records]
            mine = [e for e in found if e.subject == subject and e.type in kinds]
            if len(mine) >= expect:
                return mine
            await asyncio.sleep(0.3)


# --- sending ---------------------------------------------------------------------------------


async def test_redelivery_and_lost_answers_never_send_twice_at_the_partner(world: World) -> None:
    who = await customer(world)
    await caught_up(world.kafka, world.runtime)
    # The partner records each send but answers after the notifier's 1 s timeout, for a while:
    # the notifier retries with the same Idempotency-Key and the partner sends nothing again.
    await world.partner.post("/control", json={"slow_answer_for_seconds": 4, "callbacks": False})
    first, second = request(world, who), request(world, who, channel="email")
    once = event(first, who, world.now(), "/arrears/scheduler")
    await produce(world.kafka, topics.SCHEDULER, [once, once])  # the same event twice
    again = event(first, who, world.now(), "/arrears/scheduler")  # the same contact, new event
    await produce(world.kafka, topics.SCHEDULER, [again])
    await ask(world, second)
    for r in (first, second):
        (record,) = await world.until_status(r.account_id, {"sent"})
        assert record["attempts"] >= 1
    sends = (await world.sends())["sends"]
    assert sends[first.contact_id]["channel"] == "sms"
    assert len([k for k in sends if k in (first.contact_id, second.contact_id)]) == 2
    retried = (await world.contacts(first.account_id))[0]["attempts"]
    assert retried > 1  # it did retry, and still one send
    await world.partner.post("/control", json={"callbacks": True})


async def test_a_thirty_second_partner_outage_loses_nothing(world: World) -> None:
    who = await customer(world)
    await caught_up(world.kafka, world.runtime)
    await world.partner.post("/control", json={"fail_for_seconds": 30, "fail_status": 503})
    requests = [request(world, who, channel="sms") for _ in range(10)]
    await ask(world, *requests)
    await asyncio.sleep(5)
    for r in requests:
        (waiting,) = await world.contacts(r.account_id)
        assert waiting["status"] == "pending"
    for r in requests:
        await world.until_status(r.account_id, {"sent", "delivered"}, timeout=90)
    sends = (await world.sends())["sends"]
    assert all(sends[r.contact_id]["requests"] == 1 for r in requests)  # one send each
    attempted = await notifier_events(world, requests[0].account_id, {"contact.attempted"}, 1)
    assert attempted[0].data.outcome in {"sent", "delivered"}  # type: ignore[attr-defined]


async def test_a_request_past_not_after_is_never_sent(world: World) -> None:
    who = await customer(world)
    await caught_up(world.kafka, world.runtime)
    late = request(world, who, window=timedelta(minutes=10))
    await world.partner.post("/control", json={"fail_for_seconds": 6})
    await ask(world, late)
    await asyncio.sleep(2)
    await world.set_clock(world.now() + timedelta(minutes=11))  # the window closes mid-outage
    (record,) = await world.until_status(late.account_id, {"expired"})
    assert record["outcome"] == "expired"
    await asyncio.sleep(6)
    assert late.contact_id not in (await world.sends())["sends"]
    (expired,) = await notifier_events(world, late.account_id, {"contact.attempted"}, 1)
    assert expired.data.outcome == "expired"  # type: ignore[attr-defined]


async def test_an_unknown_template_goes_to_the_dead_letter_topic_with_its_reason(
    world: World,
) -> None:
    who = await customer(world)
    bad = request(world, who, template="no_such_template")
    await ask(world, bad)
    async with asyncio.timeout(20):
        while True:
            records = await read_topic(world.kafka, topics.dlq(topics.SCHEDULER), timeout=5)
            mine = [r for r in records if bad.contact_id.encode() in r.value]
            if mine:
                break
            await asyncio.sleep(0.3)
    reason = dict(mine[0].headers)["dlq_reason"].decode()
    assert reason == "template: no template no_such_template for channel sms"


# --- webhooks --------------------------------------------------------------------------------


async def test_forged_expired_tampered_and_unsigned_webhooks_are_rejected(world: World) -> None:
    body = {"event_id": f"e-{uuid.uuid4()}", "contact_id": "nope", "status": "delivered"}
    forged = await world.signed("status", body, secret="guess")
    expired = await world.signed("status", body, at=time.time() - 600)
    raw = json.dumps(body).encode()
    header = header_value(SECRET, int(time.time()), raw)
    tampered = await world.notifier.post(
        "/v1/webhooks/test-partner/status",
        content=raw.replace(b"delivered", b"right_party"),
        headers={HEADER: header, "content-type": "application/json"},
    )
    unsigned = await world.notifier.post("/v1/webhooks/test-partner/status", json=body)
    for response in (forged, expired, tampered, unsigned):
        assert response.status_code == 401
        assert response.headers["content-type"] == "application/problem+json"
    oversized = await world.signed("status", body | {"pad": "x" * 70_000})
    assert oversized.status_code == 413
    unknown = await world.signed("status", body)
    assert (unknown.status_code, unknown.json()["status"]) == (202, "orphaned")


async def test_either_secret_works_during_a_rotation(world: World) -> None:
    for secret in (SECRET, OLD_SECRET):
        body = {"event_id": f"e-{uuid.uuid4()}", "contact_id": "nope", "status": "delivered"}
        assert (await world.signed("status", body, secret=secret)).status_code == 202


async def test_a_replayed_event_id_has_one_effect(world: World) -> None:
    who = await customer(world)
    await caught_up(world.kafka, world.runtime)
    await world.partner.post("/control", json={"callbacks": False})
    sent = request(world, who, channel="voice", template="call_reminder")
    await ask(world, sent)
    await world.until_status(sent.account_id, {"sent"})
    body = {
        "event_id": f"e-{uuid.uuid4()}",
        "contact_id": sent.contact_id,
        "status": "promise_to_pay",
        "promise_amount": "300.00",
        "promise_date": (world.now() + timedelta(days=5)).date().isoformat(),
    }
    first = await world.signed("status", body)
    replay = await world.signed("status", body)
    assert (first.json()["status"], replay.json()["status"]) == ("applied", "duplicate")
    promises = await notifier_events(world, sent.account_id, {"promise.made"}, 1)
    await asyncio.sleep(1)
    promises = await notifier_events(world, sent.account_id, {"promise.made"}, 1)
    assert len(promises) == 1
    assert promises[0].data.amount == Decimal("300.00")  # type: ignore[attr-defined]
    await world.partner.post("/control", json={"callbacks": True})


async def test_malformed_bodies_get_a_422_naming_the_field(world: World) -> None:
    bad = await world.signed(
        "status", {"event_id": "e1", "contact_id": "c", "status": "teleported"}
    )
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "body.status"
    raw = b"{not json"
    headers = {HEADER: header_value(SECRET, int(time.time()), raw)}
    garbage = await world.notifier.post(
        "/v1/webhooks/test-partner/status", content=raw, headers=headers
    )
    assert garbage.status_code == 422


# --- replies ---------------------------------------------------------------------------------


async def test_stop_in_chinese_and_english_opts_out_that_address_only(world: World) -> None:
    who = await customer(world)
    await caught_up(world.kafka, world.runtime)
    sms = await world.signed(
        "inbound",
        {"event_id": f"r-{uuid.uuid4()}", "channel": "sms", "from": PHONE, "text": "退订"},
    )
    email = await world.signed(
        "inbound",
        {"event_id": f"r-{uuid.uuid4()}", "channel": "email", "from": EMAIL, "text": "STOP"},
    )
    assert (sms.json()["status"], email.json()["status"]) == ("applied", "applied")
    found = await notifier_events(world, who, {"customer.opted_out"}, 2)
    got = sorted((e.data.channel, e.data.address_ref) for e in found)  # type: ignore[attr-defined]
    assert got == sorted(
        [
            ("sms", fingerprint("phone", PHONE, DEV_FINGERPRINT_KEY)),
            ("email", fingerprint("email", EMAIL, DEV_FINGERPRINT_KEY)),
        ]
    )


async def test_a_plan_offer_accepted_by_reply_becomes_plan_agreed_for_the_ledger(
    world: World,
) -> None:
    who = await customer(world)
    await caught_up(world.kafka, world.runtime)
    offer = ContactOffer(offer_id="o-1", kind="installments", installments=3)
    offered = request(world, who, template="plan_offer", offer=offer)
    await ask(world, offered)
    await world.until_status(offered.account_id, {"sent", "delivered"})
    reply = await world.signed(
        "inbound",
        {"event_id": f"r-{uuid.uuid4()}", "channel": "sms", "from": PHONE, "text": "同意"},
    )
    assert reply.json()["status"] == "applied"
    (plan,) = await notifier_events(world, offered.account_id, {"plan.agreed"}, 1)
    amounts = [i.amount for i in plan.data.installments]  # type: ignore[attr-defined]
    assert amounts == [Decimal("300.00")] * 3
    assert sum(amounts) == Decimal("900.00")


async def test_a_dispute_reply_opens_a_dispute_on_the_last_contacted_account(world: World) -> None:
    who = await customer(world)
    await caught_up(world.kafka, world.runtime)
    contacted = request(world, who)
    await ask(world, contacted)
    await world.until_status(contacted.account_id, {"sent", "delivered"})
    await world.signed(
        "inbound",
        {"event_id": f"r-{uuid.uuid4()}", "channel": "sms", "from": PHONE, "text": "异议 不是我的"},
    )
    (opened,) = await notifier_events(world, contacted.account_id, {"dispute.opened"}, 1)
    assert opened.data.account_id == contacted.account_id  # type: ignore[attr-defined]


def mutations(rng: random.Random) -> list[bytes]:
    """Bodies a hostile or broken partner might send: valid shapes with wrong types, missing and
    extra fields, huge and odd values, and bytes that are not JSON at all."""
    base: dict[str, Any] = {
        "event_id": "e",
        "contact_id": "c",
        "status": "delivered",
        "promise_amount": "10.00",
        "promise_date": "2026-12-24",
        "channel": "sms",
        "from": PHONE,
        "text": "STOP",
    }
    odd: list[Any] = [
        None,
        0,
        -1,
        1e308,
        True,
        "",
        "x" * 5000,
        "\u0000",
        "😀" * 50,
        [],
        {},
        [1, [2, [3]]],
        {"$ne": 1},
        "9" * 400,
        "2026-13-45",
        "-5.00",
        "NaN",
        "Infinity",
        "<script>",
        "'; DROP TABLE delivery; --",
    ]
    bodies: list[bytes] = []
    for _ in range(300):
        body = dict(base)
        for key in rng.sample(sorted(body), rng.randint(0, 4)):
            if rng.random() < 0.5:
                body.pop(key)
            else:
                body[key] = rng.choice(odd)
        if rng.random() < 0.2:
            body[rng.choice(["extra", "status", "event_id"])] = rng.choice(odd)
        raw = json.dumps(body).encode()
        if rng.random() < 0.15:
            raw = bytes(rng.randrange(256) for _ in range(rng.randint(0, 200)))
        bodies.append(raw)
    return bodies


async def test_a_fuzzed_body_never_yields_a_server_error(world: World) -> None:
    rng = random.Random(20261128)
    statuses: dict[int, int] = {}
    for raw in mutations(rng):
        for path in ("status", "inbound"):
            headers = {HEADER: header_value(SECRET, int(time.time()), raw)}
            response = await world.notifier.post(
                f"/v1/webhooks/test-partner/{path}", content=raw, headers=headers
            )
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            assert response.status_code < 500, raw[:200]
            if response.status_code >= 400 and response.status_code != 429:
                assert response.headers["content-type"] == "application/problem+json"
        await asyncio.sleep(0.03)  # stay under the partner's rate limit
    assert statuses.get(422, 0) > 100  # most mutations are malformed, and say so


async def test_a_partner_over_its_rate_limit_gets_429(world: World) -> None:
    body = {"event_id": "flood", "contact_id": "nope", "status": "delivered"}
    responses = await asyncio.gather(*(world.signed("status", body) for _ in range(120)))
    codes = [r.status_code for r in responses]
    assert 429 in codes
    limited = next(r for r in responses if r.status_code == 429)
    assert limited.headers["content-type"] == "application/problem+json"
    await asyncio.sleep(2)  # let the bucket refill for whoever comes next
