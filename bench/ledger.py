"""Ledger throughput and delinquency evaluation, each beside a raw baseline, in one run.

1. evaluation: N accounts (default 1,000,000; customers across five time zones, three
   instalments each, about a third of them short) loaded with COPY (so never evaluated), then
   the set-based evaluation timed: the catch-up pass that first evaluates every account (every
   delinquent account changes bucket, each missed instalment is announced), then three clock
   moves of a day each (what the service does every day);
2. ingest: E upstream events (default 1,000,000: per customer customer.upserted, loan.opened
   and three payments) through Kafka into the ledger's consumer (validation, inbox, handlers,
   outbox), against the least work any ingest must do, in a process of its own likewise: an
   aiokafka ``getmany`` of the same records, a ``json`` decode of each value and an asyncpg
   ``COPY`` of one row per event into an unindexed table, committed (rows and offsets) per
   fetch (issue 19). The bare consume and the bare COPY are reported beside it. CPU seconds per
   event of each side, and of PostgreSQL and the broker while each ran;
3. the peak resident memory of each ledger side, each run in a process of its own (the
   benchmark's producer and loaders do not count).

    python -m bench.ledger [--accounts 1000000] [--events 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import random
import resource
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
from sqlalchemy import text

from bench.cost import Meter, idle_rates, infra_pids
from bench.report import report
from services.ledger.bootstrap import products
from services.ledger.handlers import Ledger, handlers
from services.ledger.settings import LedgerSettings
from shared.clock import ControlledClock
from shared.consumer import ConsumerRunner, ConsumerSpec
from shared.db import asyncpg_dsn, make_engine, uow_factory
from shared.envelope import CloudEvent, decode, encode, new_event
from shared.events import CustomerUpserted, LoanOpened, PaymentPosted, ScheduledInstallment
from shared.kafka import ensure_topics, make_consumer, make_producer
from tests.support.databases import migrated_database
from tests.support.infra import provide

ZONES = ["Asia/Shanghai", "Asia/Urumqi", "America/New_York", "America/Los_Angeles", "UTC"]
DAY0 = date(2026, 10, 1)
NOW = datetime(2026, 12, 1, 4, 0, tzinfo=UTC)


async def load_accounts(dsn: str, n: int, chunk: int = 50_000) -> None:
    """COPY in chunks, so the loader's own rows do not count towards the peak memory measured."""
    rng = random.Random(7)
    conn = await asyncpg.connect(dsn)
    try:
        for first in range(0, n, chunk):
            customers, accounts, installments = [], [], []
            for i in range(first, min(n, first + chunk)):
                customer, account = f"C{i:07d}", f"A{i:07d}"
                customers.append((customer, ZONES[i % len(ZONES)], "CN", "zh-CN", NOW))
                accounts.append((account, customer, "credit_card", "CNY", Decimal(3000), DAY0))
                short = rng.random() < 0.35
                for k in range(3):
                    due = DAY0 + timedelta(days=30 * k + rng.randrange(0, 28))
                    paid = Decimal(0) if (short and k >= 1) or due > NOW.date() else Decimal(1000)
                    installments.append((account, k + 1, due, Decimal(1000), paid))
            await conn.copy_records_to_table(
                "customer",
                records=customers,
                columns=["customer_id", "timezone", "country", "locale", "updated_at"],
            )
            await conn.copy_records_to_table(
                "account",
                records=accounts,
                columns=[
                    "account_id",
                    "customer_id",
                    "product",
                    "currency",
                    "principal",
                    "opened_on",
                ],
            )
            await conn.copy_records_to_table(
                "installment",
                records=installments,
                columns=["account_id", "installment_no", "due_date", "amount", "paid"],
            )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


Job = Callable[..., Coroutine[Any, Any, dict[str, Any]]]


def in_own_process(fn: Job, *args: Any) -> dict[str, Any]:
    """Run ``fn`` in a fresh process, adding that process's peak resident memory."""
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
        result: dict[str, Any] = pool.submit(_run_measured, fn, *args).result()
        return result


def _run_measured(fn: Job, *args: Any) -> dict[str, Any]:
    result = asyncio.run(fn(*args))
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return result


async def evaluate_book(url: str, pids: dict[str, int]) -> dict[str, Any]:
    """The ledger's side of the evaluation benchmark: the catch-up pass, then three days."""
    engine = make_engine(url)
    clock = ControlledClock(NOW)
    ledger = Ledger(clock, products())
    uow = uow_factory(engine)
    timings = []
    costs = []
    for day in range(4):
        await clock.set(NOW + timedelta(days=day, seconds=1))
        meter = Meter(pids, include_self="ledger").start()
        started = time.perf_counter()
        async with uow() as unit:
            changed = await ledger.evaluate(unit)
            await unit.commit()
        timings.append((round(time.perf_counter() - started, 2), changed))
        costs.append(meter.stop())
    async with engine.connect() as conn:
        outbox = (await conn.execute(text("SELECT count(*) FROM outbox"))).scalar_one()
    await engine.dispose()
    return {
        "catch_up_evaluation_seconds": timings[0][0],
        "catch_up_evaluation_changed": timings[0][1],
        "daily_evaluation_seconds": [t for t, _ in timings[1:]],
        "daily_evaluation_changed": [c for _, c in timings[1:]],
        # CPU seconds of each daily pass, the ledger's process and the servers'
        "daily_evaluation_cpu_s": [{k: round(v, 3) for k, v in c.items()} for c in costs[1:]],
        "evaluation_events_written": outbox,
    }


