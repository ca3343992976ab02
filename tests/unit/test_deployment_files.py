"""docker-compose.yml cannot run here (no Docker engine), so it is checked against the code."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.bureau.settings import BureauSettings
from services.desk.settings import DeskSettings
from services.ledger.settings import LedgerSettings
from services.notifier.settings import NotifierSettings
from services.scheduler.settings import SchedulerSettings
from shared.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[2]
SETTINGS: list[type[ServiceSettings]] = [
    LedgerSettings,
    SchedulerSettings,
    NotifierSettings,
    BureauSettings,
    DeskSettings,
]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def env_names(cls: type[ServiceSettings]) -> set[str]:
    """Every environment variable the settings class reads."""
    prefix = cls.model_config.get("env_prefix", "")
    names = set()
    for name, info in cls.model_fields.items():
        alias = info.validation_alias
        names.add(alias if isinstance(alias, str) else f"{prefix}{name}".upper())
    return names


def test_kafka_image_is_the_version_the_local_launcher_pins(compose: dict[str, Any]) -> None:
    pom = (ROOT / "scripts" / "kafka" / "pom.xml").read_text()
    pinned = re.search(r"<kafka.version>([^<]+)</kafka.version>", pom)
    assert pinned is not None
    assert compose["services"]["kafka"]["image"] == f"apache/kafka:{pinned.group(1)}"
    env = compose["services"]["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


@pytest.mark.parametrize("cls", SETTINGS, ids=lambda c: c.service_name)
def test_each_service_runs_its_module_with_env_its_settings_read(
    compose: dict[str, Any], cls
) -> None:
    name, prefix = cls.service_name, cls.service_name.upper()
    service = compose["services"][name]
    assert service["command"] == ["python", "-m", f"services.{name}"]
    env = service["environment"]
    unknown = set(env) - env_names(cls)
    assert not unknown, f"{name} sets variables its settings never read: {unknown}"
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert env["ARREARS_API_KEYS"] == "${ARREARS_API_KEYS:?set ARREARS_API_KEYS}"
    assert (
        env["ARREARS_FINGERPRINT_KEY"] == "${ARREARS_FINGERPRINT_KEY:?set ARREARS_FINGERPRINT_KEY}"
    )
    assert env[f"{prefix}_DATABASE_URL"].endswith(f"@postgres:5432/arrears_{name}")
    assert f"arrears_{name}:${{{prefix}_DB_PASSWORD}}@" in env[f"{prefix}_DATABASE_URL"]
    assert int(env[f"{prefix}_HTTP_PORT"]) == cls.default_port
    # a host port per replica, up to four
    assert service["ports"] == [f"{cls.default_port}-{cls.default_port + 3}:{cls.default_port}"]
    assert service["deploy"]["replicas"] == "${ARREARS_REPLICAS:-1}"
    probe = " ".join(service["healthcheck"]["test"])
    assert f"127.0.0.1:{cls.default_port}/readyz" in probe
    depends = service["depends_on"]
    assert depends["kafka"]["condition"] == "service_healthy"
    assert depends["postgres"]["condition"] == "service_healthy"
    assert depends["init"]["condition"] == "service_completed_successfully"


def test_init_creates_topics_and_migrates_every_service(compose: dict[str, Any]) -> None:
    init = compose["services"]["init"]
    script = " ".join(init["command"])
    assert "python -m scripts.stack topics" in script
    for cls in SETTINGS:
        assert f"python -m services.{cls.service_name} migrate" in script
        assert f"{cls.service_name.upper()}_DATABASE_URL" in init["environment"]


def test_postgres_init_script_gives_each_service_its_own_role_and_database(
    compose: dict[str, Any],
) -> None:
    pg = compose["services"]["postgres"]
    mount = next(v for v in pg["volumes"] if "docker-entrypoint-initdb.d" in v)
    script = (ROOT / mount.split(":")[0]).read_text()
    assert "REVOKE ALL ON DATABASE" in script
    for cls in SETTINGS:
        name = cls.service_name
        assert re.search(rf"create {name}\s+\"\${{{name.upper()}_DB_PASSWORD:\?}}\"", script)
        assert f"{name.upper()}_DB_PASSWORD" in pg["environment"]


def test_secrets_have_no_defaults_in_compose(compose: dict[str, Any]) -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    for secret in re.findall(r"\$\{(\w*(?:PASSWORD|API_KEYS))([^}]*)\}", text):
        name, rest = secret
        assert not rest.startswith(":-"), f"{name} has a default"
    assert compose["services"]["ledger"]["environment"]["ARREARS_ENV"] == "${ARREARS_ENV:-prod}"


def test_image_is_multi_stage_and_runs_as_a_non_root_user() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)", dockerfile, re.MULTILINE)
    assert len(stages) >= 2
    assert all(stage.startswith("python:3.11") for stage in stages)
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.MULTILINE)
    assert users
    assert users[-1] not in {"root", "0"}
    for path in re.findall(r"^COPY\s+(?:--\S+\s+)*(\S+)", dockerfile, re.MULTILINE):
        if not path.startswith("/"):
            assert (ROOT / path).exists(), f"Dockerfile copies missing {path}"
