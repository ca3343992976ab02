from __future__ import annotations

from typing import ClassVar, Self

from pydantic import Field, HttpUrl, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from shared.settings import SAFE_FOR_DEFAULTS, ServiceSettings

# what the notifier's dev configuration uses for its desk partner (services/notifier/settings)
DEV_DESK_KEY = "dev-desk-partner-api-key"
DEV_DESK_SECRET = "dev-desk-webhook-secret"  # noqa: S105 - refused outside dev/test


class DeskSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="DESK_", extra="ignore", frozen=True)

    service_name: ClassVar[str] = "desk"
    default_port: ClassVar[int] = 8005

    # The notifier: where the desk's outcome webhooks go (as partner ``partner_name``), and the
    # contact records it shows; the ledger and the scheduler for the account and its
    # compliance state (read-only, with ``read_api_key``).
    notifier_url: HttpUrl = HttpUrl("http://127.0.0.1:8003")
    ledger_url: HttpUrl = HttpUrl("http://127.0.0.1:8001")
    scheduler_url: HttpUrl = HttpUrl("http://127.0.0.1:8002")
    read_api_key: SecretStr | None = None
    partner_name: str = "desk"
    # what the notifier presents when it sends work (Bearer), and what signs the webhooks back
    partner_api_key: SecretStr = SecretStr(DEV_DESK_KEY)
    webhook_secret: SecretStr = SecretStr(DEV_DESK_SECRET)
    # a taken item is the collector's for this long (business time), then goes back
    lock_minutes: int = Field(20, ge=1, le=24 * 60)
    session_hours: float = Field(10.0, gt=0, le=24)
    login_max_failures: int = Field(5, ge=1, le=100)
    login_window_minutes: int = Field(15, ge=1, le=24 * 60)
    # cookies marked Secure (behind TLS); off only for plain-HTTP development on loopback
    secure_cookies: bool = False
    webhook_concurrency: int = Field(8, ge=1, le=128)

    @model_validator(mode="after")
    def _refuse_dev_credentials(self) -> Self:
        if self.env not in SAFE_FOR_DEFAULTS:
            if self.partner_api_key.get_secret_value() == DEV_DESK_KEY:
                raise ValueError(f"DESK_PARTNER_API_KEY must be set when ARREARS_ENV={self.env}")
            if self.webhook_secret.get_secret_value() == DEV_DESK_SECRET:
                raise ValueError(f"DESK_WEBHOOK_SECRET must be set when ARREARS_ENV={self.env}")
            if not self.secure_cookies:
                raise ValueError(f"DESK_SECURE_COOKIES must be true when ARREARS_ENV={self.env}")
        return self
