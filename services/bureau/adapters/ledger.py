"""The ledger's own view of accounts, asked over its public HTTP API for reconciliation."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import httpx
from pydantic import SecretStr


class Ledger:
    def __init__(self, url: str | None, api_key: SecretStr | None) -> None:
        self._url = url.rstrip("/") if url else None
        self._key = api_key

    @property
    def configured(self) -> bool:
        return self._url is not None

    async def standings(
        self, http: httpx.AsyncClient, account_ids: Sequence[str], as_of: datetime | None = None
    ) -> dict[str, dict[str, Any]]:
        """Where these accounts stand, by account id (unknown ones are absent), as the ledger's
        move to ``as_of`` left them (it answers once it has applied it). A ledger that cannot
        be asked, or has not caught up, raises: the cycle stops and resumes rather than
        reporting what could not be checked."""
        body: dict[str, Any] = {"account_ids": list(account_ids)}
        if as_of is not None:
            body["as_of"] = as_of.isoformat()
        response = await http.post(
            f"{self._url}/v1/accounts/standing",
            json=body,
            headers={"Authorization": f"Bearer {self._key.get_secret_value()}"}
            if self._key
            else {},
            timeout=60,
        )
        response.raise_for_status()
        return {item["account_id"]: item for item in response.json()}
