"""Work that must happen once however many replicas of a service run: owned by one replica at a
time through a PostgreSQL advisory lock, and taken over when that replica dies.

Two forms:

* :func:`serialised` inside a unit of work: the transaction waits for the lock and holds it
  until it commits or rolls back. A clock job runs in every replica on every clock move, one
  after another; the first does the work, the ones after it find nothing left to do.
* :func:`owned` around long work made of many transactions (a bureau cycle): a session lock on
  a connection of its own, held until the work is done. When the owner's process dies its
  connection closes, the server releases the lock, and the replica waiting for it goes on from
  what the dead one committed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

_XACT = text("SELECT pg_advisory_xact_lock(hashtext(:name))")


async def serialised(session: AsyncSession, name: str) -> None:
    """Hold ``name`` until the session's transaction ends (waiting for any other holder)."""
    await session.execute(_XACT, {"name": name})


@contextlib.asynccontextmanager
async def owned(dsn: str, name: str, stop: asyncio.Event, who: str = "") -> AsyncIterator[bool]:
    """Yields True once this process holds ``name``, or False if ``stop`` came first. ``who``
    names the replica in the session's ``application_name``, for an operator asking
    ``pg_locks`` and ``pg_stat_activity`` which replica owns the work."""
    label = f"{name} {who}".strip()[:63]
    connection: Any = await asyncpg.connect(dsn, server_settings={"application_name": label})
    try:
        acquire = asyncio.ensure_future(
            connection.execute("SELECT pg_advisory_lock(hashtext($1))", name)
        )
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({acquire, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not acquire.done():
            acquire.cancel()  # asyncpg cancels the waiting statement on the server
            with contextlib.suppress(asyncio.CancelledError, asyncpg.PostgresError):
                await acquire
            yield False
            return
        acquire.result()
        yield True
    finally:
        # closing the session releases the lock, as a dead process's closed socket does
        with contextlib.suppress(Exception):
            await connection.close(timeout=5)
