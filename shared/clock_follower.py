"""Drives a :class:`~shared.clock.ControlledClock` from the ``system.clock`` topic.

Every process must see every ``clock.set``, so this reads the single partition directly (no
consumer group), starting from the latest record so a restarted service resumes at the time the
others are at.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from aiokafka import TopicPartition

from shared import topics
from shared.clock import ControlledClock
from shared.envelope import InvalidEvent, decode
from shared.events import ClockSet
from shared.kafka import make_consumer

log = logging.getLogger(__name__)
PARTITION = TopicPartition(topics.CLOCK, 0)


class ClockFollower:
    def __init__(self, clock: ControlledClock, bootstrap: str) -> None:
        self._clock = clock
        self._consumer = make_consumer(bootstrap, None)

    async def start(self) -> datetime | None:
        """Assign the partition and apply the latest ``clock.set``, if any; returns it."""
        await self._consumer.start()
        self._consumer.assign([PARTITION])
        end = (await self._consumer.end_offsets([PARTITION]))[PARTITION]
        if end == 0:
            return None
        self._consumer.seek(PARTITION, end - 1)
        latest = None
        batch = await self._consumer.getmany(PARTITION, timeout_ms=5000)
        for record in batch.get(PARTITION, []):
            latest = self._instant(record) or latest
        if latest is not None:
            await self._clock.set(latest)
        return latest

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            batch = await self._consumer.getmany(PARTITION, timeout_ms=200)
            for record in batch.get(PARTITION, []):
                instant = self._instant(record)
                if instant is not None:
                    await self._clock.set(instant)

    async def stop(self) -> None:
        await self._consumer.stop()

    @staticmethod
    def _instant(record: object) -> datetime | None:
        try:
            event = decode(record.key, record.value, record.headers)  # type: ignore[attr-defined]
        except InvalidEvent as exc:
            log.error("ignoring unreadable clock record: %s", exc.reason)
            return None
        return event.data.now if isinstance(event.data, ClockSet) else None
