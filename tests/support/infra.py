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


def private_stack(
    database_url: str | None, name: str = "test", base: int = 10000
) -> stack.StackConfig:
    """A launcher configuration of its own (folder ``.stack/<name>``, ports offset by ``base``)."""
    return stack.StackConfig(
        state_dir=ROOT / ".stack" / name,
        kafka_port=base + 9092,
        controller_port=base + 9093,
        pg_port=base + 5432,
        database_url=database_url,
        service_ports={s: base + p for s, p in stack.SERVICE_PORTS.items()},
    )


@contextlib.contextmanager
def kafka_container(port: int = 19092) -> Iterator[str]:
    """The official apache/kafka image as one KRaft node. testcontainers' KafkaContainer drives
    Confluent's image; this one needs its listeners spelled out, and the advertised address must
    be known before start, hence a fixed host port."""
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs

    container = (
        DockerContainer(KAFKA_IMAGE)
        .with_bind_ports(port, port)
        .with_envs(
            KAFKA_NODE_ID="1",
            KAFKA_PROCESS_ROLES="broker,controller",
            KAFKA_LISTENERS=f"PLAINTEXT://:{port},CONTROLLER://:9093",
            KAFKA_ADVERTISED_LISTENERS=f"PLAINTEXT://localhost:{port}",
            KAFKA_CONTROLLER_LISTENER_NAMES="CONTROLLER",
            KAFKA_LISTENER_SECURITY_PROTOCOL_MAP="CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            KAFKA_CONTROLLER_QUORUM_VOTERS="1@localhost:9093",
            KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR="1",
            KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR="1",
            KAFKA_TRANSACTION_STATE_LOG_MIN_ISR="1",
            KAFKA_AUTO_CREATE_TOPICS_ENABLE="false",
            KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS="0",
        )
    )
    with container:
        wait_for_logs(container, "Kafka Server started", timeout=120)
        yield f"localhost:{port}"


@contextlib.contextmanager
def provide(name: str = "test", base: int = 10000) -> Iterator[Infra]:
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    database_url = os.environ.get("DATABASE_URL")
    with contextlib.ExitStack() as cleanup:
        use_docker = (not bootstrap or not database_url) and docker_answers()
        if use_docker and not bootstrap:
            bootstrap = cleanup.enter_context(kafka_container())
        if use_docker and not database_url:
            from testcontainers.community.postgres import PostgresContainer

            pg = cleanup.enter_context(PostgresContainer(POSTGRES_IMAGE, driver=None))
            database_url = pg.get_connection_url()
        cfg = None
        if not bootstrap or not database_url:
            cfg = private_stack(database_url, name, base)
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
