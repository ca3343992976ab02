from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.bureau.settings import BureauSettings
from services.ledger.settings import LedgerSettings
from services.notifier.settings import NotifierSettings
from services.scheduler.settings import SchedulerSettings
from shared.auth import digest

ALL = [LedgerSettings, SchedulerSettings, NotifierSettings, BureauSettings]


REAL_KEYS = f'[{{"id": "ops", "sha256": "{digest("a-real-secret")}", "scopes": ["*"]}}]'


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ARREARS_ENV", "ARREARS_CLOCK", "KAFKA_BOOTSTRAP_SERVERS", "LEDGER_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ARREARS_API_KEYS", REAL_KEYS)


@pytest.mark.parametrize("cls", ALL)
def test_each_service_reads_its_own_prefixed_settings(cls, monkeypatch) -> None:
    prefix = cls.service_name.upper()
    monkeypatch.setenv(f"{prefix}_HTTP_PORT", "9911")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "broker:9092")
    settings = cls()
    assert settings.http_port == 9911
    assert settings.kafka_bootstrap_servers == "broker:9092"
    assert f"arrears_{cls.service_name}" in settings.database_url
    assert settings.consumer_group == f"arrears-{cls.service_name}"


def test_services_listen_on_distinct_default_ports() -> None:
    assert len({cls().http_port for cls in ALL}) == 4


@pytest.mark.parametrize("env", ["staging", "prod"])
def test_dev_database_password_is_refused_outside_dev(env: str, monkeypatch) -> None:
    monkeypatch.setenv("ARREARS_ENV", env)
    with pytest.raises(ValidationError, match="development default is refused"):
        LedgerSettings()


def test_a_real_password_is_accepted_in_production(monkeypatch) -> None:
    monkeypatch.setenv("ARREARS_ENV", "prod")
    monkeypatch.setenv("LEDGER_DATABASE_URL", "postgresql+asyncpg://u:s3cret-value@db/ledger")
    monkeypatch.setenv("ARREARS_FINGERPRINT_KEY", "a-real-fingerprint-key")
    assert LedgerSettings().env == "prod"


def test_dev_fingerprint_key_is_refused_in_production(monkeypatch) -> None:
    monkeypatch.setenv("ARREARS_ENV", "prod")
    monkeypatch.setenv("LEDGER_DATABASE_URL", "postgresql+asyncpg://u:s3cret-value@db/ledger")
    with pytest.raises(ValidationError, match="ARREARS_FINGERPRINT_KEY must be set"):
        LedgerSettings()


def test_controlled_clock_is_chosen_by_the_platform_wide_variable(monkeypatch) -> None:
    monkeypatch.setenv("ARREARS_CLOCK", "controlled")
    assert LedgerSettings().clock == "controlled"
    monkeypatch.setenv("ARREARS_CLOCK", "sundial")
    with pytest.raises(ValidationError):
        LedgerSettings()
