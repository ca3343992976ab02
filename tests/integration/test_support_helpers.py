"""The test suite's own Kafka helpers, checked on the real broker: a fixture that skips the
backlog must really skip it, or every later wait measures other modules' records."""

from __future__ import annotations

import uuid

import pytest

from services.scheduler.bootstrap import build
from services.scheduler.settings import SchedulerSettings
from shared import topics
from shared.kafka import ensure_topics
from shared.service import ServiceRuntime
from tests.support.factories import end_offsets, payment_posted, produce, skip_history

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_skip_history_commits_every_group_of_a_service_at_its_topics_ends(kafka: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    await ensure_topics(kafka, 6)
    await produce(kafka, topics.CORE_BANKING, [payment_posted() for _ in range(20)])
    settings = SchedulerSettings(
        KAFKA_BOOTSTRAP_SERVERS=kafka,
        ARREARS_CLOCK="controlled",
        database_url="postgresql+asyncpg://x:y@127.0.0.1:1/none",  # never connected
    )
    runtime = ServiceRuntime(settings, build)
    (spec,) = runtime.definition.consumers
    await skip_history(kafka, runtime)
    ends = await end_offsets(kafka, spec.topics)
    assert {tp.topic for tp in ends} == set(spec.topics)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(f"{settings.consumer_group}.events")
    finally:
        await admin.close()
    assert {tp: meta.offset for tp, meta in committed.items()} == ends
    assert sum(end for tp, end in ends.items() if tp.topic == topics.CORE_BANKING) >= 20


async def test_reconcile_lists_each_dead_letter_with_its_consumer_type_and_reason(
    kafka: str,
) -> None:
    from tools.simulator.system import Endpoints, System

    reason = f"amount: refused by test {uuid.uuid4().hex[:8]}"
    headers = [
        ("ce_type", b"payment.posted"),
        ("dlq_reason", reason.encode()),
        ("dlq_kind", b"rejected"),
        ("dlq_consumer", b"ledger.events"),
    ]
    await produce(kafka, topics.dlq(topics.CORE_BANKING), [(b"C-dlq", b"{}", headers)])
    async with System(Endpoints(bootstrap=kafka)) as system:
        found = await system.dead_letter_reasons()
    line = f"{topics.CORE_BANKING}.dlq ledger.events payment.posted rejected: {reason}"
    assert found.count(line) == 1
