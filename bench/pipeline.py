"""The whole contact pipeline, beside the raw three-hop Kafka baseline, in one run.

``payment.missed`` (``ledger.events``) -> scheduler (score, variant, treatment, compliance)
-> ``contact.requested`` (``scheduler.events``) -> notifier (render, send to the partner
stand-in over HTTP, record) -> ``contact.attempted`` (``notifier.events``).

1. raw baseline: the same number of records of the same size through three consume -> produce
   hops with aiokafka alone (three processes, no decoding, no database);
2. saturation: N ``payment.missed`` waiting in ``ledger.events`` when the real scheduler and
   notifier processes start (the partner stand-in in a process of its own, callbacks off);
   timed to the N-th ``contact.attempted``;
3. latency below saturation: M more produced at half the measured rate; each one's latency is
   its ``contact.attempted`` record's timestamp minus its ``payment.missed`` record's (both
   stamped on this machine); p50 and p99;
4. peak resident memory (VmHWM) of each service process, with 1,000,000 customers (by default)
   in the scheduler's and the notifier's databases.

    python -m bench.pipeline [--accounts 100000] [--paced 5000] [--book 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import statistics
import time
import uuid
from typing import Any

import httpx

from bench.cost import Meter, idle_rates, infra_pids
from bench.notifier import free_port, peak_rss_mb, spawn, until_up
from bench.notifier import load_customers as notifier_customers
from bench.report import report
from bench.scheduler import NOW, missed
from bench.scheduler import load_customers as scheduler_customers
from services.notifier.settings import DEV_PARTNER_KEY, DEV_PARTNER_SECRET
from shared import topics
from shared.db import asyncpg_dsn
from shared.envelope import encode, new_event
from shared.events import ClockSet
from shared.kafka import ensure_topics, make_consumer, make_producer
from tests.support.databases import migrated_database
from tests.support.infra import provide

HOPS = 3


async def produce(
    bootstrap: str, topic: str, indexes: range, rate: float | None = None
) -> dict[str, float]:
    """Produces ``payment.missed`` for ``indexes``; with ``rate``, paced. Returns each account's
    record timestamp (seconds)."""
    producer = make_producer(bootstrap)
    await producer.start()
    stamps: dict[str, float] = {}
    try:
        pending = []
        started = time.perf_counter()
        for count, i in enumerate(indexes):
            key, value, headers = missed(i)
            stamp = time.time()
            stamps[f"A{i:07d}"] = stamp
            pending.append(
                await producer.send(
                    topic,
                    value=value,
                    key=key,
                    headers=headers,
                    timestamp_ms=int(stamp * 1000),
                )
            )
            if rate is not None and count % 20 == 0:
                ahead = count / rate - (time.perf_counter() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return stamps


# --- raw baseline --------------------------------------------------------------------------------


def hop(bootstrap: str, source: str, sink: str) -> None:
    """One raw consume -> produce hop, forever (the parent terminates it)."""

    async def run() -> None:
        consumer = make_consumer(bootstrap, f"raw-{source}", source)
        producer = make_producer(bootstrap)
        await consumer.start()
        await producer.start()
        while True:
            batch = await consumer.getmany(timeout_ms=500, max_records=2000)
            pending = [
                await producer.send(sink, value=r.value, key=r.key)
                for records in batch.values()
                for r in records
            ]
            await asyncio.gather(*pending)

    asyncio.run(run())


async def count_records(bootstrap: str, topic: str, expect: int) -> float:
    consumer = make_consumer(bootstrap, f"count-{uuid.uuid4().hex[:6]}", topic)
    await consumer.start()
    seen = 0
    try:
        while seen < expect:
            batch = await consumer.getmany(timeout_ms=500, max_records=10000)
            seen += sum(len(records) for records in batch.values())
        return time.perf_counter()
    finally:
        await consumer.stop()


async def raw_baseline(
    bootstrap: str, n: int, infra: dict[str, int]
) -> tuple[float, dict[str, float]]:
    """Records per second through the three hops, and the CPU milliseconds per record of the
    hops (together) and of the broker."""
    run = uuid.uuid4().hex[:6]
    chain = [f"bench.hop{i}.{run}" for i in range(HOPS + 1)]
    await ensure_topics(bootstrap, 6, tuple(chain))
    context = multiprocessing.get_context("spawn")
    hops = [
        context.Process(target=hop, args=(bootstrap, chain[i], chain[i + 1]), daemon=True)
        for i in range(HOPS)
    ]
    for process in hops:
        process.start()
    try:
        # Timed once every hop has joined its group and passed a first record on, as the
        # pipeline is: neither figure counts start-up.
        await produce(bootstrap, chain[0], range(1))
        await count_records(bootstrap, chain[-1], 1)
        idle = await idle_rates(infra)
        counting = asyncio.create_task(count_records(bootstrap, chain[-1], n + 1))
        hop_pids = {f"hop{i}": p.pid for i, p in enumerate(hops) if p.pid}
        meter = Meter(hop_pids | infra, idle=idle).start()
        started = time.perf_counter()
        await produce(bootstrap, chain[0], range(1, n + 1))
        finished = await counting
        meter.stop()
    finally:
        for process in hops:
            process.terminate()
            process.join(10)
    spent = meter.per_event_ms(n)
    cost = {"hops": round(sum(v for k, v in spent.items() if k.startswith("hop")), 4)}
    cost |= {k: v for k, v in spent.items() if not k.startswith("hop")}
    return n / (finished - started), cost


# --- the pipeline --------------------------------------------------------------------------------


async def load_books(scheduler_dsn: str, notifier_dsn: str, n: int) -> None:
    await scheduler_customers(scheduler_dsn, n)
    await notifier_customers(notifier_dsn, n)


async def read_attempts(bootstrap: str, expect: int) -> float:
    """Reads ``notifier.events`` until ``expect`` accounts have a ``contact.attempted``;
    returns when the last did."""
    await stamps_of(bootstrap, topics.NOTIFIER, b"contact.attempted", None, expect)
    return time.perf_counter()


async def stamps_of(
    bootstrap: str, topic: str, ce_type: bytes, accounts: set[str] | None, expect: int = 0
) -> dict[str, float]:
    """The record timestamp of the first ``ce_type`` event of each of ``accounts`` (or of any
    ``expect`` accounts)."""
    expect = len(accounts) if accounts is not None else expect
    consumer = make_consumer(bootstrap, f"stamps-{uuid.uuid4().hex[:6]}", topic)
    await consumer.start()
    stamps: dict[str, float] = {}
    try:
        while len(stamps) < expect:
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            for records in batch.values():
                for r in records:
                    if dict(r.headers).get("ce_type") != ce_type:
                        continue
                    account = json.loads(r.value)["account_id"]
                    if accounts is None or account in accounts:
                        stamps.setdefault(account, r.timestamp / 1000)
        return stamps
    finally:
        await consumer.stop()


def p50_p99(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return (
        round(statistics.median(ordered) * 1000, 1),
        round(ordered[int(len(ordered) * 0.99) - 1] * 1000, 1),
    )


async def main(n: int, paced: int, book: int) -> dict[str, Any]:
    book = max(book, n + paced + 1)
    result: dict[str, Any] = {
        "cores": os.cpu_count(),
        "accounts": n,
        "paced_accounts": paced,
        "customers_in_each_database": book,
    }
    processes = []
    try:
        with provide("bench", 12000) as infra:
            await ensure_topics(infra.bootstrap, 6)
            print(f"raw baseline: {n} records through {HOPS} aiokafka hops ...", flush=True)
            pids = infra_pids(infra.stack)
            raw, raw_cost = await raw_baseline(infra.bootstrap, n, pids)
            result["raw_three_hop_per_s"] = round(raw)
            result["raw_cpu_ms_per_event"] = raw_cost

            scheduler_url = await migrated_database(
                infra.admin_url, "arrears_bench_pipe_scheduler", "scheduler"
            )
            notifier_url = await migrated_database(
                infra.admin_url, "arrears_bench_pipe_notifier", "notifier"
            )
            print(f"{book} customers into the scheduler's and the notifier's ...", flush=True)
            await load_books(asyncpg_dsn(scheduler_url), asyncpg_dsn(notifier_url), book)
            clock = encode(new_event(ClockSet(now=NOW), source="/bench", key="clock", time=NOW))
            producer = make_producer(infra.bootstrap)
            await producer.start()
            await producer.send_and_wait(
                topics.CLOCK, value=clock[1], key=clock[0], headers=clock[2]
            )
            await producer.stop()
            standin_port, scheduler_port, notifier_port = free_port(), free_port(), free_port()
            processes.append(
                spawn(
                    [
                        "-m",
                        "tools.partners",
                        "--port",
                        str(standin_port),
                        "--notifier",
                        f"http://127.0.0.1:{notifier_port}",
                    ]
                )
            )
            await until_up(f"http://127.0.0.1:{standin_port}/control/count")
            async with httpx.AsyncClient() as http:
                await http.post(
                    f"http://127.0.0.1:{standin_port}/control", json={"callbacks": False}
                )
            partner = {
                "name": "standin",
                "channels": ["sms", "email", "voice", "letter", "field_visit"],
                "base_url": f"http://127.0.0.1:{standin_port}",
                "api_key": DEV_PARTNER_KEY,
                "webhook_secrets": [DEV_PARTNER_SECRET],
                "rate_limit_per_second": 1_000_000,
            }
            common = {
                "KAFKA_BOOTSTRAP_SERVERS": infra.bootstrap,
                "ARREARS_CLOCK": "controlled",
                "ARREARS_LOG_LEVEL": "WARNING",
            }
            scheduler = spawn(
                ["-m", "services.scheduler"],
                common
                | {
                    "SCHEDULER_DATABASE_URL": scheduler_url,
                    "SCHEDULER_HTTP_PORT": str(scheduler_port),
                },
            )
            notifier = spawn(
                ["-m", "services.notifier"],
                common
                | {
                    "NOTIFIER_DATABASE_URL": notifier_url,
                    "NOTIFIER_HTTP_PORT": str(notifier_port),
                    "NOTIFIER_PARTNERS": json.dumps([partner]),
                },
            )
            processes += [scheduler, notifier]
            # Timed once both services are up and one account has gone all the way through.
            await produce(infra.bootstrap, topics.LEDGER, range(1))
            await read_attempts(infra.bootstrap, 1)
            print(f"{n} payment.missed through the pipeline ...", flush=True)
            idle = await idle_rates(pids)
            result["kafka_idle_cores"] = round(idle.get("kafka", 0.0), 3)
            reading = asyncio.create_task(read_attempts(infra.bootstrap, n + 1))
            services = {"scheduler": scheduler.pid, "notifier": notifier.pid}
            meter = Meter(services | {"partner stand-in": processes[0].pid} | pids, idle=idle)
            meter.start()
            started = time.perf_counter()
            await produce(infra.bootstrap, topics.LEDGER, range(1, n + 1))
            finished = await reading
            meter.stop()
            rate = n / (finished - started)
            result["pipeline_per_s"] = round(rate)
            result["ratio_to_raw"] = round(rate / raw, 3)
            # the load generator and the reader are this process; the stand-in is the partner's
            result["cpu_ms_per_event"] = meter.per_event_ms(n, outside=("partner stand-in",))

            print(f"{paced} more at {rate / 2:.0f}/s for latency ...", flush=True)
            first, last = n + 1, n + 1 + paced
            stamps = await produce(infra.bootstrap, topics.LEDGER, range(first, last), rate / 2)
            accounts = set(stamps)
            # each account's latency, split where the scheduler hands over to the notifier
            requested = await stamps_of(
                infra.bootstrap, topics.SCHEDULER, b"contact.requested", accounts
            )
            attempted = await stamps_of(
                infra.bootstrap, topics.NOTIFIER, b"contact.attempted", accounts
            )
            result["paced_rate_per_s"] = round(rate / 2)
            result["latency_p50_ms"], result["latency_p99_ms"] = p50_p99(
                [attempted[a] - stamps[a] for a in accounts]
            )
            result["scheduler_hop_p50_ms"], result["scheduler_hop_p99_ms"] = p50_p99(
                [requested[a] - stamps[a] for a in accounts]
            )
            result["notifier_hop_p50_ms"], result["notifier_hop_p99_ms"] = p50_p99(
                [attempted[a] - requested[a] for a in accounts]
            )
            async with httpx.AsyncClient() as http:
                sends = (await http.get(f"http://127.0.0.1:{standin_port}/control/count")).json()
            result["sends_at_the_partner"] = sends["sends"]
            result["scheduler_peak_rss_mb"] = peak_rss_mb(scheduler.pid)
            result["notifier_peak_rss_mb"] = peak_rss_mb(notifier.pid)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(20)
            except Exception:
                process.kill()
    result["machine"] = f"{platform.machine()} python {platform.python_version()}"
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--paced", type=int, default=5_000)
    parser.add_argument("--book", type=int, default=1_000_000)
    args = parser.parse_args()
    report("pipeline", asyncio.run(main(args.accounts, args.paced, args.book)))
