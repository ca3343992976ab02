from __future__ import annotations

from typing import Annotated, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from shared.settings import SAFE_FOR_DEFAULTS, ServiceSettings

Channel = str
DEV_PARTNER_SECRET = "dev-partner-webhook-secret"  # noqa: S105 - refused outside dev/test
DEV_PARTNER_KEY = "dev-partner-api-key"
DEV_SELF_SERVICE_SECRET = "dev-self-service-secret"  # noqa: S105 - refused outside dev/test
# the in-house collector desk (services/desk) is a partner by this name: its hardship reports
# say so (source "desk")
DESK_PARTNER = "desk"
DEV_DESK_KEY = "dev-desk-partner-api-key"
DEV_DESK_SECRET = "dev-desk-webhook-secret"  # noqa: S105 - refused outside dev/test


class Partner(BaseModel):
    """A partner gateway: where sends go, how we authenticate to it, how it signs its webhooks."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9\-]{0,31}$")]
    channels: Annotated[list[Channel], Field(min_length=1)]
    countries: list[str] = []  # empty: every country
    # the strategy treatments (segments) it takes; empty: every one. The first partner that
    # serves a contact gets it, so an in-house desk listed first takes its segment.
    treatments: list[str] = []
    base_url: HttpUrl
    api_key: SecretStr
    webhook_secrets: Annotated[list[SecretStr], Field(min_length=1, max_length=2)]
    timeout_seconds: float = Field(5.0, gt=0, le=60)
    rate_limit_per_second: float = Field(200.0, gt=0)

    def serves(self, channel: str, country: str | None, treatment: str | None = None) -> bool:
        return (
            channel in self.channels
            and (not self.countries or country in self.countries)
            and (not self.treatments or treatment in self.treatments)
        )


def dev_partner(base_url: str = "http://127.0.0.1:8090") -> Partner:
    return Partner(
        name="standin",
        channels=["sms", "email", "voice", "letter", "field_visit"],
        base_url=HttpUrl(base_url),
        api_key=SecretStr(DEV_PARTNER_KEY),
        webhook_secrets=[SecretStr(DEV_PARTNER_SECRET)],
    )


def dev_desk(
    base_url: str = "http://127.0.0.1:8005",
    countries: list[str] | None = None,
    treatments: list[str] | None = None,
) -> Partner:
    """The desk as the notifier's partner for calls and visits, in dev and test."""
    return Partner(
        name=DESK_PARTNER,
        channels=["voice", "field_visit"],
        countries=countries or [],
        treatments=treatments or [],
        base_url=HttpUrl(base_url),
        api_key=SecretStr(DEV_DESK_KEY),
        webhook_secrets=[SecretStr(DEV_DESK_SECRET)],
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
                    or DEV_DESK_SECRET in secrets
                    or partner.api_key.get_secret_value() in (DEV_PARTNER_KEY, DEV_DESK_KEY)
                ):
                    raise ValueError(
                        f"partner {partner.name}: the development credentials are refused when "
                        f"ARREARS_ENV={self.env}"
                    )
        return self
