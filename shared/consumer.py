"""The consumer runner: the inbound half of the delivery guarantees.

For each partition's batch it decodes the records, applies the handlers in one database
transaction together with the inbox claim of their ``ce_id``s, commits, and only then commits the
Kafka offset. A redelivered record finds its ``ce_id`` claimed and has no effect. A batch that
fails is retried one record at a time, with bounded backoff for transient errors; a record that
cannot be decoded, fails permanently or exhausts its retries goes to ``<topic>.dlq`` with its
original key, value and headers plus the reason, and the partition moves on. A database that is
restarting or unreachable is no fault of the record: the runner waits for it, however long, and
the record is applied once it is back.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from shared import metrics, topics
from shared.db import UnitOfWork, UnitOfWorkFactory, database_unavailable
from shared.envelope import CloudEvent, InvalidEvent, decode
from shared.events import Payload, name_of
from shared.logging import describe_error, event_context
from shared.outbox import claim

log = logging.getLogger(__name__)

P = TypeVar("P", bound=Payload)


@dataclass
class Touched:
    """What a transaction's handlers changed that their service settles once, just before the
    commit: the accounts to re-evaluate together in one set-based pass (insertion-ordered), and
    the events whose announcement must wait for that pass (a payment's new balance, say)."""

    accounts: dict[str, None] = field(default_factory=dict)
    receipts: list[Payload] = field(default_factory=list)

    @classmethod
    def of(cls, account_ids: Iterable[str] = (), receipts: Iterable[Payload] = ()) -> Touched:
        return cls(dict.fromkeys(account_ids), list(receipts))

    def add(self, other: Touched | None) -> None:
        if other is not None:
            self.accounts.update(other.accounts)
            self.receipts.extend(other.receipts)

    def __bool__(self) -> bool:
        return bool(self.accounts or self.receipts)


# Envelope-level handlers, by ce_type: what the runner calls. Services register theirs by payload
# class through :class:`Handlers`, which derives the ce_type and hands over the typed payload.
Handler = Callable[[UnitOfWork, CloudEvent], Awaitable[Touched | None]]
BatchHandler = Callable[[UnitOfWork, Sequence[CloudEvent]], Awaitable[Touched | None]]
Settle = Callable[[UnitOfWork, Touched], Awaitable[None]]


class Handlers:
    """A service's event handlers, registered by payload class.

    ``each(PaymentMissed, f)`` calls ``f(uow, data, event)`` with ``data`` already a
    ``PaymentMissed`` (checked, not cast); ``runs(PaymentPosted, f)`` calls ``f(uow, [data, ...])``
    with a run of consecutive events of that type, so one statement can serve many rows.
    """

    def __init__(self) -> None:
        self.one: dict[str, Handler] = {}
        self.batch: dict[str, BatchHandler] = {}

    def each(
        self,
        payload: type[P],
        handle: Callable[[UnitOfWork, P, CloudEvent], Awaitable[Touched | None]],
    ) -> None:
        async def call(uow: UnitOfWork, event: CloudEvent) -> Touched | None:
            return await handle(uow, _payload(event, payload), event)

        self.one[self._name(payload)] = call

    def on(
        self, payload: type[P], command: Callable[[UnitOfWork, P], Awaitable[Touched | None]]
    ) -> None:
        """``each`` for a use case that needs only the payload, not the envelope."""

        async def handle(uow: UnitOfWork, data: P, _: CloudEvent) -> Touched | None:
            return await command(uow, data)

        self.each(payload, handle)

    def runs(
        self,
        payload: type[P],
        handle: Callable[[UnitOfWork, list[P]], Awaitable[Touched | None]],
    ) -> None:
        async def call(uow: UnitOfWork, events: Sequence[CloudEvent]) -> Touched | None:
            return await handle(uow, [_payload(e, payload) for e in events])

        self.batch[self._name(payload)] = call

    def _name(self, payload: type[Payload]) -> str:
        name = name_of(payload)
        if name in self.one or name in self.batch:
            raise RuntimeError(f"{name} has two handlers")
        return name


def _payload(event: CloudEvent, payload: type[P]) -> P:
    data = event.data
    if not isinstance(data, payload):  # the registry decodes each ce_type into its one class
        raise PermanentError(f"{event.type}: payload is not a {payload.__name__}")
    return data


class PermanentError(Exception):
    """A handler's verdict that retrying cannot help. The message must carry no personal data."""


@dataclass(frozen=True)
class ConsumerSpec:
    """What one consumer group of a service reads and how each event type is handled.

    Event types in the registry but absent from both handler maps are acknowledged and skipped:
    a service reads a whole topic but cares about only some of its types. A *batch handler*
    takes a run of consecutive events of its type at once (one statement for many rows, say).
    ``batchable`` specs share one transaction across a batch; turn it off for a handler whose
    effects on one record could be undone by a failure on another. ``settle`` is the service's
    step after a transaction's handlers and before its commit, given everything they touched.
    """

    name: str
    topics: tuple[str, ...]
    handlers: Mapping[str, Handler] = field(default_factory=dict)
    batch_handlers: Mapping[str, BatchHandler] = field(default_factory=dict)
    batchable: bool = True
    settle: Settle | None = None

    @classmethod
    def of(
        cls,
        name: str,
        topics: tuple[str, ...],
        handlers: Handlers,
        settle: Settle | None = None,
        *,
        batchable: bool = True,
    ) -> ConsumerSpec:
        return cls(name, topics, handlers.one, handlers.batch, batchable, settle)

    def handles(self, event_type: str) -> bool:
        return event_type in self.handlers or event_type in self.batch_handlers


def safe_reason(exc: BaseException) -> str:
    """A reason fit for a header or a log line: never a bound SQL parameter or a payload."""
    if isinstance(exc, InvalidEvent | PermanentError):
        return str(exc)[:500]
    return describe_error(exc)


class ConsumerRunner:
    def __init__(
        self,
        spec: ConsumerSpec,
        *,
        service: str,
        consumer: Any,
        producer: Any,
        uow_factory: UnitOfWorkFactory,
        batch_size: int = 500,
        max_retries: int = 5,
        backoff_seconds: float = 0.2,
        max_outage_pause: float = 2.0,
    ) -> None:
        self.spec = spec
        self._service = service
        self._consumer = consumer
        self._producer = producer
        self._uow = uow_factory
        self._batch_size = batch_size
        self._max_retries = max_retries
        self._backoff = backoff_seconds
        self._max_outage_pause = max_outage_pause
        self._stop = asyncio.Event()
        self.inbox_name = inbox_name(service, spec)
        self._lag_reported_at = 0.0
        self._dead_letters: list[asyncio.Future[Any]] = []

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; the fetch in hand is finished and committed first."""
        self._stop = stop
        while not stop.is_set():
            fetched = await self._consumer.getmany(timeout_ms=200, max_records=self._batch_size)
            if fetched:
                try:
                    await self.process([r for records in fetched.values() for r in records])
                except BaseException:
                    self._rewind(fetched)
                    raise
                await self._consumer.commit(
                    {tp: records[-1].offset + 1 for tp, records in fetched.items()}
                )
            await self._report_lag()

    def _rewind(self, fetched: Mapping[Any, Sequence[Any]]) -> None:
        """Put the consumer back at the start of a fetch that was not finished. Its offsets are
        not committed, but the consumer's position is past it: without this, a runner resumed
        after a failure (a dead letter the restarting broker refused, say) would read on from
        the next fetch and commit past records it never applied."""
        for tp, records in fetched.items():
            try:
                self._consumer.seek(tp, records[0].offset)
            except Exception as exc:  # revoked meanwhile: its new owner reads from the commit
                log.info("not rewinding %s: %s", tp, type(exc).__name__)

    async def process(self, records: Sequence[Any]) -> None:
        """Apply one fetch (records of any of the spec's partitions, each partition in order).

        The whole fetch shares one transaction, so one commit (one fsync) serves hundreds of
        records; if that fails, each record is applied on its own so one bad record costs only
        itself. Returns once every dead letter of the fetch is acknowledged by the broker.
        """
        try:
            await self._process(records)
        finally:
            pending, self._dead_letters = self._dead_letters, []
            await asyncio.gather(*pending)

    async def _process(self, records: Sequence[Any]) -> None:
        for topic, count in Counter(record.topic for record in records).items():
            metrics.CONSUMED.labels(self._service, topic).inc(count)
        ready: list[tuple[Any, CloudEvent]] = []
        for record in records:
            try:
                event = decode(record.key, record.value, record.headers)
            except InvalidEvent as exc:
                await self._dead_letter(record, exc.reason, "invalid")
                continue
            if self.spec.handles(event.type):
                ready.append((record, event))
        if not ready:
            return
        started = time.perf_counter()
        try:
            if self.spec.batchable and len(ready) > 1:
                try:
                    await self._apply(ready)
                    return
                except Exception as exc:
                    log.warning(
                        "batch of %d failed (%s); applying one record at a time",
                        len(ready),
                        safe_reason(exc),
                    )
            for item in ready:
                await self._apply_with_retries(item)
        finally:
            metrics.HANDLER_SECONDS.labels(self._service, self.spec.name).observe(
                time.perf_counter() - started
            )

    async def _apply(self, items: Sequence[tuple[Any, CloudEvent]]) -> None:
        async with self._uow() as uow:
            applied = await apply_events(uow, self.inbox_name, self.spec, [e for _, e in items])
            for (record, _), fresh in zip(items, applied, strict=True):
                if not fresh:
                    metrics.DUPLICATES.labels(self._service, record.topic).inc()
            await uow.commit()

    async def _apply_with_retries(self, item: tuple[Any, CloudEvent]) -> None:
        record, event = item
        attempt, pause = 0, self._backoff
        while True:
            try:
                await self._apply([item])
                return
            except PermanentError as exc:
                await self._dead_letter(record, safe_reason(exc), "rejected", event)
                return
            except Exception as exc:
                if database_unavailable(exc):
                    # A fault suite dead-lettered a good record when PostgreSQL took longer to
                    # restart than the retries lasted (about six seconds).
                    if self._stop.is_set():
                        raise  # left uncommitted: the next start applies it
                    log.warning(
                        "handling %s waits for the database (%s)", event.type, safe_reason(exc)
                    )
                    await asyncio.sleep(pause)
                    pause = min(self._max_outage_pause, pause * 2)
                    continue
                attempt += 1
                if attempt > self._max_retries:
                    await self._dead_letter(
                        record,
                        f"gave up after {attempt} attempts: {safe_reason(exc)}",
                        "exhausted",
                        event,
                    )
                    return
                delay = self._backoff * 2 ** (attempt - 1) * (0.5 + random.random())
                log.warning(
                    "handling %s failed (%s); retry %d/%d in %.2fs",
                    event.type,
                    safe_reason(exc),
                    attempt,
                    self._max_retries,
                    delay,
                )
                await asyncio.sleep(delay)

    async def _dead_letter(
        self, record: Any, reason: str, kind: str, event: CloudEvent | None = None
    ) -> None:
        headers = list(record.headers or ())
        headers += [
            ("dlq_reason", reason.encode()),
            ("dlq_kind", kind.encode()),
            ("dlq_consumer", self.inbox_name.encode()),
            ("dlq_source_topic", record.topic.encode()),
            ("dlq_source_partition", str(record.partition).encode()),
            ("dlq_source_offset", str(record.offset).encode()),
            # Wall time on purpose: this stamps an operational incident, not business time.
            ("dlq_failed_at", datetime.now(UTC).isoformat().encode()),
        ]
        # Acknowledged in bulk at the end of the fetch, before its offsets are committed.
        self._dead_letters.append(
            await self._producer.send(
                topics.dlq(record.topic), value=record.value, key=record.key, headers=headers
            )
        )
        metrics.FAILED.labels(self._service, record.topic, kind).inc()
        log.error(
            "dead-lettered record %s/%d@%d: %s",
            record.topic,
            record.partition,
            record.offset,
            reason,
            extra={"ce_id": event.id if event else None},
        )

    async def _report_lag(self) -> None:
        now = time.monotonic()
        if now - self._lag_reported_at < 1.0:
            return
        self._lag_reported_at = now
        for tp in self._consumer.assignment():
            highwater = self._consumer.highwater(tp)
            if highwater is None:
                continue
            position = await self._consumer.position(tp)
            metrics.CONSUMER_LAG.labels(self._service, tp.topic, str(tp.partition)).set(
                max(0, highwater - position)
            )


def inbox_name(service: str, spec: ConsumerSpec) -> str:
    return f"{service}:{spec.name}"


async def apply_events(
    uow: UnitOfWork, inbox: str, spec: ConsumerSpec, events: Sequence[CloudEvent]
) -> list[bool]:
    """Claim the events' ids in ``inbox``, run the handlers of those not seen before and then the
    spec's settle step over what they touched, in the caller's unit of work (which commits).
    Returns, per event, whether it was applied. Kafka and
    HTTP ingest share this, so an event arriving both ways has one effect."""
    fresh = await claim(uow.session, inbox, list({e.id for e in events}))
    applied: list[bool] = []
    todo: list[CloudEvent] = []
    for event in events:
        is_new = event.id in fresh
        fresh.discard(event.id)  # a copy later in the same batch is a duplicate too
        applied.append(is_new)
        if is_new:
            todo.append(event)
    touched = Touched()
    for run in runs_keeping_key_order(todo):
        batch_handler = spec.batch_handlers.get(run[0].type)
        if batch_handler is not None:
            touched.add(await batch_handler(uow, run))
            continue
        for event in run:
            with event_context(event):
                touched.add(await spec.handlers[event.type](uow, event))
    if touched and spec.settle is not None:
        await spec.settle(uow, touched)
    return applied


def runs_keeping_key_order(events: Sequence[CloudEvent]) -> list[list[CloudEvent]]:
    """The events regrouped into runs of one type, as long as they can be made without
    reordering any one key's events (the only order Kafka promises, and the only one a handler
    may rely on).

    Each type gets a stage (the order of its first appearance). A key's events stay in one wave
    while their stages do not go backwards; a step back starts the key's next wave. Waves run in
    order, and within a wave each stage runs as one run in arrival order: so a fetch of
    ``upsert, loan, payment, payment`` per customer becomes three runs however many customers it
    holds, and one customer's ``payment, reversal, payment`` becomes three waves.
    """
    stages: dict[str, int] = {}
    last: dict[str, tuple[int, int]] = {}  # key -> (stage, wave) of its latest event
    waves: list[dict[int, list[CloudEvent]]] = []
    for event in events:
        stage = stages.setdefault(event.type, len(stages))
        previous_stage, wave = last.get(event.key, (0, 0))
        if stage < previous_stage:
            wave += 1
        last[event.key] = (stage, wave)
        while len(waves) <= wave:
            waves.append({})
        waves[wave].setdefault(stage, []).append(event)
    return [run for wave in waves for _, run in sorted(wave.items())]
