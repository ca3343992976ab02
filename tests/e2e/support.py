"""A whole Arrears system for the end-to-end suite: the project's launcher starts Kafka,
PostgreSQL, the partner stand-in and the four services as processes, on ports and a folder of
their own, on the controlled clock; tests talk to it only through its public contract."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tools.simulator.system import SERVICES, Endpoints

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class RunningStack:
    state_dir: Path
    env: dict[str, str]
    endpoints: Endpoints

    def run(self, *argv: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, *argv],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def stack_env(state_dir: Path, base: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        **os.environ,
        "ARREARS_STACK_DIR": str(state_dir),
        "ARREARS_KAFKA_PORT": str(base + 92),
        "ARREARS_KAFKA_CONTROLLER_PORT": str(base + 93),
        "ARREARS_PG_PORT": str(base + 32),
        "ARREARS_PARTNERS_PORT": str(base + 90),
        "ARREARS_TOPIC_PARTITIONS": "3",
        "ARREARS_CLOCK": "controlled",
        **{f"ARREARS_{name.upper()}_PORT": str(base + i) for i, name in enumerate(SERVICES, 1)},
        **(extra or {}),
    }
    for name in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "NOTIFIER_PARTNERS"):
        env.pop(name, None)
    return env


@contextlib.contextmanager
def running_stack(
    state_dir: Path, base: int, extra: dict[str, str] | None = None
) -> Iterator[RunningStack]:
    # Linux hands out ports from 32768 up to outgoing connections; a listener placed there can
    # find its port taken by some client's socket (a CI run lost its scheduler that way).
    assert base + 93 < 32768, f"port base {base} reaches into the ephemeral range"
    env = stack_env(state_dir, base, extra)
    launcher = [sys.executable, "-m", "scripts.stack"]
    endpoints = Endpoints(
        bootstrap=f"127.0.0.1:{base + 92}",
        services={name: f"http://127.0.0.1:{base + i}" for i, name in enumerate(SERVICES, 1)},
        partners=f"http://127.0.0.1:{base + 90}",
    )
    try:
        up = subprocess.run(
            [*launcher, "up"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
        )
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        yield RunningStack(state_dir, env, endpoints)
    finally:
        subprocess.run([*launcher, "down"], cwd=ROOT, env=env, capture_output=True, timeout=180)


def service_logs(state_dir: Path) -> str:
    logs = state_dir / "logs"
    return "\n".join(p.read_text(errors="replace") for p in sorted(logs.glob("*.log")))
