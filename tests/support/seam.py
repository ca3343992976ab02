"""A service's handlers on PostgreSQL without Kafka: the test seam between the pure domain and
the full stack (as FastStream's TestBroker is for its users).

``Seam`` builds a service from its own composition root (``build(settings, clock)``) on a
migrated database, applies events through ``shared.consumer.apply_events`` (the inbox, the
handlers and the settle step, exactly as the consumer runner does) in a unit of work it
commits, and hands back what that transaction published, captured in memory on its way to the
outbox. Clock moves run the service's clock jobs as the runtime does. No broker, no sleeps.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime

from shared.clock import ControlledClock
from shared.consumer import apply_events, inbox_name
from shared.db import UnitOfWork, make_engine, uow_factory
from shared.envelope import CloudEvent, new_event
from shared.events import Payload
from shared.service import Build
from shared.settings import ServiceSettings


class Seam:
    def __init__(self, settings: ServiceSettings, build: Build, start: datetime) -> None:
        self.clock = ControlledClock(start)
        self.definition = build(settings, self.clock)
        self._name = settings.service_name
        self._engine = make_engine(settings.database_url)
        self._units = uow_factory(self._engine)

    @asynccontextmanager
    async def unit(self) -> AsyncIterator[tuple[UnitOfWork, list[CloudEvent]]]:
        """A unit of work whose published events are also kept in the list it yields."""
        async with self._units() as uow:
            published: list[CloudEvent] = []
            keep = uow.publish

            def publish(event: CloudEvent) -> None:
                published.append(event)
                keep(event)

            uow.publish = publish  # type: ignore[method-assign]
            yield uow, published

    async def start(self) -> None:
        await self.clock.set(self.clock.now())  # marks the clock set, as a first clock.set does
        for step in self.definition.on_start:
            async with self._units() as uow:
                await step(uow, self.clock.now())
                await uow.commit()

    async def apply(self, *events: CloudEvent) -> list[CloudEvent]:
        """Apply events as the first consumer group does; returns what the transaction
        published (after its settle step)."""
        (spec, *_) = self.definition.consumers
        async with self.unit() as (uow, published):
            await apply_events(uow, inbox_name(self._name, spec), spec, list(events))
            await uow.commit()
        return published

    async def move(self, instant: datetime) -> list[CloudEvent]:
        """Move the clock and run the clock jobs, each in its own committed unit of work;
        returns what they published."""
        await self.clock.set(instant)
        found: list[CloudEvent] = []
        for job in self.definition.clock_jobs:
            async with self.unit() as (uow, published):
                await job(uow, self.clock.now())
                await uow.commit()
            found += published
        return found

    def event(self, data: Payload, key: str, source: str = "/test") -> CloudEvent:
        return new_event(data, source=source, key=key, time=self.clock.now())

    async def close(self) -> None:
        await self._engine.dispose()


def of_type(events: Sequence[CloudEvent], name: str) -> list[CloudEvent]:
    return [e for e in events if e.type == name]
