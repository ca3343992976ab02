"""A service's process as operators see it: health, readiness, metrics, docs and the clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import text

from services.ledger.bootstrap import build as build_ledger
from services.ledger.settings import LedgerSettings
from shared import migrations, topics
from shared.auth import DEV_KEY, ApiKeySpec, digest
from shared.clock import Clock, ControlledClock
from shared.db import UnitOfWork
from shared.envelope import new_event
from shared.events import ClockSet
from shared.service import ServiceDefinition, ServiceRuntime, create_app
from shared.settings import ServiceSettings
from tests.support.databases import create_database, migrated_database
from tests.support.factories import encode_all, payment_posted, produce, read_topic
from tests.support.infra import Infra

pytestmark = pytest.mark.asyncio(loop_scope="session")
DEV_AUTH = {"Authorization": f"Bearer {DEV_KEY}"}


def ledger_settings(kafka: str, database_url: str, **extra: Any) -> LedgerSettings:
    return LedgerSettings(
        KAFKA_BOOTSTRAP_SERVERS=kafka,
        database_url=database_url,
        **extra,
    )


@pytest_asyncio.fixture(loop_scope="session")
async def ledger_db(infra: Infra) -> str:
    return await migrated_database(infra.admin_url, "arrears_ledger_runtime_test", "ledger")


@pytest_asyncio.fixture(loop_scope="session")
async def running(
    kafka: str, ledger_db: str
) -> AsyncIterator[tuple[ServiceRuntime, httpx.AsyncClient]]:
    runtime = ServiceRuntime(ledger_settings(kafka, ledger_db), build_ledger)
    await runtime.start()
    app = create_app(runtime, manage_runtime=False)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://ledger"
    ) as client:
        yield runtime, client
    await runtime.stop()


async def test_ready_service_answers_health_readiness_metrics_and_docs(running) -> None:
    _, client = running
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200, ready.text
    metrics = (await client.get("/metrics", headers=DEV_AUTH)).text
    for name in (
        "arrears_records_consumed_total",
        "arrears_records_produced_total",
        "arrears_records_failed_total",
        "arrears_handler_seconds",
        "arrears_consumer_lag",
        "arrears_outbox_backlog",
    ):
        assert name in metrics
    assert (await client.get("/docs")).status_code == 200
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert {"/healthz", "/readyz", "/metrics"} <= set(paths)


async def test_metrics_need_a_key_with_the_metrics_scope(running) -> None:
    _, client = running
    missing = await client.get("/metrics")
    assert missing.status_code == 401
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.headers["www-authenticate"] == "Bearer"
    assert (await client.get("/metrics", headers={"X-API-Key": "dev.wrong"})).status_code == 401
    assert (await client.get("/metrics", headers={"X-API-Key": DEV_KEY})).status_code == 200
    assert (await client.get("/healthz")).status_code == 200  # health stays open to probes


async def test_a_key_without_the_scope_is_forbidden(kafka: str, ledger_db: str) -> None:
    spec = ApiKeySpec(id="reader", sha256=digest("only-ledger"), scopes=["ledger:read"])
    settings = ledger_settings(kafka, ledger_db, ARREARS_API_KEYS=[spec])
    app = create_app(ServiceRuntime(settings, build_ledger), manage_runtime=False)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://ledger"
    ) as client:
        response = await client.get("/metrics", headers={"X-API-Key": "reader.only-ledger"})
    assert response.status_code == 403
    assert "metrics:read" in response.json()["detail"]


async def test_unreadable_input_is_dead_lettered_by_the_running_service(running, kafka) -> None:
    _, client = running
    good = payment_posted(customer="C-svc")
    key, _, headers = encode_all([good])[0]
    await produce(kafka, topics.CORE_BANKING, [(key, b"\x00garbage", headers)])
    async with asyncio.timeout(30):
        while True:
            dead = await read_topic(kafka, topics.dlq(topics.CORE_BANKING), timeout=5)
            mine = [
                r
                for r in dead
                if dict(r.headers).get("ce_id") == good.id.encode()
                and dict(r.headers).get("dlq_consumer") == b"ledger:events"
            ]
            if mine:
                break
            await asyncio.sleep(0.5)
    assert dict(mine[0].headers)["dlq_reason"].startswith(b"value is not JSON")
    metrics = (await client.get("/metrics", headers=DEV_AUTH)).text
    assert 'arrears_records_failed_total{kind="invalid",service="ledger"' in metrics


async def test_readiness_is_503_with_the_reason_when_migrations_are_not_at_head(
    kafka: str, infra: Infra
) -> None:
    empty = await create_database(infra.admin_url, "arrears_ledger_unmigrated_test")
    runtime = ServiceRuntime(ledger_settings(kafka, empty), build_ledger)
    await runtime.start(consumers=False, relay=False)
    try:
        app = create_app(runtime, manage_runtime=False)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://ledger"
        ) as client:
            response = await client.get("/readyz")
    finally:
        await runtime.stop()
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert f"migrations head is {migrations.head('ledger')}" in response.json()["detail"]


async def test_readiness_is_503_when_the_database_is_unreachable(kafka: str, infra: Infra) -> None:
    url = "postgresql+asyncpg://nobody:nothing@127.0.0.1:1/none"
    runtime = ServiceRuntime(ledger_settings(kafka, url), build_ledger)
    await runtime.start(consumers=False, relay=False)
    try:
        problems = await runtime.readiness()
    finally:
        await runtime.stop()
    assert any(p.startswith("database unreachable") for p in problems)


async def test_controlled_clock_follows_system_clock_and_resumes_at_the_latest_time(
    kafka: str, ledger_db: str
) -> None:
    seen: list[datetime] = []

    def build(settings: ServiceSettings, clock: Clock) -> ServiceDefinition:
        async def on_advance(uow: UnitOfWork, now: datetime) -> None:
            seen.append(now)

        return ServiceDefinition(clock_jobs=[on_advance])

    # The clock topic is shared by the session: work from whatever time it already shows.
    existing = await read_topic(kafka, topics.CLOCK, timeout=5)
    base = datetime(2030, 1, 1, tzinfo=UTC) + timedelta(days=len(existing))
    settings = ledger_settings(kafka, ledger_db, ARREARS_CLOCK="controlled")
    runtime = ServiceRuntime(settings, build)
    await runtime.start(consumers=False, relay=False)
    clock = runtime.clock
    assert isinstance(clock, ControlledClock)

    def tick(at: datetime):
        return new_event(ClockSet(now=at), source="/test/clock", key="clock", time=at)

    try:
        await produce(kafka, topics.CLOCK, [tick(base + timedelta(days=1))])
        async with asyncio.timeout(10):
            while clock.now() != base + timedelta(days=1):
                await asyncio.sleep(0.05)
        await produce(kafka, topics.CLOCK, [tick(base), tick(base + timedelta(days=2))])
        async with asyncio.timeout(10):
            while clock.now() != base + timedelta(days=2):
                await asyncio.sleep(0.05)
    finally:
        await runtime.stop()
    assert seen[-2:] == [base + timedelta(days=1), base + timedelta(days=2)]  # never went back

    restarted = ServiceRuntime(settings, build)
    await restarted.start(consumers=False, relay=False)
    try:
        assert restarted.clock.now() == base + timedelta(days=2)
    finally:
        await restarted.stop()


async def test_a_replica_is_quiet_at_a_move_only_once_every_live_peer_has_applied_it(
    kafka: str, ledger_db: str
) -> None:
    existing = await read_topic(kafka, topics.CLOCK, timeout=5)
    at = datetime(2040, 1, 1, tzinfo=UTC) + timedelta(days=len(existing))
    release, holding = asyncio.Event(), asyncio.Event()

    def build_quick(settings: ServiceSettings, clock: Clock) -> ServiceDefinition:
        return ServiceDefinition()

    def build_slow(settings: ServiceSettings, clock: Clock) -> ServiceDefinition:
        async def evaluate(uow: UnitOfWork, now: datetime) -> None:
            if now >= at:  # the move this test makes, not the latest one read at start
                holding.set()
                await release.wait()

        return ServiceDefinition(clock_jobs=[evaluate])

    settings = ledger_settings(kafka, ledger_db, ARREARS_CLOCK="controlled")
    quick, slow = ServiceRuntime(settings, build_quick), ServiceRuntime(settings, build_slow)
    for replica in (quick, slow):
        await replica.start(consumers=False, relay=False)
    try:
        tick = new_event(ClockSet(now=at), source="/test/clock", key="clock", time=at)
        await produce(kafka, topics.CLOCK, [tick])
        async with asyncio.timeout(10):
            await holding.wait()
        # the replica asked is at the move and idle itself; its peer is still applying it
        state = await quick.progress(wait=1, clock=at)
        assert (state["clock"], state["clock_busy"]) == (at.isoformat(), False)
        assert (state["replicas"], state["replicas_behind"]) == (2, 1)
        release.set()
        state = await quick.progress(wait=10, clock=at)
        assert (state["replicas"], state["replicas_behind"]) == (2, 0)
        await slow.stop()
        # a replica that is gone is not waited for
        later = at + timedelta(hours=1)
        tick = new_event(ClockSet(now=later), source="/test/clock", key="clock", time=later)
        await produce(kafka, topics.CLOCK, [tick])
        state = await quick.progress(wait=10, clock=later)
        assert (state["clock"], state["replicas"], state["replicas_behind"]) == (
            later.isoformat(),
            1,
            0,
        )
        # a database that ends the session (a restart) does not hide the replica until the
        # next move: it is back as soon as it reconnects
        async with quick.engine.connect() as conn:
            ended = await conn.scalar(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name LIKE 'arrears-replica ledger %'"
                )
            )
        assert ended == 1
        async with asyncio.timeout(10):
            while (await quick.progress())["replicas"] != 1:
                await asyncio.sleep(0.05)
    finally:
        release.set()
        await quick.stop()
        await slow.stop()


async def test_before_the_first_clock_set_nothing_is_consumed_worked_or_written() -> None:
    # No broker or database needed: a controlled service that never saw a clock.set.
    settings = LedgerSettings(
        ARREARS_CLOCK="controlled", database_url="postgresql+asyncpg://x:y@127.0.0.1:1/none"
    )
    runtime = ServiceRuntime(settings, build_ledger)
    app = create_app(runtime, manage_runtime=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://l") as c:
        refused = await c.post("/v1/events", json=[], headers=DEV_AUTH)
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert "clock has not been set" in refused.json()["detail"]
        assert (await c.get("/healthz")).status_code == 200  # reads go through
        # consumers and workers wait for the first move (they would stamp a placeholder time)
        waiting = asyncio.create_task(runtime.clock_set())
        await asyncio.sleep(0.2)
        assert not waiting.done()
        assert isinstance(runtime.clock, ControlledClock)
        await runtime.clock.set(datetime(2026, 12, 2, tzinfo=UTC))
        assert await asyncio.wait_for(waiting, 2)
        after = await c.post("/v1/events", json=[], headers=DEV_AUTH)
        assert after.status_code == 422  # past the gate: an empty batch is refused as such
