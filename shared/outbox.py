"""The transactional outbox and the inbox: the tables every service keeps beside its own, and the
relay that moves committed outbox rows to Kafka.

Ordering per key with several relay replicas: rows are spread over a fixed set of *lanes* by a
hash of their key. A relay claims free lanes with ``FOR UPDATE SKIP LOCKED`` and publishes only
their rows, oldest first, so two replicas never publish rows of the same key at the same time,
while each still takes whatever work is free.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import asyncpg
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from shared import metrics
from shared.envelope import CloudEvent, encode

log = logging.getLogger(__name__)

LANES = 16
NOTIFY_CHANNEL = "arrears_outbox"

backbone_metadata = MetaData()

outbox_table = Table(
    "outbox",
    backbone_metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("lane", SmallInteger, nullable=False),
    Column("topic", Text, nullable=False),
    Column("key", Text, nullable=False),
    Column("ce_id", Text, nullable=False),
    # A JSON list [name, value, name, value...] kept as plain text: the relay hands it to Kafka
    # as it is, so no JSONB parsing or array encoding is paid per row.
    Column("headers", Text, nullable=False),
    Column("value", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

outbox_lane_table = Table(
    "outbox_lane",
    backbone_metadata,
    Column("lane", SmallInteger, primary_key=True, autoincrement=False),
)

inbox_table = Table(
    "inbox",
    backbone_metadata,
    Column("consumer", Text, nullable=False),
    Column("ce_id", Text, nullable=False),
    Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("consumer", "ce_id"),
)

Index("outbox_lane_id", outbox_table.c.lane, outbox_table.c.id)


def lane_of(key: str) -> int:
    return zlib.crc32(key.encode()) % LANES


OUTBOX_COLUMNS = ("lane", "topic", "key", "ce_id", "headers", "value")


def outbox_rows(events: Iterable[CloudEvent]) -> list[tuple[Any, ...]]:
    """Outbox rows in ``OUTBOX_COLUMNS`` order, encoded exactly as they will go on the wire."""
    rows = []
    for event in events:
        _, value, headers = encode(event)
        flat = json.dumps([part for name, raw in headers for part in (name, raw.decode())])
        rows.append((lane_of(event.key), event.topic, event.key, event.id, flat, value))
    return rows


# --- schema, for each service's first migration ------------------------------------------------

NOTIFY_FUNCTION = f"""
CREATE OR REPLACE FUNCTION arrears_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('{NOTIFY_CHANNEL}', '');
  RETURN NULL;
END $$
"""


def create_backbone_schema(op: Any) -> None:
    """Called from a service's first Alembic migration (``op`` is ``alembic.op``)."""
    bind = op.get_bind()
    backbone_metadata.create_all(bind)
    op.execute(
        text("INSERT INTO outbox_lane (lane) SELECT generate_series(0, :n - 1)").bindparams(n=LANES)
    )
    op.execute(NOTIFY_FUNCTION)
    # One notification per inserting statement (not per row), delivered when it commits.
    op.execute(
        "CREATE TRIGGER outbox_notify AFTER INSERT ON outbox "
        "FOR EACH STATEMENT EXECUTE FUNCTION arrears_outbox_notify()"
    )


def drop_backbone_schema(op: Any) -> None:
    op.execute("DROP TRIGGER IF EXISTS outbox_notify ON outbox")
    op.execute("DROP FUNCTION IF EXISTS arrears_outbox_notify()")
    backbone_metadata.drop_all(op.get_bind())


# --- inbox -------------------------------------------------------------------------------------

CLAIM_SQL = text(
    "INSERT INTO inbox (consumer, ce_id) SELECT :consumer, unnest(CAST(:ids AS text[])) "
    "ON CONFLICT DO NOTHING RETURNING ce_id"
)


async def claim(session: Any, consumer: str, ce_ids: Sequence[str]) -> set[str]:
    """Record ``ce_ids`` as processed by ``consumer``; returns those not seen before.

    Runs inside the handler's transaction: if that rolls back, the claim does too.
    """
    if not ce_ids:
        return set()
    result = await session.execute(CLAIM_SQL, {"consumer": consumer, "ids": list(ce_ids)})
    return {row[0] for row in result}


