from __future__ import annotations

from typing import ClassVar

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class BureauSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="BUREAU_", extra="ignore", frozen=True)

    service_name: ClassVar[str] = "bureau"
    default_port: ClassVar[int] = 8004
