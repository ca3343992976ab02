"""Reading topics from their beginning up to their current end: what a tool that learns from
the event history (a model fit, a campaign's report) reads, each event once."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from shared.envelope import CloudEvent, InvalidEvent, decode


def first_seen(events: list[CloudEvent], seen: set[tuple[str, str]]) -> list[CloudEvent]:
    """The events whose (source, id) is not in ``seen``, once each, in order; adds them."""
    fresh = []
    for event in events:
        if (event.source, event.id) not in seen:
            seen.add((event.source, event.id))
            fresh.append(event)
    return fresh


class TopicReader:
    """Reads topics from the beginning up to their current end, on each ``drain``. Given topic
    names rather than partitions, it asks the broker for their partitions."""

    def __init__(
        self, bootstrap: str, partitions: Sequence[TopicPartition] = (), names: Sequence[str] = ()
    ) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            fetch_max_bytes=32 << 20,
            fetch_max_wait_ms=10,
        )
        self._partitions = list(partitions)
        self._names = list(names)
        self.unreadable = 0
        self.redelivered = 0
        self._seen: set[tuple[str, str]] = set()

    async def __aenter__(self) -> TopicReader:
        await self._consumer.start()
        for name in self._names:
            parts = self._consumer.partitions_for_topic(name)
            if not parts:
                await self._consumer._client.force_metadata_update()
                parts = self._consumer.partitions_for_topic(name) or {0}
            self._partitions += [TopicPartition(name, p) for p in sorted(parts)]
        self._consumer.assign(self._partitions)
        await self._consumer.seek_to_beginning(*self._partitions)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()

    async def drain(self) -> list[CloudEvent]:
        """Every event published since the last drain, in partition order (one customer's
        events in their order), each once: publication is at least once (an outbox whose
        service died between sending a row and marking it sent sends it again, same id), so
        a reader, like every consumer, counts an event by its source and id."""
        for attempt in range(60):  # a broker restarting: wait for it
            try:
                ends = await self._consumer.end_offsets(self._partitions)
                break
            except KafkaError:
                if attempt == 59:
                    raise
                await asyncio.sleep(1)
        out: list[CloudEvent] = []
        while [tp for tp, end in ends.items() if await self._consumer.position(tp) < end]:
            batch = await self._consumer.getmany(timeout_ms=20, max_records=20_000)
            for records in batch.values():
                for r in records:
                    try:
                        out.append(decode(r.key, r.value, r.headers))
                    except InvalidEvent:
                        self.unreadable += 1
        fresh = first_seen(out, self._seen)
        self.redelivered += len(out) - len(fresh)
        return fresh


async def read_history(bootstrap: str, names: Sequence[str]) -> list[CloudEvent]:
    """Every readable event of ``names`` so far, ordered by its time (stable within a time)."""
    async with TopicReader(bootstrap, names=names) as reader:
        events = await reader.drain()
    return sorted(events, key=lambda e: e.time)