async def evaluation(url: str, n: int, pids: dict[str, int]) -> dict[str, Any]:
    started = time.perf_counter()
    await load_accounts(asyncpg_dsn(url), n)
    loaded = time.perf_counter() - started
    measured = in_own_process(evaluate_book, url, pids)
    return {
        "accounts": n,
        "load_seconds": round(loaded, 1),
        **{k: v for k, v in measured.items() if k != "peak_rss_mb"},
        "evaluation_peak_rss_mb": measured["peak_rss_mb"],
    }


def upstream_events(n_events: int) -> Iterator[CloudEvent]:
    t = NOW
    for i in range(n_events // 5):
        customer, account = f"K{i:07d}", f"L{i:07d}"
        data: list[Any] = [
            CustomerUpserted(
                customer_id=customer,
                full_name="Bench Person",
                national_id="0",
                timezone=ZONES[i % len(ZONES)],
                locale="zh-CN",
                country="CN",
            ),
            LoanOpened(
                account_id=account,
                customer_id=customer,
                product="credit_card",
                principal=Decimal("3000.00"),
                currency="CNY",
                opened_on=DAY0,
                schedule=[
                    ScheduledInstallment(
                        installment_no=k + 1,
                        due_date=DAY0 + timedelta(days=30 * k),
                        amount=Decimal("1000.00"),
                    )
                    for k in range(3)
                ],
            ),
            *[
                PaymentPosted(
                    account_id=account,
                    payment_id=f"P{i:07d}-{k}",
                    amount=Decimal("400.00"),
                    currency="CNY",
                    posted_at=t,
                )
                for k in range(3)
            ],
        ]
        for d in data:
            yield new_event(d, source="/bench", key=customer, time=t)


async def consume_into_ledger(bootstrap: str, url: str, topic: str, total: int) -> dict[str, Any]:
    """The ledger's side of the ingest benchmark: the real consumer runner and handlers, with
    the service's own batch size, until every record is in the inbox."""
    engine = make_engine(url)
    ledger = Ledger(ControlledClock(NOW), products())
    producer = make_producer(bootstrap)  # for dead letters (none expected)
    await producer.start()
    consumer = make_consumer(bootstrap, f"ledger-{uuid.uuid4().hex[:6]}", topic)
    await consumer.start()
    runner = ConsumerRunner(
        ConsumerSpec.of("events", (topic,), handlers(ledger), ledger.settle),
        service="bench",
        consumer=consumer,
        producer=producer,
        uow_factory=uow_factory(engine),
        batch_size=LedgerSettings().consumer_batch_size,
    )
    stop = asyncio.Event()
    started, cpu = time.perf_counter(), time.process_time()
    task = asyncio.create_task(runner.run(stop))
    while True:
        async with engine.connect() as c:
            done = (await c.execute(text("SELECT count(*) FROM inbox"))).scalar_one()
        if done >= total:
            break
        if task.done():
            task.result()
        await asyncio.sleep(0.5)
    rate = total / (time.perf_counter() - started)
    cpu = time.process_time() - cpu
    stop.set()
    await task
    await consumer.stop()
    await producer.stop()
    async with engine.connect() as c:
        payments = (await c.execute(text("SELECT count(*) FROM payment"))).scalar_one()
    await engine.dispose()
    return {"ledger_ingest_per_s": round(rate), "payments_applied": payments, "cpu_s": cpu}


async def raw_ingest(bootstrap: str, url: str, topic: str, total: int) -> dict[str, Any]:
    """The floor of any ingest that checks and keeps what it reads: fetch, decode each value,
    COPY a row per event into an unindexed table and commit the offsets, per fetch."""
    conn = await asyncpg.connect(asyncpg_dsn(url))
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS raw_ingest (part int, at_offset bigint, key text, body text)"
    )
    consumer = make_consumer(bootstrap, f"raw-ingest-{uuid.uuid4().hex[:6]}", topic)
    await consumer.start()
    batch_size = LedgerSettings().consumer_batch_size
    started, cpu, received = time.perf_counter(), time.process_time(), 0
    while received < total:
        batch = await consumer.getmany(timeout_ms=500, max_records=batch_size)
        rows = []
        for records in batch.values():
            for r in records:
                # decoded and checked as any reader must, kept as it came
                if isinstance(json.loads(r.value), dict):
                    rows.append((r.partition, r.offset, r.key.decode(), r.value.decode()))
        if batch:
            await conn.copy_records_to_table("raw_ingest", records=rows)
            await consumer.commit()
            received += sum(len(records) for records in batch.values())
    rate = total / (time.perf_counter() - started)
    cpu = time.process_time() - cpu
    await consumer.stop()
    await conn.close()
    return {"raw_ingest_per_s": round(rate), "cpu_s": cpu}


