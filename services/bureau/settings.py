from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class BureauSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="BUREAU_", extra="ignore", frozen=True)

    service_name: ClassVar[str] = "bureau"
    default_port: ClassVar[int] = 8004

    cycle: Literal["monthly", "daily"] = "monthly"
    pre_notice_days: int = Field(14, ge=0, le=90)
    notice_wait_days: int = Field(14, ge=0, le=90)
    archive_dir: Path = Path(".stack/bureau/archive")
    drop_dir: Path | None = Path(".stack/bureau/drop")  # a bureau's inbox folder, or none
    endpoint: str | None = None  # a bureau's HTTP endpoint (files POSTed there), or none
    # The ledger's API, to reconcile each record's amounts with the ledger's state at cycle
    # time (an API key with ledger:read); without it, records are checked against the ledger's
    # events as received.
    ledger_url: str | None = None
    ledger_api_key: SecretStr | None = None
    # How long a cycle waits for this service to hear of the standings the ledger already
    # shows (events on their way) before it decides, blocking what still disagrees.
    reconcile_wait_seconds: float = Field(30.0, ge=0, le=600)
    reporter_id: str = "ARREARS0001"
    reporter_name: str = "ARREARS BANK"
    reporter_address: str = "1 COLLECTION WAY, NEW YORK, NY 10001"