# --- relay -------------------------------------------------------------------------------------


class OutboxRelay:
    """Publishes committed outbox rows with an idempotent producer, then deletes them.

    A crash between the broker's acknowledgement and the delete republishes those rows on
    restart; consumers drop the copies by ``ce_id`` in their inbox.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        producer: Any,
        *,
        service: str,
        listen_dsn: str | None,
        batch_size: int = 1000,
        poll_seconds: float = 0.5,
    ) -> None:
        self._engine = engine
        self._producer = producer
        self._service = service
        self._listen_dsn = listen_dsn
        self._batch_size = batch_size
        self._poll_seconds = poll_seconds
        self._wake = asyncio.Event()
        self._last_backlog_check = 0.0

    async def publish_once(self) -> int:
        async with self._engine.connect() as conn:
            # The driver's own connection and transaction: rows come back as asyncpg records
            # without SQLAlchemy's per-row processing, which the hot path can't afford.
            raw = await conn.get_raw_connection()
            db: Any = raw.driver_connection
            async with db.transaction():
                published = await self._publish_in(db)
        for topic, count in Counter(published).items():
            metrics.PRODUCED.labels(self._service, topic).inc(count)
        return len(published)

    async def _publish_in(self, db: Any) -> list[str]:
        """Claim free lanes, publish their oldest rows and delete them, all inside ``db``'s
        transaction; returns the topic of each row published."""
        lanes = await db.fetch("SELECT lane FROM outbox_lane ORDER BY lane FOR UPDATE SKIP LOCKED")
        if not lanes:
            return []
        rows = await db.fetch(
            "SELECT id, topic, key, headers, value FROM outbox "
            "WHERE lane = ANY($1::smallint[]) ORDER BY id LIMIT $2",
            [lane[0] for lane in lanes],
            self._batch_size,
        )
        pending = []
        for row in rows:
            flat = row["headers"]
            if isinstance(flat, str):  # text; a database made by an early 0001 has jsonb
                flat = json.loads(flat)
            headers = [(flat[i], flat[i + 1].encode()) for i in range(0, len(flat), 2)]
            pending.append(
                await self._producer.send(
                    row["topic"], value=row["value"], key=row["key"].encode(), headers=headers
                )
            )
        await asyncio.gather(*pending)
        if rows:
            await db.execute(
                "DELETE FROM outbox WHERE id = ANY($1::bigint[])", [row["id"] for row in rows]
            )
        return [row["topic"] for row in rows]

    async def backlog(self) -> int:
        async with self._engine.connect() as conn:
            return int((await conn.execute(text("SELECT count(*) FROM outbox"))).scalar_one())

    async def run(self, stop: asyncio.Event) -> None:
        listener = await self._listen()
        try:
            while not stop.is_set():
                # Cleared before reading, not after: rows committed while a round publishes
                # notify during it, and must wake the next round rather than wait for the poll.
                self._wake.clear()
                try:
                    published = await self.publish_once()
                    await self._report_backlog()
                except Exception:
                    log.exception("outbox relay cycle failed; retrying")
                    published = 0
                    await _sleep_unless(stop, self._poll_seconds)
                    continue
                if published >= self._batch_size:
                    continue
                waiters = [
                    asyncio.ensure_future(self._wake.wait()),
                    asyncio.ensure_future(stop.wait()),
                ]
                await asyncio.wait(
                    waiters, timeout=self._poll_seconds, return_when="FIRST_COMPLETED"
                )
                for waiter in waiters:
                    waiter.cancel()
        finally:
            if listener is not None:
                await listener.close()

    async def _listen(self) -> asyncpg.Connection | None:
        if self._listen_dsn is None:
            return None
        try:
            connection = await asyncpg.connect(self._listen_dsn)
            await connection.add_listener(NOTIFY_CHANNEL, lambda *_: self._wake.set())
            return connection
        except (OSError, asyncpg.PostgresError):
            log.warning("outbox relay cannot LISTEN; falling back to polling")
            return None

    async def _report_backlog(self) -> None:
        now = time.monotonic()
        if now - self._last_backlog_check < 5:
            return
        self._last_backlog_check = now
        metrics.OUTBOX_BACKLOG.labels(self._service).set(await self.backlog())


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
