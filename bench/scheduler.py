"""Scheduler throughput and latency, end to end, beside a raw baseline, in one run.

1. raw baseline: N ``payment.missed`` records consumed and, for each, one record produced to
   another topic, with aiokafka alone (no decoding, no database);
2. saturation: N ``payment.missed`` events (customers known beforehand, the clock inside the
   CN contact window) waiting in ``ledger.events`` when the real scheduler process starts:
   consume, score, assign a variant, pick the treatment, arm the timers, ask the compliance
   engine, fire day 0's step and relay ``contact.requested`` to Kafka. Timed from the start of
   consumption to the N-th ``contact.requested`` read back from ``scheduler.events``;
3. latency below saturation: M more events produced at half the measured throughput; each
   one's latency is the time between its record and its ``contact.requested`` record (both
   stamped by their producers on this machine); p50 and p99;
4. the scheduler process's peak resident memory.

    python -m bench.scheduler [--events 100000] [--paced 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import platform
import resource
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg

from bench.cost import Meter, idle_rates, infra_pids
from bench.report import report
from services.scheduler.bootstrap import build
from services.scheduler.settings import SchedulerSettings
from shared import topics
from shared.db import asyncpg_dsn
from shared.envelope import decode, encode, new_event
from shared.events import ClockSet, PaymentMissed
from shared.fingerprint import fingerprint
from shared.kafka import ensure_topics, make_consumer, make_producer
from shared.service import ServiceRuntime
from shared.settings import DEV_FINGERPRINT_KEY
from tests.support.databases import migrated_database
from tests.support.infra import provide

NOW = datetime(2026, 12, 2, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai on a Wednesday


def missed(i: int) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    data = PaymentMissed(
        account_id=f"A{i:07d}",
        customer_id=f"C{i:07d}",
        installment_no=1,
        due_date=NOW.date() - timedelta(days=3),
        amount_due=Decimal("1000.00"),
        total_overdue=Decimal("1000.00"),
        currency="CNY",
        days_past_due=3,
        bucket="1-29",
        product="credit_card",
    )
    return encode(new_event(data, source="/arrears/ledger", key=f"C{i:07d}", time=NOW))


async def load_customers(dsn: str, n: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        # A number and an address of each customer's own. One shared by the whole book (as
        # until 2026-12-07) made every decision weigh every earlier contact at that "household"
        # (the shared-address rule), so each benchmark's cost grew with its size.
        rows = [
            (
                f"C{i:07d}",
                "CN",
                "Asia/Shanghai",
                "zh-CN",
                600 + i % 200,
                fingerprint("phone", f"+86138{i:08d}", DEV_FINGERPRINT_KEY),
                fingerprint("email", f"c{i}@example.com", DEV_FINGERPRINT_KEY),
                None,
                NOW,
            )
            for i in range(n)
        ]
        await conn.copy_records_to_table(
            "customer",
            records=rows,
            columns=[
                "customer_id",
                "country",
                "timezone",
                "locale",
                "credit_score",
                "phone_ref",
                "email_ref",
                "postal_ref",
                "updated_at",
            ],
        )
    finally:
        await conn.close()


async def produce(bootstrap: str, topic: str, indexes: range, rate: float | None = None) -> None:
    producer = make_producer(bootstrap)
    await producer.start()
    try:
        pending = []
        started = time.perf_counter()
        for count, i in enumerate(indexes):
            key, value, headers = missed(i)
            pending.append(await producer.send(topic, value=value, key=key, headers=headers))
            if rate is not None and count % 50 == 0:
                ahead = count / rate - (time.perf_counter() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def raw_baseline(bootstrap: str, n: int, pids: dict[str, int]) -> tuple[float, Meter]:
    source, sink = f"bench.raw.in.{uuid.uuid4().hex[:6]}", f"bench.raw.out.{uuid.uuid4().hex[:6]}"
    await ensure_topics(bootstrap, 6, (source, sink))
    await produce(bootstrap, source, range(n))
    consumer = make_consumer(bootstrap, f"raw-{uuid.uuid4().hex[:6]}", source)
    producer = make_producer(bootstrap)
    await consumer.start()
    await producer.start()
    idle = await idle_rates(pids)
    meter = Meter(pids, include_self="consume-produce", idle=idle).start()
    started, done = time.perf_counter(), 0
    pending = []
    while done < n:
        batch = await consumer.getmany(timeout_ms=500, max_records=2000)
        for records in batch.values():
            for r in records:
                pending.append(await producer.send(sink, value=r.value, key=r.key))
            done += len(records)
    await asyncio.gather(*pending)
    rate = n / (time.perf_counter() - started)
    meter.stop()
    await consumer.stop()
    await producer.stop()
    return rate, meter


def run_scheduler(bootstrap: str, url: str, stop: Any, ready: Any, result: Any) -> None:
    async def main() -> None:
        settings = SchedulerSettings(
            KAFKA_BOOTSTRAP_SERVERS=bootstrap,
            ARREARS_CLOCK="controlled",
            ARREARS_LOG_LEVEL="WARNING",
            database_url=url,
        )
        runtime = ServiceRuntime(settings, build)
        await runtime.start()
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.2)
        await runtime.stop()

    asyncio.run(main())
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


async def read_contacts(
    bootstrap: str, expect: int, sent_at: dict[str, float] | None = None
) -> tuple[float, list[float]]:
    """Reads ``contact.requested`` until ``expect`` of them; returns the time of the last and,
    with ``sent_at`` (account -> its payment.missed record's timestamp), the latencies."""
    consumer = make_consumer(bootstrap, f"reader-{uuid.uuid4().hex[:6]}", topics.SCHEDULER)
    await consumer.start()
    seen: set[str] = set()
    latencies: list[float] = []
    try:
        while len(seen) < expect:
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            for records in batch.values():
                for r in records:
                    event = decode(r.key, r.value, r.headers)
                    if event.type != "contact.requested":
                        continue
                    account = event.data.account_id  # type: ignore[attr-defined]
                    if sent_at is not None and account in sent_at and account not in seen:
                        latencies.append(r.timestamp / 1000 - sent_at[account])
                    seen.add(account)
        return time.perf_counter(), latencies
    finally:
        await consumer.stop()


async def missed_timestamps(bootstrap: str, first: int) -> dict[str, float]:
    consumer = make_consumer(bootstrap, f"stamps-{uuid.uuid4().hex[:6]}", topics.LEDGER)
    await consumer.start()
    stamps: dict[str, float] = {}
    try:
        idle = 0
        while idle < 4:
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            idle = 0 if batch else idle + 1
            for records in batch.values():
                for r in records:
                    account = r.key.decode().replace("C", "A", 1)
                    if int(account[1:]) >= first:
                        stamps[account] = r.timestamp / 1000
    finally:
        await consumer.stop()
    return stamps


async def main(n: int, paced: int) -> dict[str, Any]:
    result: dict[str, Any] = {"cores": os.cpu_count(), "events": n, "paced_events": paced}
    with provide("bench", 12000) as infra:
        await ensure_topics(infra.bootstrap, 6)
        print("raw consume -> produce baseline ...", flush=True)
        pids = infra_pids(infra.stack)
        raw, raw_meter = await raw_baseline(infra.bootstrap, n, pids)
        result["raw_consume_produce_per_s"] = round(raw)
        result["raw_cpu_ms_per_event"] = raw_meter.per_event_ms(n)

        url = await migrated_database(infra.admin_url, "arrears_bench_scheduler", "scheduler")
        await load_customers(asyncpg_dsn(url), n + paced)
        clock = encode(new_event(ClockSet(now=NOW), source="/bench", key="clock", time=NOW))
        producer = make_producer(infra.bootstrap)
        await producer.start()
        await producer.send_and_wait(topics.CLOCK, value=clock[1], key=clock[0], headers=clock[2])
        await producer.stop()
        print(f"{n} payment.missed waiting in {topics.LEDGER} ...", flush=True)
        await produce(infra.bootstrap, topics.LEDGER, range(n))

        idle = await idle_rates(pids)  # before the scheduler starts on its backlog
        result["kafka_idle_cores"] = round(idle.get("kafka", 0.0), 3)
        spawn = multiprocessing.get_context("spawn")
        manager = spawn.Manager()
        stop, ready, shared = manager.Event(), manager.Event(), manager.dict()
        process = spawn.Process(
            target=run_scheduler, args=(infra.bootstrap, url, stop, ready, shared)
        )
        process.start()
        await asyncio.to_thread(ready.wait, 120)
        # from the end of start-up (imports, migrations checked, the group joined)
        meter = Meter({"scheduler": process.pid or 0} | pids, idle=idle).start()
        started = time.perf_counter()
        finished, _ = await read_contacts(infra.bootstrap, n)
        meter.stop()
        result["cpu_ms_per_event"] = meter.per_event_ms(n)
        rate = n / (finished - started)
        result["scheduler_decisions_per_s"] = round(rate)
        result["ratio_to_raw"] = round(rate / result["raw_consume_produce_per_s"], 3)

        print(f"{paced} more at {rate / 2:.0f}/s for latency ...", flush=True)
        reading = asyncio.create_task(read_contacts(infra.bootstrap, n + paced, {}))
        await produce(infra.bootstrap, topics.LEDGER, range(n, n + paced), rate=rate / 2)
        stamps = await missed_timestamps(infra.bootstrap, n)
        reading.cancel()
        _, latencies = await read_contacts(infra.bootstrap, n + paced, stamps)
        stop.set()
        await asyncio.to_thread(process.join, 120)
        latencies.sort()
        result["paced_rate_per_s"] = round(rate / 2)
        result["latency_p50_ms"] = round(statistics.median(latencies) * 1000, 1)
        result["latency_p99_ms"] = round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 1)
        result["scheduler_peak_rss_mb"] = shared.get("peak_rss_mb")
        manager.shutdown()
    result["machine"] = f"{platform.machine()} python {platform.python_version()}"
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--paced", type=int, default=10_000)
    args = parser.parse_args()
    report("scheduler", asyncio.run(main(args.events, args.paced)))
