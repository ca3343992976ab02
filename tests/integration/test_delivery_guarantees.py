"""The delivery guarantees of design.md, against the real broker and database."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from shared import topics
from shared.consumer import (
    ConsumerRunner,
    ConsumerSpec,
    Handlers,
    PermanentError,
    Touched,
    apply_events,
)
from shared.db import UnitOfWork, asyncpg_dsn, uow_factory
from shared.envelope import CloudEvent, encode
from shared.events import PaymentPosted
from shared.kafka import make_consumer, make_producer
from shared.outbox import OutboxRelay
from tests.support.factories import (
    Record,
    fresh_topic,
    headers_of,
    payment_posted,
    produce,
    read_topic,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


async def effects(engine: AsyncEngine) -> tuple[int, int]:
    async with engine.connect() as conn:
        row = (
            await conn.execute(text("SELECT count(*), count(DISTINCT ce_id) FROM effects"))
        ).one()
    return int(row[0]), int(row[1])


async def record_effect(uow: UnitOfWork, event: CloudEvent) -> None:
    await uow.session.execute(
        text("INSERT INTO effects (ce_id, customer_id) VALUES (:id, :c)"),
        {"id": event.id, "c": event.key},
    )


@pytest_asyncio.fixture(loop_scope="session")
async def producer(kafka: str) -> AsyncIterator[Any]:
    p = make_producer(kafka)
    await p.start()
    yield p
    await p.stop()


async def consume_until(
    kafka: str,
    engine: AsyncEngine,
    producer: Any,
    topic: str,
    spec: ConsumerSpec,
    done: Any,
    *,
    batch: int = 100,
    timeout: float = 60.0,
) -> None:
    consumer = make_consumer(kafka, f"g-{uuid.uuid4().hex[:8]}", topic)
    await consumer.start()
    runner = ConsumerRunner(
        spec,
        service="test",
        consumer=consumer,
        producer=producer,
        uow_factory=uow_factory(engine),
        batch_size=batch,
        max_retries=2,
        backoff_seconds=0.01,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        async with asyncio.timeout(timeout):
            while not await done():
                if task.done():
                    task.result()
                await asyncio.sleep(0.2)
    finally:
        stop.set()
        await task
        await consumer.stop()


async def test_event_committed_with_its_change_travels_outbox_to_kafka_to_inbox_once(
    kafka: str, backbone_engine: AsyncEngine, producer: Any
) -> None:
    sent = [payment_posted() for _ in range(25)]
    async with uow_factory(backbone_engine)() as uow:
        for event in sent:
            uow.publish(event)
        await uow.commit()
    relay = OutboxRelay(backbone_engine, producer, service="test", listen_dsn=None)
    assert await relay.publish_once() == 25
    assert await relay.backlog() == 0

    wanted = {e.id for e in sent}

    async def all_applied() -> bool:
        async with backbone_engine.connect() as conn:
            rows = await conn.execute(text("SELECT ce_id FROM effects"))
            return wanted <= {r[0] for r in rows}

    spec = ConsumerSpec("roundtrip", (topics.CORE_BANKING,), {"payment.posted": record_effect})
    await consume_until(kafka, backbone_engine, producer, topics.CORE_BANKING, spec, all_applied)
    async with backbone_engine.connect() as conn:
        rows = (
            await conn.execute(text("SELECT ce_id, count(*) FROM effects GROUP BY ce_id"))
        ).all()
        claimed = (await conn.execute(text("SELECT count(*) FROM inbox"))).scalar_one()
    counts = {ce_id: n for ce_id, n in rows if ce_id in wanted}
    assert counts == dict.fromkeys(wanted, 1)
    assert claimed >= 25


async def test_settle_runs_once_after_a_transactions_handlers_with_everything_they_touched(
    backbone_engine: AsyncEngine,
) -> None:
    """The settle step is called by apply_events (the runner and HTTP ingest alike), visibly
    after the handlers and before the caller's commit; duplicates touch nothing."""
    settled: list[Touched] = []
    registry = Handlers()

    async def post(uow: UnitOfWork, data: PaymentPosted, event: CloudEvent) -> Touched:
        await record_effect(uow, event)
        return Touched.of([data.account_id], [data])

    async def settle(uow: UnitOfWork, touched: Touched) -> None:
        settled.append(touched)

    registry.each(PaymentPosted, post)
    spec = ConsumerSpec.of("settle", (topics.CORE_BANKING,), registry, settle)
    events = [payment_posted(customer=f"S{i % 2}") for i in range(3)]
    async with uow_factory(backbone_engine)() as uow:
        assert await apply_events(uow, "test:settle", spec, events) == [True] * 3
        assert await apply_events(uow, "test:settle", spec, events) == [False] * 3
        await uow.commit()
    (once,) = settled
    assert list(once.accounts) == ["A-S0", "A-S1"]
    assert [r.payment_id for r in once.receipts] == [e.data.payment_id for e in events]  # type: ignore[attr-defined]


