"""The one source of time.

In production the clock is the wall clock. With ``ARREARS_CLOCK=controlled`` every service follows
``clock.set`` events on ``system.clock``: time never goes backwards, and listeners (timers,
delinquency evaluation) run whenever it moves, so timers due at or before the new time fire.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Protocol

log = logging.getLogger(__name__)

Listener = Callable[[datetime], Awaitable[None]]


def wall_now() -> datetime:
    """Wall time, for what is operational rather than business time (retry back-off, stale
    claims, sessions): it must pass even while a controlled clock stands still."""
    return datetime.now(UTC)


class Clock(Protocol):
    def now(self) -> datetime: ...

    def on_advance(self, listener: Listener) -> None: ...


class WallClock:
    """Real time. Listeners registered here are driven by the service's periodic ticker."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def now(self) -> datetime:
        return datetime.now(UTC)

    def on_advance(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def tick(self) -> None:
        now = self.now()
        for listener in self._listeners:
            await listener(now)


class ControlledClock:
    """Time set from outside. ``set`` ignores any instant earlier than the current one."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("the clock needs an aware datetime")
        self._now = start
        self._listeners: list[Listener] = []
        self._applied: list[Callable[[datetime], None]] = []
        self._lock = asyncio.Lock()
        # Until the first clock.set, "now" is only a placeholder: nothing may be stamped with it.
        self.started = asyncio.Event()

    def now(self) -> datetime:
        return self._now

    def on_advance(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def on_applied(self, callback: Callable[[datetime], None]) -> None:
        """``callback(instant)`` once a move's listeners have all run."""
        self._applied.append(callback)

    @property
    def busy(self) -> bool:
        """A move is being applied: its listeners (timers, evaluations) have not all run."""
        return self._lock.locked()

    async def set(self, instant: datetime) -> bool:
        """Move to ``instant``; returns False (and changes nothing) if it is not later."""
        if instant.tzinfo is None:
            raise ValueError("the clock needs an aware datetime")
        async with self._lock:
            if instant <= self._now:
                return False
            self._now = instant
            self.started.set()
            for listener in self._listeners:
                try:
                    await listener(instant)
                except Exception:
                    # One failing listener must not stop time for the others; each retries on
                    # the next move because they work from "everything due at or before now".
                    log.exception("clock listener failed")
            for callback in self._applied:
                callback(instant)
            return True
