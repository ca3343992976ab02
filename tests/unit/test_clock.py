from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.exc import DBAPIError

from shared.clock import ControlledClock
from shared.presence import applied, presence_name
from shared.service import run_clock_job

T0 = datetime(2026, 12, 1, tzinfo=UTC)


async def test_controlled_clock_moves_forward_and_tells_its_listeners() -> None:
    clock = ControlledClock(T0)
    seen: list[datetime] = []

    async def listener(now: datetime) -> None:
        seen.append(now)

    clock.on_advance(listener)
    assert await clock.set(T0 + timedelta(days=1))
    assert clock.now() == T0 + timedelta(days=1)
    assert seen == [T0 + timedelta(days=1)]


async def test_controlled_clock_never_goes_backwards() -> None:
    clock = ControlledClock(T0 + timedelta(days=3))
    seen: list[datetime] = []

    async def listener(now: datetime) -> None:
        seen.append(now)

    clock.on_advance(listener)
    assert not await clock.set(T0)
    assert not await clock.set(T0 + timedelta(days=3))
    assert clock.now() == T0 + timedelta(days=3)
    assert seen == []


async def test_a_failing_listener_does_not_stop_time_for_the_others() -> None:
    clock = ControlledClock(T0)
    seen: list[datetime] = []

    async def broken(now: datetime) -> None:
        raise RuntimeError("boom")

    async def fine(now: datetime) -> None:
        seen.append(now)

    clock.on_advance(broken)
    clock.on_advance(fine)
    await clock.set(T0 + timedelta(hours=1))
    assert seen == [T0 + timedelta(hours=1)]


async def test_naive_instants_are_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        ControlledClock(datetime(2026, 12, 1))  # noqa: DTZ001
    clock = ControlledClock(T0)
    with pytest.raises(ValueError, match="aware"):
        await clock.set(datetime(2026, 12, 2))  # noqa: DTZ001


async def test_the_ledger_answers_as_of_an_instant_only_once_its_move_is_applied() -> None:
    """A reporting cycle asks the ledger's standing as of its own instant: the ledger waits
    until its clock has reached it and every listener of the move has run."""
    import asyncio

    from services.ledger.bootstrap import products
    from services.ledger.handlers import Ledger

    start = datetime(2026, 12, 1, 1, 30, tzinfo=UTC)
    clock = ControlledClock(start)
    ledger = Ledger(clock, products())
    later = start + timedelta(hours=4)
    assert await ledger.reached(start, 0.1)
    assert not await ledger.reached(later, 0.1)
    far = asyncio.get_running_loop().time()
    assert not await ledger.reached(start + timedelta(days=2), 30)  # refused without waiting
    assert asyncio.get_running_loop().time() - far < 1
    release = asyncio.Event()

    async def slow_evaluation(now: datetime) -> None:
        await release.wait()

    clock.on_advance(slow_evaluation)
    moving = asyncio.create_task(clock.set(later))
    await asyncio.sleep(0.05)
    assert clock.now() == later
    assert not await ledger.reached(later, 0.1)  # the move is still being applied
    waiting = asyncio.create_task(ledger.reached(later, 5))
    release.set()
    assert await waiting
    await moving


class _Restarting(Exception):
    """What asyncpg raises while PostgreSQL starts up (SQLSTATE 57P03)."""

    sqlstate = "57P03"


class _Deadlock(Exception):
    sqlstate = "40P01"


class _Session:
    async def execute(self, *_: object) -> None:
        return None


class _Unit:
    def __init__(self, failures: list[BaseException], committed: list[bool]) -> None:
        self.session = _Session()
        self._failures = failures
        self._committed = committed

    async def __aenter__(self) -> _Unit:
        if self._failures:
            raise self._failures.pop(0)
        return self

    async def __aexit__(self, *_: object) -> None:
        return None

    async def commit(self) -> None:
        self._committed.append(True)


async def test_a_clock_job_waits_out_a_database_restart_and_does_the_moves_work() -> None:
    restart: list[BaseException] = [DBAPIError("connect", {}, _Restarting()) for _ in range(6)]
    committed: list[bool] = []
    done: list[datetime] = []

    async def job(_: object, now: datetime) -> None:
        done.append(now)

    def uow() -> _Unit:
        return _Unit(restart, committed)

    at = T0 + timedelta(hours=3)
    await run_clock_job(uow, "t", job, at, asyncio.Event(), max_pause=0.01)  # type: ignore[arg-type]
    assert done == [at]  # six refusals, more than a deadlock is allowed, then the work, once
    assert committed == [True]


async def test_a_clock_job_that_keeps_deadlocking_gives_up_after_three_tries() -> None:
    deadlocks: list[BaseException] = [DBAPIError("x", {}, _Deadlock()) for _ in range(3)]
    done: list[datetime] = []

    async def job(_: object, now: datetime) -> None:
        done.append(now)

    def uow() -> _Unit:
        return _Unit(deadlocks, [])

    with pytest.raises(DBAPIError):
        await run_clock_job(uow, "t", job, T0, asyncio.Event())  # type: ignore[arg-type]
    assert done == []


async def test_a_move_is_reported_applied_only_after_every_listener_ran() -> None:
    clock = ControlledClock(T0)
    order: list[str] = []

    async def job(now: datetime) -> None:
        await asyncio.sleep(0)
        order.append("job")

    clock.on_advance(job)
    clock.on_applied(lambda now: order.append(f"applied {now:%H}"))
    await clock.set(T0 + timedelta(hours=2))
    await clock.set(T0)  # backwards: nothing runs, nothing is reported
    assert order == ["job", f"applied {T0 + timedelta(hours=2):%H}"]


def test_a_replicas_presence_names_its_instant_exactly_and_fits_postgresqls_limit() -> None:
    at = datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    name = presence_name("scheduler", "0a1b2c3d", at)
    assert len(name.encode()) <= 63  # longer application_name values are cut
    names = [name, presence_name("ledger", "ffff0000", T0), "psql", "arrears-replica scheduler x"]
    assert applied(names, "scheduler") == {"0a1b2c3d": at}
