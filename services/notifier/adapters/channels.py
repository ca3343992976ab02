"""Channel adapters: one interface, one HTTP adapter per channel kind. Each shapes the request
its kind of partner expects (an SMS gateway wants a number and a short text, a print-and-mail
house a postal address and a letter, a dialer a number and an agent script, a field agency an
address and visit instructions); all send with ``Idempotency-Key: <contact_id>`` so a retried
or redelivered send is never sent twice, and map the partner's answer to one verdict."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Literal

import aiohttp
import httpx

from services.notifier.domain.templates import Rendered
from services.notifier.settings import Partner

Verdict = Literal["sent", "retry", "failed"]


@dataclass(frozen=True)
class Message:
    contact_id: str
    address: str
    rendered: Rendered
    not_after: datetime
    # for a call or a visit: the case a collector works it with (account, standing, offer)
    case: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Answer:
    verdict: Verdict
    detail: str = ""
    message_id: str | None = None
    transient: bool = False  # a failure the circuit breaker should count


class HttpAdapter:
    """The common HTTP exchange; subclasses say where to post and what to put in the body."""

    channel: ClassVar[str]

    def payload(self, message: Message) -> dict[str, Any]:
        raise NotImplementedError

    async def send(self, http: httpx.AsyncClient, partner: Partner, message: Message) -> Answer:
        try:
            response = await http.post(
                f"{str(partner.base_url).rstrip('/')}/v1/messages/{self.channel}",
                json={"contact_id": message.contact_id, "channel": self.channel}
                | self.payload(message)
                | {"locale": message.rendered.locale, "not_after": message.not_after.isoformat()},
                headers={
                    "Idempotency-Key": message.contact_id,
                    "Authorization": f"Bearer {partner.api_key.get_secret_value()}",
                },
                timeout=partner.timeout_seconds,
            )
        except (httpx.HTTPError, aiohttp.ClientError, TimeoutError) as exc:
            # The client runs over aiohttp, which may raise its own errors unmapped.
            return Answer("retry", f"partner unreachable ({type(exc).__name__})", transient=True)
        if response.status_code >= 500 or response.status_code == 429:
            return Answer("retry", f"partner answered {response.status_code}", transient=True)
        if response.status_code >= 400:
            return Answer("failed", f"partner refused ({response.status_code})")
        try:
            message_id = str(response.json().get("message_id") or "") or None
        except ValueError:
            message_id = None
        return Answer("sent", "", message_id)


class Sms(HttpAdapter):
    channel = "sms"

    def payload(self, message: Message) -> dict[str, Any]:
        return {"to": message.address, "body": message.rendered.body}


class Email(HttpAdapter):
    channel = "email"

    def payload(self, message: Message) -> dict[str, Any]:
        return {
            "to": message.address,
            "subject": message.rendered.subject or "",
            "body": message.rendered.body,
        }


class Voice(HttpAdapter):
    """A dialer or agent desk: the number to call and the script; dispositions come back by
    webhook."""

    channel = "voice"

    def payload(self, message: Message) -> dict[str, Any]:
        return {"to": message.address, "script": message.rendered.body, "case": message.case}


class Letter(HttpAdapter):
    channel = "letter"

    def payload(self, message: Message) -> dict[str, Any]:
        return {"postal_address": message.address, "letter": message.rendered.body}


class FieldVisit(HttpAdapter):
    channel = "field_visit"

    def payload(self, message: Message) -> dict[str, Any]:
        return {
            "postal_address": message.address,
            "instructions": message.rendered.body,
            "case": message.case,
        }


ADAPTERS: dict[str, HttpAdapter] = {
    adapter.channel: adapter for adapter in (Sms(), Email(), Voice(), Letter(), FieldVisit())
}
