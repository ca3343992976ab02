"""CPU cost per event: user + system seconds of named processes, read from ``/proc``.

A rate on a shared two-core machine moves with whatever else runs; the CPU seconds a process
spends on a given amount of work move far less, and are what a bank sizes a cluster by. A
process's cost here is its own ``utime + stime`` plus those of the children it has reaped
(``cutime + cstime``: PostgreSQL's backends that came and went) plus those of its live
descendants (the backends still connected).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from scripts import stack

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses; the rest follows the last ')'
    return text.rsplit(")", 1)[1].split()


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat(int(entry.name))
        if fields is not None:
            tree.setdefault(int(fields[1]), []).append(int(entry.name))
    return tree


def cpu_seconds(pid: int, tree: Mapping[int, list[int]] | None = None) -> float:
    """User + system seconds of ``pid``, its reaped children and its live descendants."""
    fields = _stat(pid)
    if fields is None:
        return 0.0
    tree = _children() if tree is None else tree
    # fields after the name: state ppid ... utime(11) stime(12) cutime(13) cstime(14)
    own = sum(int(fields[i]) for i in (11, 12, 13, 14)) / TICK
    return own + sum(cpu_seconds(child, tree) for child in tree.get(pid, []))


def infra_pids(cfg: stack.StackConfig | None) -> dict[str, int]:
    """The broker's and PostgreSQL's process ids when the project's launcher runs them."""
    if cfg is None:
        return {}
    pids: dict[str, int] = {}
    if (kafka := stack.running_pid(cfg, "kafka")) is not None:
        pids["kafka"] = kafka
    postmaster = cfg.state_dir / "pg" / "data" / "postmaster.pid"
    if postmaster.exists():
        pids["postgres"] = int(postmaster.read_text().split()[0])
    return pids


async def idle_rates(pids: dict[str, int], seconds: float = 3.0) -> dict[str, float]:
    """Cores the broker burns doing nothing asked of it (its JVM keeps a fraction of a core
    busy on its own), measured just before a timed window, once the broker has settled (not
    right after it starts, when it is busy for a while), and subtracted from what a ``Meter``
    reports, so that a slow run is not charged for the broker's idling. PostgreSQL's
    background work (checkpoints, autovacuum) follows from the load, so it is not subtracted."""
    pids = {k: v for k, v in pids.items() if k == "kafka"}
    tree = _children()
    before = {name: cpu_seconds(pid, tree) for name, pid in pids.items()}
    await asyncio.sleep(seconds)
    tree = _children()
    return {name: (cpu_seconds(pid, tree) - before[name]) / seconds for name, pid in pids.items()}


@dataclass
class Meter:
    """CPU seconds of each named process between ``start()`` and ``stop()``, less its ``idle``
    rate over that time; ``include_self`` names the measuring process itself
    (``time.process_time``, which counts its threads)."""

    pids: dict[str, int]
    include_self: str | None = None
    idle: dict[str, float] = field(default_factory=dict)
    _before: dict[str, float] = field(default_factory=dict)
    spent: dict[str, float] = field(default_factory=dict)
    wall: float = 0.0

    def _read(self) -> dict[str, float]:
        tree = _children()
        out = {name: cpu_seconds(pid, tree) for name, pid in self.pids.items()}
        if self.include_self is not None:
            out[self.include_self] = time.process_time()
        return out

    def start(self) -> Meter:
        self._before = self._read()
        self.wall = time.perf_counter()
        return self

    def stop(self) -> dict[str, float]:
        after = self._read()
        self.wall = time.perf_counter() - self.wall
        self.spent = {
            name: max(0.0, after[name] - self._before[name] - self.idle.get(name, 0.0) * self.wall)
            for name in after
        }
        return self.spent

    def per_event_ms(self, events: int, *, outside: tuple[str, ...] = ()) -> dict[str, float]:
        """Milliseconds of CPU per event, each process and ``total`` (less those ``outside``
        the system measured, such as a partner's stand-in)."""
        out = {name: round(seconds * 1000 / events, 4) for name, seconds in self.spent.items()}
        inside = sum(v for k, v in self.spent.items() if k not in outside)
        out["total"] = round(inside * 1000 / events, 4)
        return out
