"""Where the tests find Kafka and PostgreSQL.

In order of preference, each on its own: ``KAFKA_BOOTSTRAP_SERVERS`` / ``DATABASE_URL`` when set;
testcontainers when a Docker engine answers; otherwise the project's own launcher, on ports and a
state folder of its own so a running ``make up`` is left alone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from scripts import stack

ROOT = Path(__file__).resolve().parents[2]
KAFKA_IMAGE = "apache/kafka:4.4.0"
POSTGRES_IMAGE = "postgres:17"


@dataclass(frozen=True)
class Infra:
    bootstrap: str
    admin_url: str  # a superuser connection (postgresql://...) that can create roles and databases
    stack: stack.StackConfig | None  # set when the local launcher runs the servers


def docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def test_stack_config(database_url: str | None) -> stack.StackConfig:
    return stack.StackConfig(
        state_dir=ROOT / ".stack" / "test",
        kafka_port=int(os.environ.get("ARREARS_TEST_KAFKA_PORT", "19092")),
        controller_port=int(os.environ.get("ARREARS_TEST_KAFKA_CONTROLLER_PORT", "19093")),
        pg_port=int(os.environ.get("ARREARS_TEST_PG_PORT", "15432")),
        database_url=database_url,
        service_ports={"ledger": 18001, "scheduler": 18002, "notifier": 18003, "bureau": 18004},
    )


@contextlib.contextmanager
def provide() -> Iterator[Infra]:
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    database_url = os.environ.get("DATABASE_URL")
    with contextlib.ExitStack() as cleanup:
        use_docker = (not bootstrap or not database_url) and docker_answers()
        if use_docker and not bootstrap:
            from testcontainers.kafka import KafkaContainer

            kafka = cleanup.enter_context(KafkaContainer(KAFKA_IMAGE).with_kraft())
            bootstrap = kafka.get_bootstrap_server()
        if use_docker and not database_url:
            from testcontainers.postgres import PostgresContainer

            pg = cleanup.enter_context(PostgresContainer(POSTGRES_IMAGE, driver=None))
            database_url = pg.get_connection_url()
        cfg = None
        if not bootstrap or not database_url:
            cfg = test_stack_config(database_url)
            # A clean slate each session: topics, groups and databases from an earlier run would
            # otherwise leak into this one.
            stack.down(cfg)
            shutil.rmtree(cfg.state_dir, ignore_errors=True)
            cleanup.callback(stack.down, cfg)
            if not database_url:
                stack.start_postgres(cfg)
                database_url = stack.admin_url(cfg)
            if not bootstrap:
                stack.start_kafka(cfg)
                bootstrap = cfg.bootstrap
        yield Infra(
            bootstrap=bootstrap,
            admin_url=database_url.replace("postgresql+asyncpg://", "postgresql://", 1),
            stack=cfg,
        )
