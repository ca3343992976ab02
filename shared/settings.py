"""Settings shared by every service. Each service subclasses :class:`ServiceSettings` once, with its
own env prefix (``LEDGER_``, ``SCHEDULER_``...). Platform-wide values (environment, clock mode,
Kafka address) use fixed names so one ``.env`` serves all four services.

Nothing here connects anywhere: settings are read when a service starts, not at import.
"""

from __future__ import annotations

from typing import ClassVar, Literal, Self

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

from shared.auth import ApiKeySpec, dev_key_spec

DEV_DB_PASSWORD = "arrears-dev"  # noqa: S105 - the dev default that non-dev environments refuse
DEV_FINGERPRINT_KEY = "arrears-dev-fingerprint-key"
SAFE_FOR_DEFAULTS = ("dev", "test")


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    service_name: ClassVar[str] = "service"
    default_port: ClassVar[int] = 8000

    env: Literal["dev", "test", "staging", "prod"] = Field("dev", validation_alias="ARREARS_ENV")
    clock: Literal["wall", "controlled"] = Field("wall", validation_alias="ARREARS_CLOCK")
    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092", validation_alias="KAFKA_BOOTSTRAP_SERVERS"
    )
    log_level: str = Field("INFO", validation_alias="ARREARS_LOG_LEVEL")
    api_keys: list[ApiKeySpec] = Field(default_factory=list, validation_alias="ARREARS_API_KEYS")
    # Keys the fingerprints by which services name a customer's addresses without holding them.
    fingerprint_key: str = Field(DEV_FINGERPRINT_KEY, validation_alias="ARREARS_FINGERPRINT_KEY")

    database_url: str = ""
    http_host: str = "127.0.0.1"
    http_port: int = 0
    # Several replicas of the service on one host listen on the same port (SO_REUSEPORT).
    http_reuse_port: bool = Field(False, validation_alias="ARREARS_HTTP_REUSE_PORT")
    # Which replica this process is (1..N), for its logs and its database sessions' names.
    replica: int = Field(1, ge=1, validation_alias="ARREARS_REPLICA")
    consumer_batch_size: int = Field(500, ge=1, le=10_000)
    consumer_max_retries: int = Field(5, ge=0, le=50)
    consumer_retry_backoff_seconds: float = Field(0.2, gt=0, le=60)
    relay_batch_size: int = Field(1000, ge=1, le=10_000)
    relay_poll_seconds: float = Field(0.5, gt=0, le=60)
    tick_seconds: float = Field(60.0, gt=0)
    # Every request body over this is refused with 413 before it is read (docs/integration.md).
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024)
    shutdown_grace_seconds: float = Field(20.0, gt=0)

    @model_validator(mode="after")
    def _fill_and_refuse_dev_defaults(self) -> Self:
        if not self.database_url:
            name = self.service_name
            object.__setattr__(
                self,
                "database_url",
                f"postgresql+asyncpg://arrears_{name}:{DEV_DB_PASSWORD}@127.0.0.1:5432/arrears_{name}",
            )
        if not self.http_port:
            object.__setattr__(self, "http_port", self.default_port)
        dev_key = dev_key_spec()
        if not self.api_keys and self.env in SAFE_FOR_DEFAULTS:
            object.__setattr__(self, "api_keys", [dev_key])
        if self.env not in SAFE_FOR_DEFAULTS:
            if not self.api_keys:
                raise ValueError(f"ARREARS_API_KEYS must be set when ARREARS_ENV={self.env}")
            if any(spec.sha256 == dev_key.sha256 for spec in self.api_keys):
                raise ValueError(f"the development API key is refused when ARREARS_ENV={self.env}")
            password = make_url(self.database_url).password
            if not password or password == DEV_DB_PASSWORD:
                raise ValueError(
                    f"{self.service_name}: database_url must carry a real password when "
                    f"ARREARS_ENV={self.env}; the development default is refused"
                )
            if self.fingerprint_key == DEV_FINGERPRINT_KEY:
                raise ValueError(
                    f"ARREARS_FINGERPRINT_KEY must be set when ARREARS_ENV={self.env}; "
                    "the development default is refused"
                )
        return self

    @property
    def consumer_group(self) -> str:
        return f"arrears-{self.service_name}"

    @property
    def source(self) -> str:
        return f"/arrears/{self.service_name}"
