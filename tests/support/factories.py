"""Small factories for events and records, and Kafka helpers the tests share."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import OffsetAndMetadata

from shared import topics
from shared.envelope import CloudEvent, decode, encode, new_event
from shared.events import PaymentPosted
from shared.kafka import ensure_topics, make_producer
from shared.service import ServiceRuntime

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
_seq = itertools.count(1)


def payment_posted(
    *, customer: str | None = None, amount: str = "100.00", event_id: str | None = None
) -> CloudEvent:
    n = next(_seq)
    customer = customer or f"C{n % 97:04d}"
    return new_event(
        PaymentPosted(
            account_id=f"A-{customer}",
            payment_id=f"P{n:07d}",
            amount=Decimal(amount),
            currency="CNY",
            posted_at=T0,
        ),
        source="/core-banking/test",
        key=customer,
        time=T0,
        subject=f"A-{customer}",
        event_id=event_id,
    )


def unique_topic(prefix: str = "test") -> str:
    return f"{prefix}.{uuid.uuid4().hex[:10]}"


async def fresh_topic(bootstrap: str, partitions: int = 6, prefix: str = "test") -> str:
    name = unique_topic(prefix)
    await ensure_topics(bootstrap, partitions, (name,))
    return name


Record = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]


async def produce(bootstrap: str, topic: str, records: Iterable[Record | CloudEvent]) -> int:
    producer = make_producer(bootstrap)
    await producer.start()
    try:
        pending = []
        for item in records:
            key, value, headers = encode(item) if isinstance(item, CloudEvent) else item
            pending.append(await producer.send(topic, value=value, key=key, headers=headers))
        await asyncio.gather(*pending)
        return len(pending)
    finally:
        await producer.stop()


async def read_topic(
    bootstrap: str, topic: str, *, expect: int | None = None, timeout: float = 30.0
) -> list[Any]:
    """Records of ``topic`` from the start: until ``expect`` have arrived, or (without ``expect``)
    up to the end offsets as they stand when called."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[Any] = []
    try:
        loop = asyncio.get_running_loop()
        while not consumer.assignment():  # without a group, every partition once metadata is in
            await asyncio.sleep(0.05)
        partitions = sorted(consumer.assignment())
        ends = await consumer.end_offsets(partitions)
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if expect is not None and len(records) >= expect:
                break
            if expect is None:
                positions = [await consumer.position(tp) for tp in partitions]
                if all(pos >= ends[tp] for pos, tp in zip(positions, partitions, strict=True)):
                    break
            batch = await consumer.getmany(timeout_ms=300)
            for part in batch.values():
                records.extend(part)
        return records
    finally:
        await consumer.stop()


def headers_of(record: Any) -> dict[str, str]:
    return {k: v.decode() for k, v in record.headers}


def encode_all(events: Sequence[CloudEvent]) -> list[Record]:
    return [encode(e) for e in events]


async def skip_history(bootstrap: str, runtime: ServiceRuntime) -> None:
    """Commit each of ``runtime``'s consumer groups at its topics' current ends, before it starts.

    Test modules share one broker and the services' group names: without this a service would
    first work through every record earlier modules left on its topics, and a test's wait for its
    own records would measure that backlog instead.
    """
    for spec in runtime.definition.consumers:
        ends = await end_offsets(bootstrap, spec.topics)
        if not ends:  # topics not created yet: nothing to skip
            continue
        group = f"{runtime.settings.consumer_group}.{spec.name}"
        committer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
        )
        await committer.start()
        try:
            committer.assign(list(ends))
            await committer.commit({tp: OffsetAndMetadata(end, "") for tp, end in ends.items()})
        finally:
            await committer.stop()


async def end_offsets(bootstrap: str, names: Sequence[str]) -> dict[TopicPartition, int]:
    """Every partition of the existing topics among ``names``, with its end offset now."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = [name for name in names if name in set(await admin.list_topics())]
    finally:
        await admin.close()
    if not existing:
        return {}
    # Without a group, a consumer is assigned every partition of its topics once metadata is in.
    probe = AIOKafkaConsumer(*existing, bootstrap_servers=bootstrap, group_id=None)
    await probe.start()
    try:
        async with asyncio.timeout(15):
            while {tp.topic for tp in probe.assignment()} != set(existing):
                await asyncio.sleep(0.05)
        ends: dict[TopicPartition, int] = await probe.end_offsets(sorted(probe.assignment()))
        return ends
    finally:
        await probe.stop()


async def caught_up(bootstrap: str, runtime: ServiceRuntime, timeout: float = 30.0) -> None:
    """Wait until ``runtime`` has applied and committed every record on its topics as they
    stand now, and its outbox is drained: a condition to wait on instead of a fixed sleep."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        async with asyncio.timeout(timeout):
            for spec in runtime.definition.consumers:
                group = f"{runtime.settings.consumer_group}.{spec.name}"
                wanted = {
                    tp: end
                    for tp, end in (await end_offsets(bootstrap, spec.topics)).items()
                    if end
                }
                while True:
                    committed = await admin.list_consumer_group_offsets(group)
                    if all(
                        tp in committed and committed[tp].offset >= end
                        for tp, end in wanted.items()
                    ):
                        break
                    await asyncio.sleep(0.05)
            while True:  # and what that published has left its outbox
                snapshot = await runtime.progress()
                if not snapshot["outbox_pending"] and not snapshot["clock_busy"]:
                    break
                await asyncio.sleep(0.05)
    finally:
        await admin.close()


async def latest_clock(bootstrap: str) -> datetime | None:
    """The latest instant on the clock topic: the session's modules share it, and a controlled
    clock never goes back, so a test's day must come after it."""
    records = await read_topic(bootstrap, topics.CLOCK, timeout=5)
    instants = [decode(r.key, r.value, r.headers).data.now for r in records]  # type: ignore[attr-defined]
    return max(instants) if instants else None


async def clock_caught_up(bootstrap: str, runtime: ServiceRuntime, timeout: float = 15.0) -> None:
    """Wait until ``runtime``'s controlled clock has applied the clock topic's last record (its
    follower starts from it, on its own time)."""
    records = await read_topic(bootstrap, topics.CLOCK, timeout=5)
    if not records:
        return
    last = records[-1]
    instant = decode(last.key, last.value, last.headers).data.now  # type: ignore[attr-defined]
    async with asyncio.timeout(timeout):
        while runtime.clock.now() < instant:
            await asyncio.sleep(0.05)
