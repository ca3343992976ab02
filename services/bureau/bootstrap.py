"""Composition root of the bureau service: the one place its dependencies are wired together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime

import httpx

import services.bureau
from services.bureau.cycle import Cycles
from services.bureau.entrypoints.api import router
from services.bureau.handlers import Bureau, handlers
from services.bureau.settings import BureauSettings
from shared import topics
from shared.clock import Clock
from shared.consumer import ConsumerSpec
from shared.db import UnitOfWork, UnitOfWorkFactory, asyncpg_dsn
from shared.ownership import owned
from shared.service import ServiceDefinition
from shared.settings import ServiceSettings

log = logging.getLogger(__name__)
CYCLE_OWNER = "bureau:reporting-cycle"  # the advisory lock a cycle's replica holds


def build(settings: ServiceSettings, clock: Clock) -> ServiceDefinition:
    assert isinstance(settings, BureauSettings)
    bureau = Bureau(clock)
    reporting = Cycles(clock, settings)
    events = ConsumerSpec.of(
        "events", (topics.LEDGER, topics.NOTIFIER, topics.CORE_BANKING), handlers(bureau)
    )
    moved = asyncio.Event()
    running = asyncio.Event()
    dsn = asyncpg_dsn(settings.database_url)

    async def on_clock(uow: UnitOfWork, now: datetime) -> None:
        moved.set()  # the cycle runs in its own transactions, in the worker below

    async def cycles(units: UnitOfWorkFactory, stop: asyncio.Event) -> None:
        failures = 0
        async with httpx.AsyncClient() as http:
            while not stop.is_set():
                waiter = asyncio.create_task(moved.wait())
                stopper = asyncio.create_task(stop.wait())
                await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                stopper.cancel()
                if stop.is_set():
                    break
                running.set()
                moved.clear()
                try:
                    # one replica runs the cycle; the others wait here, then find it submitted
                    # (or go on with what a replica that died committed)
                    async with owned(
                        dsn, CYCLE_OWNER, stop, f"replica {settings.replica}"
                    ) as owner:
                        if owner:
                            await reporting.run_cycle(units, http)
                    failures = 0
                except Exception:
                    # Resumed at the same clock instant, not at the next move: a cycle decided
                    # hours later would see other balances (a database restart mid-cycle made
                    # a faults run report one more account than the calm run of the same seed).
                    failures += 1
                    log.exception("reporting cycle failed; resuming (attempt %d)", failures)
                    moved.set()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), min(30.0, 0.5 * 2**failures))
                finally:
                    running.clear()

    async def cycle_pending(uow: UnitOfWork, now: datetime) -> int:
        return int(moved.is_set() or running.is_set())

    return ServiceDefinition(
        description=services.bureau.__doc__ or "",
        consumers=[events],
        routers=[router()],
        clock_jobs=[on_clock],
        workers=[cycles],
        pending=cycle_pending,
    )
