"""A reporting cycle with three bureau replicas (three ``python -m services.bureau`` processes,
one database, one consumer group): run once; the replica holding it SIGKILLed mid-cycle, another
finishes it, and every account is reported once."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import uuid
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest

from services.bureau.bootstrap import CYCLE_OWNER, build
from services.bureau.settings import BureauSettings
from shared import topics
from shared.db import asyncpg_dsn
from shared.envelope import CloudEvent, decode, new_event
from shared.events import (
    ClockSet,
    CustomerUpserted,
    LoanOpened,
    PaymentMissed,
    ReportBlocked,
    ReportSubmitted,
    ScheduledInstallment,
)
from shared.service import ServiceRuntime
from tests.support.databases import migrated_database
from tests.support.factories import latest_clock, produce, read_topic, skip_history
from tests.support.infra import Infra

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(300)]
ROOT = Path(__file__).resolve().parents[2]
ACCOUNTS = 15_000  # three chunks of the cycle's 5,000


def book(prefix: str, at: datetime) -> list[CloudEvent]:
    today = at.date()
    due = today - timedelta(days=35)
    events = []
    for i in range(ACCOUNTS):
        customer, account = f"{prefix}C{i:05d}", f"{prefix}A{i:05d}"
        for data in (
            CustomerUpserted(
                customer_id=customer,
                full_name="Jane Q Public",
                birth_date=date(1980, 5, 17),
                timezone="UTC",
                locale="en-US",
                country="US",
                national_id="123456789",
                postal_address="12 Elm St, Springfield, IL 62701",
            ),
            LoanOpened(
                account_id=account,
                customer_id=customer,
                product="personal_loan",
                principal=Decimal("3000.00"),
                currency="USD",
                opened_on=today - timedelta(days=120),
                schedule=[
                    ScheduledInstallment(installment_no=1, due_date=due, amount=Decimal("500.00"))
                ],
            ),
            PaymentMissed(
                account_id=account,
                customer_id=customer,
                installment_no=1,
                due_date=due,
                amount_due=Decimal("500.00"),
                total_overdue=Decimal("500.00"),
                currency="USD",
                days_past_due=35,
                bucket="30-59",
            ),
        ):
            events.append(new_event(data, source="/test", key=customer, time=at))
    return events


def clock_set(at: datetime) -> CloudEvent:
    return new_event(ClockSet(now=at), source="/test", key="clock", time=at)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def until(check: object, timeout: float = 120.0) -> None:
    async with asyncio.timeout(timeout):
        while not await check():  # type: ignore[operator]
            await asyncio.sleep(0.02)


async def test_a_cycle_with_three_replicas_survives_its_owner_and_reports_each_account_once(
    kafka: str, infra: Infra, tmp_path: Path
) -> None:
    url = await migrated_database(
        infra.admin_url, f"arrears_bureau_r{uuid.uuid4().hex[:6]}", "bureau"
    )
    settings = BureauSettings(
        KAFKA_BOOTSTRAP_SERVERS=kafka, ARREARS_CLOCK="controlled", database_url=url
    )
    await skip_history(kafka, ServiceRuntime(settings, build))  # constructed, never started
    start = (await latest_clock(kafka) or datetime(2026, 12, 1, tzinfo=UTC)) + timedelta(days=1)
    start = datetime.combine(start.date(), time(12), UTC)
    await produce(kafka, topics.CLOCK, [clock_set(start)])

    port = free_port()
    env = {
        **os.environ,
        "ARREARS_ENV": "test",
        "ARREARS_CLOCK": "controlled",
        "KAFKA_BOOTSTRAP_SERVERS": kafka,
        "BUREAU_DATABASE_URL": url,
        "BUREAU_CYCLE": "daily",
        "BUREAU_ARCHIVE_DIR": str(tmp_path / "archive"),
        "BUREAU_DROP_DIR": str(tmp_path / "drop"),
        "BUREAU_HTTP_PORT": str(port),
        "ARREARS_HTTP_REUSE_PORT": "true",
    }
    replicas = {
        f"replica {i}": subprocess.Popen(
            [sys.executable, "-m", "services.bureau"],
            cwd=ROOT,
            env=env | {"ARREARS_REPLICA": str(i)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for i in (1, 2, 3)
    }
    db = await asyncpg.connect(asyncpg_dsn(url))
    try:
        prefix = f"R{uuid.uuid4().hex[:4]}"
        seeded = book(prefix, start)
        missed = [e for e in seeded if isinstance(e.data, PaymentMissed)]
        banking = [e for e in seeded if not isinstance(e.data, PaymentMissed)]
        await produce(kafka, topics.CORE_BANKING, banking)
        await produce(kafka, topics.LEDGER, missed)

        async def known() -> bool:
            found = await db.fetchval("SELECT count(*) FROM account WHERE days_past_due = 35")
            return bool(found == ACCOUNTS)

        await until(known)  # the three replicas consumed the book between them

        cycle_at = start + timedelta(days=1)
        cycle = cycle_at.date().isoformat()
        await produce(kafka, topics.CLOCK, [clock_set(cycle_at)])

        async def reports() -> int:
            return int(await db.fetchval("SELECT count(*) FROM report WHERE cycle_id = $1", cycle))

        async def mid_cycle() -> bool:
            return 0 < await reports() < ACCOUNTS

        await until(mid_cycle)
        holder = await db.fetchval(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
            "WHERE l.locktype = 'advisory' AND l.granted AND a.application_name LIKE $1",
            f"{CYCLE_OWNER} %",
        )
        owner = holder.removeprefix(CYCLE_OWNER).strip()
        replicas[owner].send_signal(signal.SIGKILL)
        replicas[owner].wait(timeout=10)
        assert 0 < await reports() < ACCOUNTS, "the cycle ended before its owner was killed"

        async def submitted() -> bool:
            status = await db.fetchval("SELECT status FROM cycle WHERE cycle_id = $1", cycle)
            return bool(status == "submitted")

        await until(submitted)
        assert await reports() == ACCOUNTS  # the primary key (cycle, account): each once
        files = await db.fetch("SELECT file_id FROM bureau_file WHERE cycle_id = $1", cycle)
        carried = await db.fetchval(
            "SELECT count(DISTINCT file_id) FROM report WHERE cycle_id = $1 AND line IS NOT NULL",
            cycle,
        )
        assert len(files) == carried <= 1  # the US file, built once, if a record passed

        # The cycle's status is committed with its last chunk's outbox rows, not after they are
        # published: the surviving replicas' relays publish the rest (the dead owner's too).
        async def relayed() -> bool:
            return bool(await db.fetchval("SELECT count(*) FROM outbox") == 0)

        await until(relayed)
        records = await read_topic(kafka, topics.BUREAU)
        # A relay killed between the broker's acknowledgement and its delete publishes a batch
        # again (at-least-once, the same event ids, dropped by consumers' inboxes): one event
        # per account is one event id per account.
        announced = {
            event.id: event.data.account_id
            for event in (decode(r.key, r.value, r.headers) for r in records)
            if isinstance(event.data, (ReportSubmitted, ReportBlocked))
            and event.data.cycle == cycle
            and event.data.account_id.startswith(prefix)
        }
        assert len(announced) == ACCOUNTS
        assert len(set(announced.values())) == ACCOUNTS
    finally:
        for process in replicas.values():
            if process.poll() is None:
                process.terminate()
        for process in replicas.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        await db.close()
