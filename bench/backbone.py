"""Backbone throughput, raw against guaranteed, in one run on the same broker and machine.

Both runs put the producing side and the consuming side in separate processes, as two services
would be:

1. raw: a plain aiokafka producer sends N ready-encoded records; a plain aiokafka consumer
   (auto-committed offsets) in another process receives them;
2. guaranteed: a producing process commits N events through the unit of work into the outbox
   (4 concurrent writers, 100 events a transaction) while its relay publishes them; a consuming
   process applies them through the consumer runner: decode and validate, inbox claim and one
   effect row per event in the same transaction, then the offset commit.

Each is timed from the first send (or write) to the N-th record received (or effect committed).

    python -m bench.backbone [--events 100000] [--size 500]

Uses KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL when set, else starts its own broker and
PostgreSQL through the project's launcher (folder .stack/bench, ports 39092 and 35432).
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import signal
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import text

from bench.report import report
from shared.consumer import ConsumerRunner, ConsumerSpec
from shared.db import UnitOfWork, asyncpg_dsn, make_engine, uow_factory
from shared.envelope import CloudEvent, encode, new_event
from shared.events import PaymentReversed
from shared.kafka import ensure_topics, make_consumer, make_producer
from shared.outbox import OutboxRelay
from tests.support.databases import migrated_database
from tests.support.infra import provide

T0 = datetime(2026, 12, 1, tzinfo=UTC)
ROOT = Path(__file__).resolve().parent.parent
EFFECTS_DDL = (
    "CREATE TABLE IF NOT EXISTS effects "
    "(id bigserial PRIMARY KEY, ce_id text NOT NULL, customer_id text NOT NULL)"
)


def make_events(n: int, size: int) -> list[CloudEvent]:
    probe = new_event(
        PaymentReversed(account_id="A-000000", payment_id="P-0000000", reason=""),
        source="/bench",
        key="C-00000",
        time=T0,
    )
    pad = max(0, size - len(encode(probe)[1]))
    return [
        new_event(
            PaymentReversed(
                account_id=f"A-{i % 50_000:06d}", payment_id=f"P-{i:07d}", reason="x" * pad
            ),
            source="/bench",
            key=f"C-{i % 20_000:05d}",
            time=T0,
        )
        for i in range(n)
    ]


# --- the consuming processes -------------------------------------------------------------------


async def _assigned(consumer: object) -> None:
    while not consumer.assignment():  # type: ignore[attr-defined]
        await asyncio.sleep(0.05)
    for tp in consumer.assignment():  # type: ignore[attr-defined]
        await consumer.position(tp)  # type: ignore[attr-defined]  # pin the start offsets


async def consume_raw(bootstrap: str, topic: str, n: int) -> float:
    # A plain consumer as most code writes one: offsets auto-committed in the background.
    consumer = make_consumer(
        bootstrap, f"bench-{uuid.uuid4().hex[:8]}", topic, enable_auto_commit=True
    )
    await consumer.start()
    await _assigned(consumer)
    print("ready", flush=True)
    received = 0
    while received < n:
        batch = await consumer.getmany(timeout_ms=200, max_records=1000)
        received += sum(len(part) for part in batch.values())
    finished = time.time()
    await consumer.stop()
    return finished


async def consume_guaranteed(bootstrap: str, topic: str, n: int, db_url: str) -> float:
    engine = make_engine(db_url, pool_size=4)
    producer = make_producer(bootstrap)  # for dead letters only
    await producer.start()
    consumer = make_consumer(
        bootstrap, f"bench-{uuid.uuid4().hex[:8]}", topic, auto_offset_reset="latest"
    )
    await consumer.start()
    await _assigned(consumer)

    async def effect(uow: UnitOfWork, batch: Sequence[CloudEvent]) -> None:
        await uow.session.execute(
            text("INSERT INTO effects (ce_id, customer_id) VALUES (:i, :c)"),
            [{"i": event.id, "c": event.key} for event in batch],
        )

    event_type = make_events(1, 10)[0].type
    runner = ConsumerRunner(
        ConsumerSpec("bench", (topic,), batch_handlers={event_type: effect}),
        service="bench",
        consumer=consumer,
        producer=producer,
        uow_factory=uow_factory(engine),
        batch_size=1000,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    print("ready", flush=True)
    while True:
        async with engine.connect() as conn:
            count = (await conn.execute(text("SELECT count(*) FROM effects"))).scalar_one()
        if count >= n:
            break
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    finished = time.time()
    stop.set()
    await task
    await consumer.stop()
    await producer.stop()
    await engine.dispose()
    return finished


async def spawn_consumer(*args: str) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.backbone", *args, cwd=ROOT, stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), timeout=60)
    if line.strip() != b"ready":
        raise RuntimeError(f"consumer failed to start: {line!r}")
    return process


async def finished_at(process: asyncio.subprocess.Process) -> float:
    out, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"consumer exited {process.returncode}")
    return float(out.decode().split()[-1])


# --- the producing side ------------------------------------------------------------------------


async def raw(bootstrap: str, events: list[CloudEvent]) -> float:
    topic = f"bench.raw.{uuid.uuid4().hex[:8]}"
    await ensure_topics(bootstrap, 6, (topic,))
    records = [encode(e) for e in events]
    consumer = await spawn_consumer("consume-raw", bootstrap, topic, str(len(records)))
    producer = make_producer(bootstrap)
    await producer.start()
    started = time.time()
    pending = [await producer.send(topic, value=v, key=k, headers=h) for k, v, h in records]
    await asyncio.gather(*pending)
    finished = await finished_at(consumer)
    await producer.stop()
    return len(records) / (finished - started)


async def guaranteed(
    bootstrap: str, db_url: str, events: list[CloudEvent], txn: int, writers: int
) -> tuple[float, float]:
    engine = make_engine(db_url, pool_size=writers + 2)
    async with engine.begin() as conn:
        await conn.execute(text(EFFECTS_DDL))
        await conn.execute(text("TRUNCATE effects, inbox, outbox"))
    topic = events[0].topic
    consumer = await spawn_consumer(
        "consume-guaranteed", bootstrap, topic, str(len(events)), db_url
    )
    producer = make_producer(bootstrap)
    await producer.start()
    relay = OutboxRelay(
        engine,
        producer,
        service="bench",
        listen_dsn=asyncpg_dsn(db_url),
        batch_size=2000,
        poll_seconds=0.2,
    )
    stop = asyncio.Event()
    relaying = asyncio.create_task(relay.run(stop))
    uow = uow_factory(engine)

    async def write(share: list[CloudEvent]) -> None:
        for i in range(0, len(share), txn):
            async with uow() as unit:
                for event in share[i : i + txn]:
                    unit.publish(event)
                await unit.commit()

    started = time.time()
    # Several writers at once, as a service's concurrent requests and handlers would be.
    await asyncio.gather(*(write(events[k::writers]) for k in range(writers)))
    written = time.time() - started
    finished = await finished_at(consumer)
    stop.set()
    await relaying
    await producer.stop()
    async with engine.connect() as conn:
        total, distinct = (
            await conn.execute(text("SELECT count(*), count(DISTINCT ce_id) FROM effects"))
        ).one()
    await engine.dispose()
    if not total == distinct == len(events):
        raise RuntimeError(f"{total} effects, {distinct} distinct, for {len(events)} events")
    return len(events) / (finished - started), len(events) / written


async def main(n: int, size: int, txn: int, writers: int) -> dict[str, object]:
    with provide("bench", 12000) as infra:
        await ensure_topics(infra.bootstrap, 6)
        db_url = await migrated_database(infra.admin_url, "arrears_bench", "ledger")
        events = make_events(n, size)
        value_bytes = sum(len(encode(e)[1]) for e in events) / n
        print("raw produce -> consume ...", flush=True)
        raw_rate = await raw(infra.bootstrap, events)
        print("outbox -> kafka -> inbox ...", flush=True)
        effects_rate, write_rate = await guaranteed(infra.bootstrap, db_url, events, txn, writers)
    return {
        "events": n,
        "mean_value_bytes": round(value_bytes),
        "events_per_transaction": txn,
        "concurrent_writers": writers,
        "raw_msgs_per_s": round(raw_rate),
        "outbox_writes_per_s": round(write_rate),
        "outbox_kafka_inbox_effects_per_s": round(effects_rate),
        "ratio": round(effects_rate / raw_rate, 3),
        "machine": f"{platform.machine()} python {platform.python_version()}",
    }


def cli() -> None:
    if len(sys.argv) > 1 and sys.argv[1].startswith("consume-"):
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        mode, bootstrap, topic, n, *rest = sys.argv[1:]
        if mode == "consume-raw":
            finished = asyncio.run(consume_raw(bootstrap, topic, int(n)))
        else:
            finished = asyncio.run(consume_guaranteed(bootstrap, topic, int(n), rest[0]))
        print(finished, flush=True)
        return
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=500, help="bytes of each record's value")
    parser.add_argument("--txn", type=int, default=100, help="events per writing transaction")
    parser.add_argument("--writers", type=int, default=4, help="concurrent writing tasks")
    args = parser.parse_args()
    result = asyncio.run(main(args.events, args.size, args.txn, args.writers))
    report("backbone", result)


if __name__ == "__main__":
    cli()
