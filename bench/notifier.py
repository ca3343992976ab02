"""Notifier throughput, each figure beside a raw baseline, in one run.

1. sends: N ``contact.requested`` waiting in ``scheduler.events`` (customers known) when the real
   notifier process starts; timed to the N-th send recorded by the partner stand-in (callbacks
   off), which runs in a process of its own. Baseline: the same number of POSTs of the same
   size from one httpx client (same concurrency) to a bare uvicorn app;
2. signed webhooks: M status webhooks (``delivered``, each for a sent contact), HMAC-signed,
   POSTed to the notifier's HTTP API by C concurrent clients; throughput and p50/p99 latency.
   Baseline: the same requests against a bare uvicorn app that only reads the body;
3. the notifier process's peak resident memory (VmHWM).

    python -m bench.notifier [--sends 20000] [--webhooks 10000] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from httpx_aiohttp import HttpxAiohttpClient

from bench.cost import Meter, idle_rates, infra_pids
from bench.report import report
from services.notifier.settings import DEV_PARTNER_KEY, DEV_PARTNER_SECRET
from shared import topics
from shared.db import asyncpg_dsn
from shared.envelope import encode, new_event
from shared.events import ClockSet, ContactRequested
from shared.kafka import ensure_topics, make_producer
from shared.signing import HEADER, header_value
from tests.support.databases import migrated_database
from tests.support.infra import provide

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 12, 2, 2, 0, tzinfo=UTC)
BARE = """
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
async def take(request):
    await request.body()
    return JSONResponse({"message_id": "m"}, status_code=202)
app = Starlette(routes=[Route("/{path:path}", take, methods=["POST"])])
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def spawn(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def until_up(url: str) -> None:
    async with httpx.AsyncClient() as http:
        for _ in range(300):
            try:
                await http.get(url)
                return
            except httpx.HTTPError:
                await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def requested(i: int) -> ContactRequested:
    return ContactRequested(
        contact_id=f"bench-{i:07d}",
        account_id=f"A{i:07d}",
        customer_id=f"C{i:07d}",
        channel="sms",
        template="reminder_soft",
        not_before=NOW,
        not_after=NOW + timedelta(hours=10),
        strategy="bench",
        variant="champion",
        total_overdue=Decimal("1000.00"),
        currency="CNY",
        days_past_due=5,
        locale="zh-CN",
    )


async def load_customers(dsn: str, n: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        rows = [
            (
                f"C{i:07d}",
                "Bench Person",
                f"+86139{i:08d}",
                f"c{i}@example.com",
                "1 Bench Road, Shanghai",
                "zh-CN",
                "CN",
                NOW,
            )
            for i in range(n)
        ]
        await conn.copy_records_to_table(
            "customer",
            records=rows,
            columns=[
                "customer_id",
                "full_name",
                "phone",
                "email",
                "postal_address",
                "locale",
                "country",
                "updated_at",
            ],
        )
    finally:
        await conn.close()


async def post_all(
    url: str, bodies: list[bytes], concurrency: int, sign: bool
) -> tuple[float, list[float]]:
    """(requests per second, latencies in seconds)."""
    latencies: list[float] = []
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)

    async def worker() -> None:
        # A client (one keep-alive connection) per worker, over aiohttp as in the notifier:
        # httpx's own pool would measure itself rather than the server (encode/httpx#3215).
        async with HttpxAiohttpClient(timeout=30) as http:
            while not queue.empty():
                body = queue.get_nowait()
                headers = {"content-type": "application/json", "Idempotency-Key": "k"}
                if sign:
                    headers[HEADER] = header_value(DEV_PARTNER_SECRET, int(time.time()), body)
                started = time.perf_counter()
                response = await http.post(url, content=body, headers=headers)
                latencies.append(time.perf_counter() - started)
                if response.status_code >= 400:
                    raise RuntimeError(f"{url}: {response.status_code} {response.text[:200]}")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(bodies) / (time.perf_counter() - started), latencies


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return round(ordered[max(0, int(len(ordered) * p) - 1)] * 1000, 1)


def peak_rss_mb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024)
    except OSError:
        return None
    return None


