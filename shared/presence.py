"""Where each live replica of a service is on the controlled clock, readable by any of them.

A driver of the controlled clock asks one replica (the port is shared) whether the service is
quiet at an instant; that replica knows only its own clock. Each replica therefore holds one
connection to its service's database whose ``application_name`` names the last instant it has
applied in full (every clock job run). Any replica reads its peers from ``pg_stat_activity``.
PostgreSQL ends the session of a replica that dies, so a dead replica is never waited for and
no heartbeat or clean-up is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

log = logging.getLogger(__name__)

PREFIX = "arrears-replica"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def presence_name(service: str, replica: str, instant: datetime) -> str:
    """``arrears-replica <service> <replica> <microseconds since the epoch>``: under
    PostgreSQL's 63 bytes, exact (no float), and orderable after parsing."""
    return f"{PREFIX} {service} {replica} {(instant - _EPOCH) // _MICROSECOND}"


def applied(names: Sequence[str], service: str) -> dict[str, datetime]:
    """Each replica's applied instant from ``application_name`` values (others ignored)."""
    out = {}
    for name in names:
        parts = name.split(" ")
        if len(parts) == 4 and parts[0] == PREFIX and parts[1] == service and parts[3].isdigit():
            out[parts[2]] = _EPOCH + int(parts[3]) * _MICROSECOND
    return out


PEERS_SQL = text(
    "SELECT application_name FROM pg_stat_activity "
    "WHERE datname = current_database() AND application_name LIKE :prefix"
)


async def peers(session: AsyncSession, service: str) -> dict[str, datetime]:
    """The live replicas of ``service`` and the instant each has applied."""
    rows = await session.execute(PEERS_SQL, {"prefix": f"{PREFIX} {service} %"})
    return applied([r[0] for r in rows], service)


class Presence:
    """This replica's applied instant, kept in its connection's ``application_name``."""

    def __init__(self, dsn: str, service: str) -> None:
        self._dsn = dsn
        self._service = service
        self.replica = secrets.token_hex(4)
        self._instant: datetime | None = None
        self._changed = asyncio.Event()

    def moved(self, instant: datetime) -> None:
        """Called once a clock move has been applied in full."""
        self._instant = instant
        self._changed.set()

    async def run(self, stop: asyncio.Event) -> None:
        pause = 0.1
        while not stop.is_set():
            connection = None
            try:
                connection = await asyncpg.connect(self._dsn)
                pause = 0.1
                await self._hold(connection, stop)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                # A restarting database: peers see no presence meanwhile, which is the truth.
                log.warning("replica presence lost its connection (%s)", type(exc).__name__)
                await _first(asyncio.sleep(pause), stop.wait())
                pause = min(2.0, pause * 2)
            finally:
                if connection is not None:
                    with contextlib.suppress(Exception):
                        await connection.close()

    async def _hold(self, connection: asyncpg.Connection, stop: asyncio.Event) -> None:
        lost = asyncio.Event()
        # a restarted database ends the session at once: come back before the next move
        connection.add_termination_listener(lambda _: lost.set())
        while not stop.is_set():
            self._changed.clear()
            if self._instant is not None:
                name = presence_name(self._service, self.replica, self._instant)
                await connection.execute("SELECT set_config('application_name', $1, false)", name)
            await _first(self._changed.wait(), stop.wait(), lost.wait())
            if lost.is_set():
                raise ConnectionResetError("the database ended the session")


async def _first(*aws: object) -> None:
    tasks = [asyncio.ensure_future(a) for a in aws]  # type: ignore[call-overload]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
