from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.clock import ControlledClock

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
