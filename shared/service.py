"""What every service process is made of: its HTTP app, its consumers, its outbox relay and its
clock, started and stopped together.

A service supplies a *composition root*: a function from its settings and clock to a
:class:`ServiceDefinition` (consumer specs with their handlers, routers, clock listeners). It must
not connect to anything; :class:`ServiceRuntime` does that in ``start`` and undoes it in ``stop``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from shared import migrations
from shared.auth import KeyRing, require
from shared.clock import Clock, ControlledClock, Listener, WallClock
from shared.clock_follower import ClockFollower
from shared.consumer import ConsumerRunner, ConsumerSpec, safe_reason
from shared.db import (
    UnitOfWork,
    UnitOfWorkFactory,
    asyncpg_dsn,
    database_unavailable,
    make_engine,
    uow_factory,
)
from shared.http import BodyLimit, install_problem_handlers, problem
from shared.kafka import make_consumer, make_producer
from shared.outbox import OutboxRelay
from shared.ownership import serialised
from shared.presence import Presence, peers
from shared.settings import ServiceSettings

DOCS_ASSETS = "/docs-assets"  # Swagger UI's files, from fastapi-offline

log = logging.getLogger(__name__)

# A controlled clock starts here until the first clock.set arrives (or is read back from the topic).
CONTROLLED_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


ClockJob = Callable[[UnitOfWork, datetime], Awaitable[None]]
Worker = Callable[[UnitOfWorkFactory, asyncio.Event], Awaitable[None]]
PendingProbe = Callable[[UnitOfWork, datetime], Awaitable[int]]


@dataclass(frozen=True)
class ServiceDefinition:
    """``clock_jobs`` run whenever the clock moves (controlled) or ticks (wall), each in a unit of
    work of its own that the runtime commits."""

    consumers: Sequence[ConsumerSpec] = ()
    routers: Sequence[APIRouter] = ()
    clock_jobs: Sequence[ClockJob] = ()
    description: str = ""
    # Run once at start, each in a unit of work the runtime commits, before any consumer starts
    # (seeding reference data such as the shipped strategy versions).
    on_start: Sequence[ClockJob] = ()
    # Long-running loops beside the consumers (the notifier's sender), stopped with the service.
    workers: Sequence[Worker] = ()
    # Work the service has accepted but not finished that no Kafka offset shows (deliveries due
    # at the partner, a reporting cycle under way), for ``GET /v1/ops/progress``.
    pending: PendingProbe | None = None


Build = Callable[[ServiceSettings, Clock], ServiceDefinition]


@dataclass
class _Worker:
    name: str
    task: asyncio.Task[None]
    closers: list[Any] = field(default_factory=list)


async def unit_of_work(request: Request) -> AsyncIterator[UnitOfWork]:
    """A FastAPI dependency: the request's unit of work, closed (rolled back unless committed)
    once the response is sent."""
    async with request.app.state.runtime.uow() as uow:
        yield uow


Uow = Annotated[UnitOfWork, Depends(unit_of_work)]


class ServiceRuntime:
    def __init__(self, settings: ServiceSettings, build: Build) -> None:
        self.settings = settings
        self.clock: WallClock | ControlledClock = (
            ControlledClock(CONTROLLED_EPOCH) if settings.clock == "controlled" else WallClock()
        )
        self.definition = build(settings, self.clock)
        for job in self.definition.clock_jobs:
            self.clock.on_advance(self._job_runner(job))
        self.presence: Presence | None = None
        if isinstance(self.clock, ControlledClock):
            self.presence = Presence(asyncpg_dsn(settings.database_url), settings.service_name)
            self.clock.on_applied(self.presence.moved)
        self._stop = asyncio.Event()
        self._workers: list[_Worker] = []
        self._engine: AsyncEngine | None = None
        self._producer: Any = None
        self._uow: UnitOfWorkFactory | None = None
        self.consumer_groups: dict[str, tuple[str, ...]] = {}
        self.started = False

    @property
    def name(self) -> str:
        return self.settings.service_name

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise RuntimeError("service not started")
        return self._engine

    @property
    def uow(self) -> UnitOfWorkFactory:
        if self._uow is None:
            raise RuntimeError("service not started")
        return self._uow

    @property
    def producer(self) -> Any:
        return self._producer

    async def start(self, *, consumers: bool = True, relay: bool = True) -> None:
        s = self.settings
        self._stop.clear()
        self._engine = make_engine(s.database_url)
        self._uow = uow_factory(self._engine)
        self._producer = make_producer(s.kafka_bootstrap_servers)
        await self._producer.start()

        for step in self.definition.on_start:
            async with self._uow() as uow:
                await step(uow, self.clock.now())
                await uow.commit()

        if isinstance(self.clock, ControlledClock):
            if self.presence is not None:
                self._spawn("presence", self.presence.run(self._stop))
            follower = ClockFollower(self.clock, s.kafka_bootstrap_servers)
            await follower.start()
            self._spawn("clock", follower.run(self._stop), follower.stop)
        else:
            self._spawn("ticker", self._tick(self.clock))

        if relay:
            outbox = OutboxRelay(
                self._engine,
                self._producer,
                service=self.name,
                listen_dsn=asyncpg_dsn(s.database_url),
                batch_size=s.relay_batch_size,
                poll_seconds=s.relay_poll_seconds,
            )
            self._spawn("relay", outbox.run(self._stop))
        if consumers:
            for spec in self.definition.consumers:
                group = f"{s.consumer_group}.{spec.name}"
                self.consumer_groups[group] = spec.topics
                consumer = make_consumer(s.kafka_bootstrap_servers, group, *spec.topics)
                await consumer.start()
                runner = ConsumerRunner(
                    spec,
                    service=self.name,
                    consumer=consumer,
                    producer=self._producer,
                    uow_factory=self._uow,
                    batch_size=s.consumer_batch_size,
                    max_retries=s.consumer_max_retries,
                    backoff_seconds=s.consumer_retry_backoff_seconds,
                )
                self._spawn(f"consumer:{spec.name}", self._keep_consuming(runner), consumer.stop)
        for index, worker in enumerate(self.definition.workers):
            self._spawn(f"worker:{index}", self._after_clock(worker))
        self.started = True
        log.info("%s started", self.name)

    async def stop(self) -> None:
        """Finish in-flight batches, commit them, leave the consumer groups, flush the producer."""
        self._stop.set()
        if self._workers:
            _, pending = await asyncio.wait(
                [w.task for w in self._workers], timeout=self.settings.shutdown_grace_seconds
            )
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for worker in self._workers:
            for close in worker.closers:
                with contextlib.suppress(Exception):
                    await close()
        self._workers = []
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None
        self.started = False
        log.info("%s stopped", self.name)

    async def readiness(self) -> list[str]:
        """What keeps the service from taking work, or an empty list."""
        if not self.started:
            return ["service is starting"]
        problems = []
        try:
            async with asyncio.timeout(3):
                async with self.engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
                at, head = await migrations.current(self.engine), migrations.head(self.name)
                if at != head:
                    problems.append(f"database schema at {at}, migrations head is {head}")
        except Exception as exc:
            problems.append(f"database unreachable: {type(exc).__name__}")
        try:
            async with asyncio.timeout(3):
                await self._producer.client.fetch_all_metadata()
        except Exception as exc:
            problems.append(f"kafka unreachable: {type(exc).__name__}")
        problems += [f"{w.name} stopped" for w in self._workers if w.task.done()]
        return problems

    async def progress(self, *, wait: float = 0.0, clock: datetime | None = None) -> dict[str, Any]:
        """Where the service is: its clock, whether a clock move is still being applied, rows
        waiting in its outbox, work accepted but unfinished, and the consumer groups (with their
        topics) whose committed offsets say what it has read. A driver of the controlled clock
        (the simulator, the end-to-end suite) waits on this until the system is quiet.

        With ``wait``, answers as soon as the service is idle (at ``clock``, if given) or when
        ``wait`` seconds have passed: one request instead of a driver polling."""
        deadline = time.monotonic() + wait
        pause = 0.002
        while True:
            # the in-memory conditions first: no database query while a move is applied
            moved = clock is None or self.clock.now() == clock
            busy = isinstance(self.clock, ControlledClock) and self.clock.busy
            if wait <= 0 or (moved and not busy):
                snapshot = await self._progress_now()
                if wait <= 0 or _idle(snapshot):
                    return snapshot
            if time.monotonic() >= deadline:
                return await self._progress_now()
            await asyncio.sleep(pause)
            pause = min(0.02, pause * 1.5)

    async def _progress_now(self) -> dict[str, Any]:
        async with self.uow() as uow:
            outbox = int(
                (await uow.session.execute(text("SELECT count(*) FROM outbox"))).scalar_one()
            )
            probe = self.definition.pending
            pending = await probe(uow, self.clock.now()) if probe is not None else 0
            # Peers still applying an earlier move (the driver reached only this replica).
            replicas = await peers(uow.session, self.name) if self.presence else {}
        clock = self.clock
        return {
            "service": self.name,
            "clock": clock.now().isoformat(),
            "clock_mode": "controlled" if isinstance(clock, ControlledClock) else "wall",
            "clock_busy": isinstance(clock, ControlledClock) and clock.busy,
            "outbox_pending": outbox,
            "work_pending": pending,
            "replicas": len(replicas),
            "replicas_behind": sum(1 for at in replicas.values() if at < clock.now()),
            "consumer_groups": {g: list(t) for g, t in self.consumer_groups.items()},
        }

    def _job_runner(self, job: ClockJob) -> Listener:
        # Every replica runs every job on every move, one at a time: the first does the work,
        # the rest find it done. A replica that dies mid-job rolls back and frees the lock.
        owner = f"{self.name}:clock-job:{job.__qualname__}"

        async def run(now: datetime) -> None:
            if self._uow is None:
                return  # a move before start: the job catches up on the next one
            await run_clock_job(self._uow, owner, job, now, self._stop)

        return run

    def _spawn(self, name: str, coro: Any, *closers: Any) -> None:
        self._workers.append(_Worker(name, asyncio.create_task(coro, name=name), list(closers)))

    async def clock_set(self) -> bool:
        """Wait for a controlled clock's first ``clock.set`` (True), or the stop (False): a
        consumer or worker that ran before it would stamp its events with a placeholder time."""
        if not isinstance(self.clock, ControlledClock) or self.clock.started.is_set():
            return True
        started = asyncio.create_task(self.clock.started.wait())
        stopped = asyncio.create_task(self._stop.wait())
        await asyncio.wait({started, stopped}, return_when=asyncio.FIRST_COMPLETED)
        started.cancel()
        stopped.cancel()
        return self.clock.started.is_set()

    async def _after_clock(self, worker: Worker) -> None:
        assert self._uow is not None
        if await self.clock_set():
            await worker(self._uow, self._stop)

    async def _keep_consuming(self, runner: ConsumerRunner) -> None:
        if not await self.clock_set():
            return
        while not self._stop.is_set():
            try:
                await runner.run(self._stop)
            except Exception:
                # A rebalance during commit or a broker hiccup: uncommitted records come back and
                # the inbox drops what was already applied.
                log.exception("consumer %s failed; resuming", runner.spec.name)
                await asyncio.sleep(1)

    async def _tick(self, clock: WallClock) -> None:
        while not self._stop.is_set():
            await clock.tick()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=self.settings.tick_seconds)


async def run_clock_job(
    uow: UnitOfWorkFactory,
    owner: str,
    job: ClockJob,
    now: datetime,
    stop: asyncio.Event,
    *,
    max_pause: float = 2.0,
) -> None:
    """One clock job at ``now``, in a transaction serialised across replicas by ``owner``.

    A deadlock with a handler touching the same rows is tried again twice, then raised. A
    database that is restarting or unreachable is waited for, however long (until ``stop``):
    the move's work belongs to the move, and the clock stays busy meanwhile, so that a driver
    of the controlled clock waits too. A fault suite lost a day's due-soon reminders when a
    job gave up after three quick tries while PostgreSQL restarted (57P03) and the next move
    did the work hours of business time late.
    """
    failures, pause = 0, 0.1
    while True:
        try:
            async with uow() as unit:
                await serialised(unit.session, owner)
                await job(unit, now)
                await unit.commit()
            return
        except (DBAPIError, ConnectionError) as exc:
            if database_unavailable(exc):
                if stop.is_set():
                    raise
                log.warning("clock job waits for the database (%s)", safe_reason(exc))
                await asyncio.sleep(pause)
                pause = min(max_pause, pause * 2)
                continue
            failures += 1
            if failures == 3:
                raise
            log.warning("clock job failed (%s); retrying", safe_reason(exc))
            await asyncio.sleep(0.1 * failures)


def _idle(snapshot: dict[str, Any]) -> bool:
    return bool(
        not snapshot["clock_busy"]
        and snapshot["outbox_pending"] == 0
        and snapshot["work_pending"] == 0
        and snapshot["replicas_behind"] == 0
    )


class WritesAfterTheClock:
    """Before a controlled clock's first ``clock.set``, requests that would change state (and
    stamp events with a placeholder time) get 503 with Retry-After; reads go through."""

    def __init__(self, app: Any, clock: ControlledClock) -> None:
        self.app = app
        self.clock = clock

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if (
            scope["type"] == "http"
            and not self.clock.started.is_set()
            and scope["method"] not in ("GET", "HEAD", "OPTIONS")
            and scope["path"].startswith("/v1/")
        ):
            refused = problem(
                503,
                "Service Unavailable",
                "the controlled clock has not been set yet (no clock.set on system.clock)",
            )
            refused.headers["Retry-After"] = "1"
            await refused(scope, receive, send)
            return
        await self.app(scope, receive, send)


def create_app(runtime: ServiceRuntime, *, manage_runtime: bool = True) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if manage_runtime:
            await runtime.start()
        try:
            yield
        finally:
            if manage_runtime:
                await runtime.stop()

    # Its /docs page serves Swagger UI's files from the package, not a CDN: bank networks are
    # often offline. No ReDoc page: its bundle still fetches its badge from a CDN.
    app = FastAPIOffline(
        redoc_url=None,
        title=f"Arrears {runtime.name}",
        description=runtime.definition.description,
        version="0.1.0",
        lifespan=lifespan,
        static_url=DOCS_ASSETS,
    )
    app.state.runtime = runtime
    app.state.keyring = KeyRing(runtime.settings.api_keys)
    install_problem_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=runtime.settings.max_body_bytes)

    if isinstance(runtime.clock, ControlledClock):
        app.add_middleware(WritesAfterTheClock, clock=runtime.clock)

    @app.get("/healthz", tags=["operations"], summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["operations"],
        summary="Kafka and the database are reachable and migrations are at head",
        responses={503: {"description": "Not ready; the reasons are listed"}},
    )
    async def readyz() -> Response:
        problems = await runtime.readiness()
        if problems:
            return problem(503, "Service Unavailable", "; ".join(problems), reasons=problems)
        return Response('{"status":"ready"}', media_type="application/json")

    @app.get(
        "/metrics",
        tags=["operations"],
        summary="Prometheus metrics (scope metrics:read)",
        dependencies=[Depends(require("metrics:read"))],
    )
    async def metrics_endpoint(request: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get(
        "/v1/ops/progress",
        tags=["operations"],
        summary="Clock, outbox backlog, unfinished work and consumer groups (scope metrics:read)",
        dependencies=[Depends(require("metrics:read"))],
    )
    async def progress(
        wait: Annotated[float, Query(ge=0, le=30, description="seconds to wait for idle")] = 0,
        clock: Annotated[
            datetime | None, Query(description="with wait: idle at this clock instant")
        ] = None,
    ) -> dict[str, Any]:
        return await runtime.progress(wait=wait, clock=clock)

    for router in runtime.definition.routers:
        app.include_router(router)
    return app
