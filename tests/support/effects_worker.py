"""A consuming process for crash tests, run as ``python -m tests.support.effects_worker``.

``consume``: the real :class:`~shared.consumer.ConsumerRunner` with a handler that appends one row
per event to ``effects``, until SIGTERM (or until it is killed).
``commit-then-die``: commits a state change and its event through the unit of work, then kills
itself with SIGKILL before any relay could publish.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal

from sqlalchemy import text

from shared.consumer import ConsumerRunner, ConsumerSpec
from shared.db import UnitOfWork, make_engine, uow_factory
from shared.envelope import CloudEvent
from shared.kafka import make_consumer, make_producer
from tests.support.factories import payment_posted


async def record_effect(uow: UnitOfWork, event: CloudEvent) -> None:
    await uow.session.execute(
        text("INSERT INTO effects (ce_id, customer_id) VALUES (:id, :customer)"),
        {"id": event.id, "customer": event.key},
    )


async def consume(args: argparse.Namespace) -> None:
    engine = make_engine(args.db)
    producer = make_producer(args.bootstrap)
    # A killed member holds its partitions until its session times out: keep that short here.
    consumer = make_consumer(
        args.bootstrap, args.group, args.topic, session_timeout_ms=6000, heartbeat_interval_ms=1000
    )
    await producer.start()
    await consumer.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    runner = ConsumerRunner(
        ConsumerSpec(
            name="effects", topics=(args.topic,), handlers={"payment.posted": record_effect}
        ),
        service="crashtest",
        consumer=consumer,
        producer=producer,
        uow_factory=uow_factory(engine),
        batch_size=args.batch,
    )
    print("consuming", flush=True)
    try:
        await runner.run(stop)
    finally:
        await consumer.stop()
        await producer.stop()
        await engine.dispose()


async def commit_then_die(args: argparse.Namespace) -> None:
    engine = make_engine(args.db)
    event = payment_posted(customer=args.customer)
    async with uow_factory(engine)() as uow:
        await uow.session.execute(
            text("INSERT INTO effects (ce_id, customer_id) VALUES (:id, :c)"),
            {"id": event.id, "c": args.customer},
        )
        uow.publish(event)
        await uow.commit()
    print(event.id, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["consume", "commit-then-die"])
    parser.add_argument("--db", required=True)
    parser.add_argument("--bootstrap", default="")
    parser.add_argument("--topic", default="")
    parser.add_argument("--group", default="")
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--customer", default="C-crash")
    args = parser.parse_args()
    asyncio.run(consume(args) if args.mode == "consume" else commit_then_die(args))


if __name__ == "__main__":
    main()