async def ingest(bootstrap: str, url: str, n_events: int, pids: dict[str, int]) -> dict[str, Any]:
    topic = f"bench.ledger.{uuid.uuid4().hex[:8]}"
    await ensure_topics(bootstrap, 6, (topic,))
    producer = make_producer(bootstrap)
    await producer.start()
    total = 0
    pending: list[asyncio.Future[Any]] = []
    for event in upstream_events(n_events):
        key, value, headers = encode(event)
        pending.append(await producer.send(topic, value=value, key=key, headers=headers))
        total += 1
        if len(pending) >= 10_000:
            await asyncio.gather(*pending)
            pending = []
    await asyncio.gather(*pending)
    await producer.stop()

    # raw baseline 1: consume the same records
    consumer = make_consumer(bootstrap, f"raw-{uuid.uuid4().hex[:6]}", topic)
    await consumer.start()
    started, received = time.perf_counter(), 0
    while received < total:
        batch = await consumer.getmany(timeout_ms=500, max_records=2000)
        received += sum(len(p) for p in batch.values())
    raw_consume = total / (time.perf_counter() - started)
    await consumer.stop()

    # raw baseline 2: COPY as many rows (payment-shaped) into a scratch table
    conn = await asyncpg.connect(asyncpg_dsn(url))
    await conn.execute(
        "CREATE TEMP TABLE scratch "
        "(id text, account text, amount numeric, currency text, at timestamptz)"
    )
    rows = ((f"P{i}", f"A{i % 1000}", Decimal("400.00"), "CNY", NOW) for i in range(total))
    started = time.perf_counter()
    await conn.copy_records_to_table("scratch", records=rows)
    raw_copy = total / (time.perf_counter() - started)
    await conn.close()

    # raw baseline 3 (the target's): fetch, decode, COPY and commit per fetch
    meter = Meter(pids, idle=await idle_rates(pids)).start()
    floor = in_own_process(raw_ingest, bootstrap, url, topic, total)
    meter.stop()
    meter.spent["ingest"] = floor["cpu_s"]  # the floor's own process, timed inside it
    floor_cpu = meter.per_event_ms(total)

    meter = Meter(pids, idle=await idle_rates(pids)).start()
    measured = in_own_process(consume_into_ledger, bootstrap, url, topic, total)
    meter.stop()
    meter.spent["ledger"] = measured["cpu_s"]
    cpu = meter.per_event_ms(total)
    rate = measured["ledger_ingest_per_s"]
    return {
        "ingest_events": total,
        "payments_applied": measured["payments_applied"],
        "raw_consume_per_s": round(raw_consume),
        "raw_copy_rows_per_s": round(raw_copy),
        "raw_ingest_per_s": floor["raw_ingest_per_s"],
        "ledger_ingest_per_s": rate,
        "ratio_to_consume": round(rate / raw_consume, 3),
        "ratio_to_copy": round(rate / raw_copy, 3),
        "ratio_to_raw_ingest": round(rate / floor["raw_ingest_per_s"], 3),
        "raw_ingest_cpu_ms_per_event": floor_cpu,
        "ingest_cpu_ms_per_event": cpu,
        "ingest_peak_rss_mb": measured["peak_rss_mb"],
    }


def decode_ceiling(n: int = 20_000) -> dict[str, Any]:
    """What decoding and validating records alone costs in one Python process: the ceiling of
    any consumer of these events that checks what it reads."""
    records = [encode(e) for e in upstream_events(n)]
    started = time.perf_counter()
    for key, value, headers in records:
        decode(key, value, headers)
    return {"decode_only_per_s": round(n / (time.perf_counter() - started))}


async def main(accounts: int, events: int) -> dict[str, Any]:
    result: dict[str, Any] = {"cores": os.cpu_count()}
    with provide("bench", 12000) as infra:
        await ensure_topics(infra.bootstrap, 6)
        eval_db = await migrated_database(infra.admin_url, "arrears_bench_eval", "ledger")
        print(f"evaluation over {accounts} accounts ...", flush=True)
        # PostgreSQL only: the evaluation's outbox is not relayed here
        database = {k: v for k, v in infra_pids(infra.stack).items() if k == "postgres"}
        result |= await evaluation(eval_db, accounts, database)
        ingest_db = await migrated_database(infra.admin_url, "arrears_bench_ingest", "ledger")
        print(f"ingest of {events} events ...", flush=True)
        result |= await ingest(infra.bootstrap, ingest_db, events, infra_pids(infra.stack))
    result |= decode_ceiling()
    result["ratio_decode_only_to_consume"] = round(
        result["decode_only_per_s"] / result["raw_consume_per_s"], 3
    )
    result["machine"] = f"{platform.machine()} python {platform.python_version()}"
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args()
    result = asyncio.run(main(args.accounts, args.events))
    report("ledger", result)
