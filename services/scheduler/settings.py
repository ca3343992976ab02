from __future__ import annotations

from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class SchedulerSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="SCHEDULER_", extra="ignore", frozen=True)

    service_name: ClassVar[str] = "scheduler"
    default_port: ClassVar[int] = 8002

    # The pack for a customer whose country is unknown or has no pack (the decision says so).
    default_country: str = Field("CN", pattern=r"^[A-Z]{2}$")
