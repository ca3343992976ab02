"""An account's context for the agent desk, read from the other services' public APIs: the
ledger's account and history, the notifier's contact records, and the scheduler's compliance
state. Each part is optional: a service that does not answer leaves a gap and a note, never
an error page."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class AccountContext:
    account: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    contacts: list[dict[str, Any]] = field(default_factory=list)
    compliance: dict[str, Any] | None = None
    gaps: list[str] = field(default_factory=list)


class Context:
    def __init__(self, ledger: str, notifier: str, scheduler: str, api_key: str | None) -> None:
        self._urls = {"ledger": ledger, "notifier": notifier, "scheduler": scheduler}
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http: httpx.AsyncClient | None = None

    async def start(self) -> None:
        self._http = httpx.AsyncClient(headers=self._headers, timeout=3.0)

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def _get(self, service: str, path: str, ctx: AccountContext) -> Any:
        if self._http is None:
            await self.start()
        assert self._http is not None
        try:
            response = await self._http.get(self._urls[service].rstrip("/") + path)
        except httpx.HTTPError as exc:
            ctx.gaps.append(f"{service} unavailable ({type(exc).__name__})")
            return None
        if response.status_code != 200:
            ctx.gaps.append(f"{service} answered {response.status_code}")
            return None
        return response.json()

    async def of(self, account_id: str, channel: str, contact_id: str) -> AccountContext:
        """The account's context for the contact ``contact_id`` (judged without itself)."""
        ctx = AccountContext()
        account, history, contacts, compliance = await asyncio.gather(
            self._get("ledger", f"/v1/accounts/{account_id}", ctx),
            self._get("ledger", f"/v1/accounts/{account_id}/history", ctx),
            self._get("notifier", f"/v1/accounts/{account_id}/contacts", ctx),
            self._get(
                "scheduler",
                f"/v1/accounts/{account_id}/compliance?channel={channel}&contact_id={contact_id}",
                ctx,
            ),
        )
        ctx.account = account
        ctx.history = list(history or [])[-30:]
        ctx.contacts = list(contacts or [])[-30:]
        ctx.compliance = compliance
        return ctx