async def test_rolled_back_change_publishes_nothing(backbone_engine: AsyncEngine) -> None:
    async with uow_factory(backbone_engine)() as uow:
        uow.publish(payment_posted())
        # leaving without commit: the change and its event vanish together
    relay = OutboxRelay(backbone_engine, None, service="test", listen_dsn=None)
    assert await relay.backlog() == 0


async def test_relay_wakes_on_notify_without_waiting_for_the_poll(
    kafka: str, backbone_db: str, backbone_engine: AsyncEngine, producer: Any
) -> None:
    relay = OutboxRelay(
        backbone_engine,
        producer,
        service="test",
        listen_dsn=asyncpg_dsn(backbone_db),
        poll_seconds=30,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    await asyncio.sleep(0.5)  # the relay is now parked on LISTEN with a 30 s poll
    event = payment_posted()
    async with uow_factory(backbone_engine)() as uow:
        uow.publish(event)
        await uow.commit()
    try:
        async with asyncio.timeout(10):
            while await relay.backlog():
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await task
    published = await read_topic(kafka, topics.CORE_BANKING, timeout=10)
    assert event.id in {headers_of(r)["ce_id"] for r in published}


async def test_outbox_keeps_order_per_customer_across_two_relays(
    kafka: str, backbone_engine: AsyncEngine, producer: Any
) -> None:
    customer = f"C-order-{uuid.uuid4().hex[:6]}"
    sent = [payment_posted(customer=customer) for _ in range(200)]
    others = [payment_posted() for _ in range(400)]
    async with uow_factory(backbone_engine)() as uow:
        for i in range(200):
            uow.publish(sent[i])
            uow.publish(others[2 * i])
            uow.publish(others[2 * i + 1])
        await uow.commit()
    relays = [
        OutboxRelay(backbone_engine, producer, service="test", listen_dsn=None, batch_size=37)
        for _ in range(2)
    ]

    async def drain(relay: OutboxRelay) -> None:
        while await relay.backlog():
            await relay.publish_once()

    await asyncio.gather(*(drain(r) for r in relays))
    records = await read_topic(kafka, topics.CORE_BANKING, timeout=10)
    mine = [headers_of(r)["ce_id"] for r in records if r.key == customer.encode()]
    assert mine == [e.id for e in sent]


async def test_redelivered_record_has_no_second_effect(
    kafka: str, backbone_engine: AsyncEngine, producer: Any
) -> None:
    topic = await fresh_topic(kafka)
    event = payment_posted()
    other = payment_posted()
    await produce(kafka, topic, [event, other, event, event])
    spec = ConsumerSpec("dedupe", (topic,), {"payment.posted": record_effect})

    async def two() -> bool:
        return (await effects(backbone_engine))[0] >= 2

    await consume_until(kafka, backbone_engine, producer, topic, spec, two)
    # a second consumer group reading it all again: same inbox name, so still one effect each
    await consume_until(kafka, backbone_engine, producer, topic, spec, two)
    await asyncio.sleep(0.5)
    assert await effects(backbone_engine) == (2, 2)


async def test_poison_records_go_to_the_dlq_with_reasons_and_the_rest_is_processed(
    kafka: str, backbone_engine: AsyncEngine, producer: Any
) -> None:
    topic = await fresh_topic(kafka, partitions=1)
    good = [payment_posted(customer="C-poison") for _ in range(6)]
    refused = payment_posted(customer="C-poison", amount="13.00")
    _, value, headers = encode(good[0])
    bad_json = (b"C-poison", b"{not json", headers)
    no_type = (b"C-poison", value, [h for h in headers if h[0] != "ce_type"])
    unknown = (
        b"C-poison",
        value,
        [(k, b"loan.exploded" if k == "ce_type" else v) for k, v in headers],
    )
    wrong_field = (
        b"C-poison",
        json.dumps({**json.loads(value), "amount": 12.5}).encode(),
        [(k, b"poison-float" if k == "ce_id" else v) for k, v in headers],
    )
    records: list[Record | CloudEvent] = [
        good[0],
        bad_json,
        good[1],
        no_type,
        good[2],
        unknown,
        good[3],
        wrong_field,
        good[4],
        refused,
        good[5],
    ]
    await produce(kafka, topic, records)

    async def picky(uow: UnitOfWork, event: CloudEvent) -> None:
        if event.data.amount == 13:  # type: ignore[attr-defined]
            raise PermanentError("amount refused by the test handler")
        await record_effect(uow, event)

    spec = ConsumerSpec("poison", (topic,), {"payment.posted": picky})

    async def six() -> bool:
        return (await effects(backbone_engine))[0] >= 6

    await consume_until(kafka, backbone_engine, producer, topic, spec, six)
    assert await effects(backbone_engine) == (6, 6)
    dead = await read_topic(kafka, topics.dlq(topic), expect=5, timeout=15)
    reasons = [headers_of(r)["dlq_reason"] for r in dead]
    assert len(dead) == 5
    assert reasons[0].startswith("value is not JSON")
    assert "ce_type" in reasons[1]
    assert "unknown ce_type" in reasons[2]
    assert "amount" in reasons[3]
    assert "decimal string" in reasons[3]
    assert reasons[4] == "amount refused by the test handler"
    # the original record travels intact, with where it came from
    assert dead[0].value == b"{not json"
    assert headers_of(dead[0])["dlq_source_topic"] == topic
    assert headers_of(dead[4])["ce_id"] == refused.id


async def test_record_that_keeps_failing_is_dead_lettered_after_bounded_retries(
    kafka: str, backbone_engine: AsyncEngine, producer: Any
) -> None:
    topic = await fresh_topic(kafka, partitions=1)
    flaky = payment_posted(customer="C-flaky", amount="7.00")
    fine = payment_posted(customer="C-flaky")
    await produce(kafka, topic, [flaky, fine])
    attempts = 0

    async def always_down(uow: UnitOfWork, event: CloudEvent) -> None:
        nonlocal attempts
        if event.id == flaky.id:
            attempts += 1
            raise RuntimeError("a bug that fails every time")
        await record_effect(uow, event)

    spec = ConsumerSpec("flaky", (topic,), {"payment.posted": always_down})

    async def one() -> bool:
        return (await effects(backbone_engine))[0] >= 1

    await consume_until(kafka, backbone_engine, producer, topic, spec, one)
    dead = await read_topic(kafka, topics.dlq(topic), expect=1, timeout=15)
    assert [headers_of(r)["ce_id"] for r in dead] == [flaky.id]
    assert headers_of(dead[0])["dlq_kind"] == "exhausted"
    assert attempts == 1 + 3  # the batch try, then the first try and 2 retries on its own


class _Restarting(Exception):
    """What asyncpg raises while PostgreSQL starts up (SQLSTATE 57P03)."""

    sqlstate = "57P03"


async def test_a_record_met_by_a_restarting_database_waits_for_it_and_is_not_dead_lettered(
    kafka: str, backbone_engine: AsyncEngine, producer: Any
) -> None:
    topic = await fresh_topic(kafka, partitions=1)
    first, second = payment_posted(customer="C-restart"), payment_posted(customer="C-restart")
    await produce(kafka, topic, [first, second])
    refusals = 0

    async def restarting(uow: UnitOfWork, event: CloudEvent) -> None:
        nonlocal refusals
        if refusals < 8:  # far more than the runner's two retries
            refusals += 1
            raise DBAPIError("SELECT 1", {}, _Restarting())
        await record_effect(uow, event)

    spec = ConsumerSpec("restarting", (topic,), {"payment.posted": restarting})

    async def both() -> bool:
        return (await effects(backbone_engine))[0] >= 2

    await consume_until(kafka, backbone_engine, producer, topic, spec, both)
    assert await effects(backbone_engine) == (2, 2)
    assert refusals == 8
    assert await read_topic(kafka, topics.dlq(topic), timeout=2) == []


class _RefusesDeadLetters:
    """A real producer whose first dead letter fails, as when the broker restarts."""

    def __init__(self, producer: Any) -> None:
        self._producer = producer
        self.refused = 0

    async def send(self, topic: str, **kwargs: Any) -> Any:
        if topic.endswith(".dlq") and not self.refused:
            self.refused += 1
            raise KafkaConnectionError("broker restarting")
        return await self._producer.send(topic, **kwargs)


async def test_a_fetch_that_failed_half_way_is_read_again_when_the_runner_resumes(
    kafka: str, backbone_engine: AsyncEngine, producer: Any
) -> None:
    topic = await fresh_topic(kafka, partitions=1)
    good = [payment_posted(customer="C-resume") for _ in range(3)]
    await produce(kafka, topic, [good[0], (b"C-resume", b"{not json", []), good[1], good[2]])
    spec = ConsumerSpec("resume", (topic,), {"payment.posted": record_effect})
    consumer = make_consumer(kafka, f"g-{uuid.uuid4().hex[:8]}", topic)
    await consumer.start()
    flaky = _RefusesDeadLetters(producer)
    runner = ConsumerRunner(
        spec,
        service="test",
        consumer=consumer,
        producer=flaky,
        uow_factory=uow_factory(backbone_engine),
    )
    stop = asyncio.Event()
    try:
        with pytest.raises(KafkaConnectionError):
            await runner.run(stop)
        # resumed as the service does after a failure, on the same consumer
        task = asyncio.create_task(runner.run(stop))
        async with asyncio.timeout(60):
            while (await effects(backbone_engine))[0] < 3:
                await asyncio.sleep(0.1)
        stop.set()
        await task
    finally:
        await consumer.stop()
    assert await effects(backbone_engine) == (3, 3)
    assert len(await read_topic(kafka, topics.dlq(topic), expect=1, timeout=15)) == 1


def spawn_worker(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.support.effects_worker", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


async def test_thousand_events_with_consumer_killed_at_random_points_give_exactly_thousand_effects(
    kafka: str, backbone_db: str, backbone_engine: AsyncEngine
) -> None:
    topic = await fresh_topic(kafka)
    events = [payment_posted(customer=f"C{i % 50:03d}") for i in range(1000)]
    await produce(kafka, topic, events)
    args = (
        "consume",
        "--db",
        backbone_db,
        "--bootstrap",
        kafka,
        "--topic",
        topic,
        "--group",
        f"crash-{uuid.uuid4().hex[:8]}",
        "--batch",
        "20",
    )
    rng = random.Random()
    kill_points = sorted(rng.sample(range(50, 950), 3))
    for point in kill_points:
        worker = spawn_worker(*args)
        try:
            async with asyncio.timeout(90):
                while (await effects(backbone_engine))[0] < point:
                    assert worker.poll() is None, worker.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
                    await asyncio.sleep(0.01)
        finally:
            worker.send_signal(signal.SIGKILL)
            worker.wait()
    worker = spawn_worker(*args)
    try:
        async with asyncio.timeout(90):
            while (await effects(backbone_engine))[0] < 1000:
                assert worker.poll() is None, worker.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
                await asyncio.sleep(0.1)
        await asyncio.sleep(2)  # anything applied twice would show up now
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    assert await effects(backbone_engine) == (1000, 1000), f"killed at {kill_points}"
    async with backbone_engine.connect() as conn:
        applied = {r[0] for r in await conn.execute(text("SELECT ce_id FROM effects"))}
    assert applied == {e.id for e in events}


async def test_event_committed_by_a_process_killed_before_publishing_is_published_after_restart(
    kafka: str, backbone_db: str, backbone_engine: AsyncEngine, producer: Any
) -> None:
    customer = f"C-died-{uuid.uuid4().hex[:6]}"
    worker = spawn_worker("commit-then-die", "--db", backbone_db, "--customer", customer)
    out, _ = worker.communicate(timeout=60)
    assert worker.returncode == -signal.SIGKILL
    ce_id = out.decode().strip()
    relay = OutboxRelay(backbone_engine, producer, service="test", listen_dsn=None)
    assert await relay.backlog() == 1  # the change committed, its event waits in the outbox
    assert await relay.publish_once() == 1
    records = await read_topic(kafka, topics.CORE_BANKING, timeout=10)
    assert ce_id in {headers_of(r)["ce_id"] for r in records if r.key == customer.encode()}


async def test_stopping_mid_fetch_finishes_and_commits_the_fetch_in_hand(
    kafka: str, backbone_engine: AsyncEngine, producer: Any
) -> None:
    topic = await fresh_topic(kafka, partitions=1)
    events = [payment_posted(customer="C-drain") for _ in range(40)]
    await produce(kafka, topic, events)
    stop = asyncio.Event()
    calls = 0

    async def slow(uow: UnitOfWork, event: CloudEvent) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            stop.set()  # the shutdown signal arrives while the fetch is being applied
        await asyncio.sleep(0.01)
        await record_effect(uow, event)

    group = f"g-{uuid.uuid4().hex[:8]}"

    async def run_once(stop: asyncio.Event) -> int:
        consumer = make_consumer(kafka, group, topic)
        await consumer.start()
        runner = ConsumerRunner(
            ConsumerSpec("drain", (topic,), {"payment.posted": slow}),
            service="test",
            consumer=consumer,
            producer=producer,
            uow_factory=uow_factory(backbone_engine),
            batch_size=100,
        )
        try:
            async with asyncio.timeout(30):
                await runner.run(stop)
            return int(await consumer.committed(TopicPartition(topic, 0)) or 0)
        finally:
            await consumer.stop()

    committed = await run_once(stop)
    # Whatever the fetch in hand held was applied and its offsets committed, nothing more.
    assert committed >= 1
    assert await effects(backbone_engine) == (committed, committed)
    # The next member of the group carries on from there: every event once, none twice.
    rest = asyncio.Event()

    async def all_done() -> None:
        while (await effects(backbone_engine))[0] < 40:
            await asyncio.sleep(0.05)
        rest.set()

    watcher = asyncio.create_task(all_done())
    assert await run_once(rest) == 40
    await watcher
    assert await effects(backbone_engine) == (40, 40)
