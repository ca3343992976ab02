from __future__ import annotations

from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class LedgerSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="LEDGER_", extra="ignore", frozen=True)

    service_name: ClassVar[str] = "ledger"
    default_port: ClassVar[int] = 8001

    # Upstream events arrive in bulk (a core-banking day's payments) and each fetch costs a
    # dozen statements whatever its size: 2,000 a fetch ingested 1.5 times as fast as 500
    # (bench.ledger). A fetch that fails is retried one record at a time, as with any size.
    consumer_batch_size: int = Field(2000, ge=1, le=10_000)
