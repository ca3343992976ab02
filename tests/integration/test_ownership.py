"""Once-only work among replicas (``shared.ownership``), against the real PostgreSQL: one of
three processes owns the work, the others wait, and when the owner is SIGKILLed one waiting
replica takes it over."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import pytest

from shared.db import asyncpg_dsn
from tests.support.databases import create_database
from tests.support.infra import Infra

pytestmark = pytest.mark.asyncio(loop_scope="session")
ROOT = Path(__file__).resolve().parents[2]

# A replica: owns the work, says so in the table, then works until it is killed.
REPLICA = """
import asyncio, sys
import asyncpg
from shared.ownership import owned

async def main(dsn: str, me: str) -> None:
    async with owned(dsn, "test:once-only", asyncio.Event()) as mine:
        assert mine
        conn = await asyncpg.connect(dsn)
        await conn.execute("INSERT INTO took_over (replica) VALUES ($1)", me)
        await asyncio.Event().wait()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def owners(conn: asyncpg.Connection) -> list[str]:
    return [r["replica"] for r in await conn.fetch("SELECT replica FROM took_over ORDER BY id")]


async def waiting(conn: asyncpg.Connection) -> int:
    found = await conn.fetchval(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    return int(found)


async def until(check: object, timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not await check():  # type: ignore[operator]
            await asyncio.sleep(0.05)


async def test_a_killed_owner_hands_the_work_to_one_waiting_replica(infra: Infra) -> None:
    dsn = asyncpg_dsn(await create_database(infra.admin_url, f"arrears_own_{uuid.uuid4().hex[:6]}"))
    conn = await asyncpg.connect(dsn)
    await conn.execute("CREATE TABLE took_over (id serial PRIMARY KEY, replica text NOT NULL)")
    replicas = {
        name: subprocess.Popen(
            [sys.executable, "-c", REPLICA, dsn, name], cwd=ROOT, env={**os.environ}
        )
        for name in ("r1", "r2", "r3")
    }
    try:
        for remaining in (3, 2, 1):
            # one owner; every other live replica waits for it
            await until(lambda n=remaining: _settled(conn, 4 - n, n - 1))
            holder = (await owners(conn))[-1]
            assert replicas[holder].poll() is None
            replicas[holder].send_signal(signal.SIGKILL)
            replicas[holder].wait(timeout=10)
        await until(lambda: _settled(conn, 3, 0))
        taken = await owners(conn)
        assert sorted(taken) == ["r1", "r2", "r3"], taken  # each took over once, in turn
    finally:
        for process in replicas.values():
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
        await conn.close()


async def _settled(conn: asyncpg.Connection, owned: int, waiters: int) -> bool:
    return len(await owners(conn)) == owned and await waiting(conn) == waiters