async def main(n: int, m: int, concurrency: int) -> dict[str, Any]:
    result: dict[str, Any] = {"cores": os.cpu_count(), "sends": n, "webhooks": m}
    result["concurrency"] = concurrency
    bare_port, standin_port, notifier_port = free_port(), free_port(), free_port()
    (ROOT / ".stack").mkdir(exist_ok=True)
    bare_file = ROOT / ".stack" / "bench_bare_app.py"
    bare_file.write_text(BARE)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        with provide("bench", 12000) as infra:
            await ensure_topics(infra.bootstrap, 6)
            # baselines against a bare uvicorn app
            processes.append(
                spawn(
                    [
                        "-m",
                        "uvicorn",
                        "--app-dir",
                        str(bare_file.parent),
                        "bench_bare_app:app",
                        "--port",
                        str(bare_port),
                        "--log-level",
                        "warning",
                    ]
                )
            )
            await until_up(f"http://127.0.0.1:{bare_port}/")
            sample = json.dumps(
                {
                    "contact_id": "bench-0000000",
                    "channel": "sms",
                    "to": "+8613900000000",
                    "body": "x" * 160,
                    "locale": "zh-CN",
                }
            ).encode()
            raw_sends, _ = await post_all(
                f"http://127.0.0.1:{bare_port}/v1/messages/sms", [sample] * n, concurrency, False
            )
            result["raw_httpx_uvicorn_per_s"] = round(raw_sends)

            url = await migrated_database(infra.admin_url, "arrears_bench_notifier", "notifier")
            await load_customers(asyncpg_dsn(url), n)
            producer = make_producer(infra.bootstrap)
            await producer.start()
            clock = encode(new_event(ClockSet(now=NOW), source="/bench", key="clock", time=NOW))
            await producer.send_and_wait(
                topics.CLOCK, value=clock[1], key=clock[0], headers=clock[2]
            )
            pending = []
            for i in range(n):
                key, value, headers = encode(
                    new_event(requested(i), source="/bench", key=f"C{i:07d}", time=NOW)
                )
                pending.append(
                    await producer.send(topics.SCHEDULER, value=value, key=key, headers=headers)
                )
            await asyncio.gather(*pending)
            await producer.stop()

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
            await httpx.AsyncClient().post(
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
            notifier = spawn(
                ["-m", "services.notifier"],
                {
                    "KAFKA_BOOTSTRAP_SERVERS": infra.bootstrap,
                    "ARREARS_CLOCK": "controlled",
                    "ARREARS_LOG_LEVEL": "WARNING",
                    "NOTIFIER_DATABASE_URL": url,
                    "NOTIFIER_HTTP_PORT": str(notifier_port),
                    "NOTIFIER_PARTNERS": json.dumps([partner]),
                },
            )
            processes.append(notifier)
            started = time.perf_counter()
            async with httpx.AsyncClient() as http:
                while (await http.get(f"http://127.0.0.1:{standin_port}/control/count")).json()[
                    "sends"
                ] < n:
                    await asyncio.sleep(0.2)
            sends = n / (time.perf_counter() - started)
            result["notifier_sends_per_s"] = round(sends)
            result["sends_ratio_to_raw"] = round(sends / raw_sends, 3)

            bodies = [
                json.dumps(
                    {
                        "event_id": str(uuid.uuid4()),
                        "contact_id": f"bench-{i % n:07d}",
                        "status": "delivered",
                    }
                ).encode()
                for i in range(m)
            ]
            # the server side's CPU only: the clients are this process
            raw_meter = Meter({"bare app": processes[0].pid}).start()
            raw_hooks, raw_latency = await post_all(
                f"http://127.0.0.1:{bare_port}/v1/webhooks/standin/status",
                bodies,
                concurrency,
                True,
            )
            raw_meter.stop()
            servers = infra_pids(infra.stack)
            meter = Meter({"notifier": notifier.pid} | servers, idle=await idle_rates(servers))
            meter.start()
            hooks, latency = await post_all(
                f"http://127.0.0.1:{notifier_port}/v1/webhooks/standin/status",
                bodies,
                concurrency,
                True,
            )
            meter.stop()
            result["raw_webhook_cpu_ms"] = raw_meter.per_event_ms(m)
            result["webhook_cpu_ms"] = meter.per_event_ms(m)
            result |= {
                "raw_webhooks_per_s": round(raw_hooks),
                "raw_webhook_p50_ms": percentile(raw_latency, 0.5),
                "raw_webhook_p99_ms": percentile(raw_latency, 0.99),
                "notifier_webhooks_per_s": round(hooks),
                "webhooks_ratio_to_raw": round(hooks / raw_hooks, 3),
                "webhook_p50_ms": percentile(latency, 0.5),
                "webhook_p99_ms": percentile(latency, 0.99),
                "notifier_peak_rss_mb": peak_rss_mb(notifier.pid),
            }
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
    result["machine"] = f"{platform.machine()} python {platform.python_version()}"
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--sends", type=int, default=20_000)
    parser.add_argument("--webhooks", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    report("notifier", asyncio.run(main(args.sends, args.webhooks, args.concurrency)))
