"""Database plumbing: engines, and the unit of work that owns commit and rollback.

Repositories add and flush through ``uow.session``; events a change causes are handed to
``uow.publish`` and written to the outbox in the same transaction as the change, when (and only
when) ``uow.commit`` runs.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from shared.envelope import CloudEvent
from shared.outbox import OUTBOX_COLUMNS, outbox_rows


def make_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    # hide_parameters: a failing statement's bound values (which may be personal data) stay out
    # of exception messages, tracebacks and logs.
    return create_async_engine(
        url, pool_size=pool_size, max_overflow=5, pool_pre_ping=True, hide_parameters=True
    )


def asyncpg_dsn(url: str) -> str:
    """The same server for a raw asyncpg connection (LISTEN needs one)."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


class UnitOfWork:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._events: list[CloudEvent] = []
        self._session: AsyncSession | None = None
        self._after_commit: list[Callable[[], None]] = []

    @property
    def session(self) -> AsyncSession:
        if self._session is None:
            raise RuntimeError("unit of work used outside 'async with'")
        return self._session

    async def __aenter__(self) -> Self:
        self._session = self._sessions()
        self._events = []
        self._after_commit = []
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._session is not None
        try:
            await self._session.rollback()  # a no-op after commit
        finally:
            await self._session.close()
            self._session = None
            self._events = []
            self._after_commit = []

    def publish(self, event: CloudEvent) -> None:
        self._events.append(event)

    def after_commit(self, step: Callable[[], None]) -> None:
        """Call ``step`` once this unit of work has committed (waking a worker that should see
        the rows it wrote); never called if it rolls back."""
        self._after_commit.append(step)

    async def commit(self) -> None:
        await self.flush_events()
        await self.session.commit()
        steps, self._after_commit = self._after_commit, []
        for step in steps:
            step()

    async def flush_events(self) -> None:
        """Write the events published so far into the outbox now, still inside the transaction:
        a job that publishes hundreds of thousands of events keeps only a chunk in memory."""
        if self._events:
            rows = outbox_rows(self._events)
            self._events = []
            # COPY on the session's own connection, so inside its transaction: several times
            # cheaper per row than an INSERT, and the outbox trigger fires all the same.
            connection = await self.session.connection()
            driver: Any = (await connection.get_raw_connection()).driver_connection
            if not driver.is_in_transaction():
                # SQLAlchemy opens the transaction on its first statement; the COPY must not be
                # that statement, or it would run (and commit) on its own.
                await connection.exec_driver_sql("SELECT 1")
            await driver.copy_records_to_table("outbox", columns=OUTBOX_COLUMNS, records=rows)


UnitOfWorkFactory = Callable[[], UnitOfWork]


def uow_factory(engine: AsyncEngine) -> UnitOfWorkFactory:
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    return lambda: UnitOfWork(sessions)


# SQLSTATE classes of a database that is restarting or unreachable: connection exceptions
# (08...) and operator intervention (57P01 admin shutdown, 57P03 cannot connect now)
TRANSIENT_SQLSTATES = ("08", "57P")


def database_unavailable(exc: BaseException) -> bool:
    """Whether a database error means the server went away (worth a retry), not a bad query."""
    if isinstance(exc, ConnectionError):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    for cause in (exc.orig, getattr(exc.orig, "__cause__", None)):
        state = getattr(cause, "sqlstate", None)
        if isinstance(state, str) and state.startswith(TRANSIENT_SQLSTATES):
            return True
        if isinstance(cause, ConnectionError):
            return True
    return False
