from __future__ import annotations

from typing import Annotated, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from shared.settings import SAFE_FOR_DEFAULTS, ServiceSettings

Channel = str
DEV_PARTNER_SECRET = "dev-partner-webhook-secret"  # noqa: S105 - refused outside dev/test
DEV_PARTNER_KEY = "dev-partner-api-key"
DEV_SELF_SERVICE_SECRET = "dev-self-service-secret"  # noqa: S105 - refused outside dev/test


class Partner(BaseModel):
    """A partner gateway: where sends go, how we authenticate to it, how it signs its webhooks."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9\-]{0,31}$")]
    channels: Annotated[list[Channel], Field(min_length=1)]
    countries: list[str] = []  # empty: every country
    base_url: HttpUrl
    api_key: SecretStr
    webhook_secrets: Annotated[list[SecretStr], Field(min_length=1, max_length=2)]
    timeout_seconds: float = Field(5.0, gt=0, le=60)
    rate_limit_per_second: float = Field(200.0, gt=0)

    def serves(self, channel: str, country: str | None) -> bool:
        return channel in self.channels and (not self.countries or country in self.countries)


def dev_partner(base_url: str = "http://127.0.0.1:8090") -> Partner:
    return Partner(
        name="standin",
        channels=["sms", "email", "voice", "letter", "field_visit"],
        base_url=HttpUrl(base_url),
        api_key=SecretStr(DEV_PARTNER_KEY),
        webhook_secrets=[SecretStr(DEV_PARTNER_SECRET)],
    )


class NotifierSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="NOTIFIER_", extra="ignore", frozen=True)

    service_name: ClassVar[str] = "notifier"
    default_port: ClassVar[int] = 8003

    # JSON list of partners (NOTIFIER_PARTNERS); in dev, the stand-in on 127.0.0.1:8090.
    partners: list[Partner] = Field(default_factory=list)
    creditor_name: str = "Arrears Bank"
    max_webhook_bytes: int = Field(64 * 1024, ge=1024, le=10 * 1024 * 1024)
    send_concurrency: int = Field(32, ge=1, le=512)
    send_poll_seconds: float = Field(0.2, gt=0, le=10)
    retry_max_seconds: float = Field(30.0, gt=0, le=3600)  # back-off cap between attempts
    # The self-service page: the key its links and sessions are signed with, and the address
    # customers reach this service at (the links in messages start with it).
    self_service_secret: SecretStr = SecretStr(DEV_SELF_SERVICE_SECRET)
    public_url: HttpUrl = HttpUrl("http://127.0.0.1:8003")

    @model_validator(mode="after")
    def _partners_and_their_secrets(self) -> Self:
        if not self.partners and self.env in SAFE_FOR_DEFAULTS:
            object.__setattr__(self, "partners", [dev_partner()])
        if self.env not in SAFE_FOR_DEFAULTS:
            if self.self_service_secret.get_secret_value() == DEV_SELF_SERVICE_SECRET:
                raise ValueError(
                    f"NOTIFIER_SELF_SERVICE_SECRET must be set when ARREARS_ENV={self.env}"
                )
            if not self.partners:
                raise ValueError(f"NOTIFIER_PARTNERS must be set when ARREARS_ENV={self.env}")
            for partner in self.partners:
                secrets = [s.get_secret_value() for s in partner.webhook_secrets]
                if (
                    DEV_PARTNER_SECRET in secrets
                    or partner.api_key.get_secret_value() == DEV_PARTNER_KEY
                ):
                    raise ValueError(
                        f"partner {partner.name}: the development credentials are refused when "
                        f"ARREARS_ENV={self.env}"
                    )
        return self
