"""The notifier's HTTP API: partners' webhooks (signed, size-capped, rate-limited, replay-safe)
and the contact records. Routes only translate; the service layer does the work."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, Field, ValidationError

from services.notifier.domain.offers import OfferRefused, Terms
from services.notifier.domain.status import STATUSES
from services.notifier.handlers import InboundReply, Notifier, StatusReport
from shared import signing
from shared.auth import require
from shared.db import UnitOfWork
from shared.events import HardshipReason, Id, OfferKind, Text
from shared.http import count_rejected, problem, validation_problem
from shared.service import Uow


class StatusBody(BaseModel):
    """A partner's report on one contact: delivery status or call disposition."""

    event_id: Id
    contact_id: Id
    status: Literal[tuple(sorted(STATUSES))]  # type: ignore[valid-type]
    occurred_at: AwareDatetime | None = None
    message_id: Id | None = None
    promise_amount: Annotated[Decimal, Field(gt=0, max_digits=19, decimal_places=4)] | None = None
    promise_date: date | None = None
    offer_id: Id | None = None
    # plan_accepted: terms the customer chose within the offer's limits (else its own terms)
    kind: OfferKind | None = None
    installments: Annotated[int, Field(ge=2, le=60)] | None = None
    extension_days: Annotated[int, Field(ge=1, le=180)] | None = None
    settlement_percent: Annotated[Decimal, Field(gt=0, le=100)] | None = None
    # hardship: why and until when; callback: when the customer asked to be called
    hardship_reason: HardshipReason | None = None
    hardship_until: date | None = None
    callback_at: AwareDatetime | None = None

    def terms(self) -> Terms | None:
        if self.kind is None:
            return None
        return Terms(self.kind, self.installments, self.extension_days, self.settlement_percent)


class InboundBody(BaseModel):
    """A customer's reply to an SMS or email, relayed by the partner."""

    event_id: Id
    channel: Literal["sms", "email"]
    sender: Annotated[Text, Field(min_length=3, max_length=254, alias="from")]
    text: Text


class WebhookResult(BaseModel):
    status: Literal["applied", "duplicate", "orphaned"]


class RateLimiter:
    """A token bucket per partner, in this process."""

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, key: str, rate: float) -> bool:
        now = time.monotonic()
        tokens, at = self._buckets.get(key, (rate, now))
        tokens = min(rate, tokens + (now - at) * rate)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - 1, now)
        return True


def router(notifier: Notifier, max_body: int) -> APIRouter:
    api = APIRouter(prefix="/v1", tags=["notifier"])
    limiter = RateLimiter()
    responses: dict[int | str, dict[str, Any]] = {
        200: {"description": "Applied, or a replay of an event already applied (no effect)"},
        202: {"description": "Accepted and recorded as orphaned: no such contact or address"},
        401: {"description": "Missing, malformed, expired or wrong signature"},
        404: {"description": "No such partner"},
        413: {"description": "Body larger than the limit"},
        422: {
            "description": "Malformed body, or terms outside the offer's limits; problem+json "
            "names the field"
        },
        429: {"description": "Too many requests from this partner"},
    }

    async def verified(
        request: Request, partner: str, signature: str | None
    ) -> bytes | JSONResponse:
        found = notifier.partners.get(partner)
        if found is None:
            return problem(404, "Not Found", "no such partner")
        if not limiter.allow(partner, found.rate_limit_per_second):
            return problem(429, "Too Many Requests", "rate limit exceeded for this partner")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body:
            return problem(
                413, "Content Too Large", f"request body over the limit of {max_body} bytes"
            )
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body:
                return problem(
                    413, "Content Too Large", f"request body over the limit of {max_body} bytes"
                )
            chunks.append(chunk)
        body = b"".join(chunks)
        secrets = [s.get_secret_value() for s in found.webhook_secrets]
        # Wall time on purpose: the signature guards the transport, not business time.
        verdict = signing.verify(signature, body, secrets, time.time())
        if not verdict.ok:
            count_rejected(request)
            return problem(401, "Unauthorized", verdict.reason)
        return body

    def parse(request: Request, model: type[BaseModel], body: bytes) -> BaseModel | JSONResponse:
        try:
            return model.model_validate(json.loads(body))
        except ValidationError as exc:
            errors = exc.errors(include_input=False, include_url=False)
            return validation_problem(request, errors, ("body",))
        except (ValueError, InvalidOperation):
            return validation_problem(request, [{"loc": (), "msg": "not valid JSON"}], ("body",))

    async def webhook(
        request: Request,
        partner: str,
        signature: str | None,
        model: type[BaseModel],
        apply: Callable[[UnitOfWork, BaseModel], Awaitable[str]],
    ) -> Any:
        """Verify, parse, apply in one unit of work; 202 for an orphan, 200 otherwise. The unit
        of work is opened here, not taken from the dependency: nothing unverified reaches the
        database."""
        body = await verified(request, partner, signature)
        if isinstance(body, JSONResponse):
            return body
        parsed = parse(request, model, body)
        if isinstance(parsed, JSONResponse):
            return parsed
        try:
            async with request.app.state.runtime.uow() as uow:
                result = await apply(uow, parsed)
                await uow.commit()
        except OfferRefused as refused:  # rolled back: the report can be sent again, mended
            return validation_problem(
                request, [{"loc": (refused.field,), "msg": refused.reason}], ("body",)
            )
        return JSONResponse({"status": result}, status_code=202 if result == "orphaned" else 200)

    def schema(model: type[BaseModel]) -> dict[str, Any]:
        content = {"application/json": {"schema": model.model_json_schema()}}
        return {"requestBody": {"content": content}}

    @api.post(
        "/webhooks/{partner}/status",
        response_model=WebhookResult,
        responses=responses,
        summary="A partner reports a delivery status or a call disposition (signed)",
        openapi_extra=schema(StatusBody),
    )
    async def status(
        partner: str,
        request: Request,
        signature: Annotated[str | None, Header(alias=signing.HEADER)] = None,
    ) -> Any:
        async def apply(uow: UnitOfWork, parsed: BaseModel) -> str:
            assert isinstance(parsed, StatusBody)
            report = StatusReport(
                **parsed.model_dump(
                    exclude={"kind", "installments", "extension_days", "settlement_percent"}
                ),
                terms=parsed.terms(),
            )
            return await notifier.status_reported(uow, partner, report)

        return await webhook(request, partner, signature, StatusBody, apply)

    @api.post(
        "/webhooks/{partner}/inbound",
        response_model=WebhookResult,
        responses=responses,
        summary="A customer's reply relayed by a partner: STOP, disputes, offer acceptance",
        openapi_extra=schema(InboundBody),
    )
    async def inbound(
        partner: str,
        request: Request,
        signature: Annotated[str | None, Header(alias=signing.HEADER)] = None,
    ) -> Any:
        async def apply(uow: UnitOfWork, parsed: BaseModel) -> str:
            assert isinstance(parsed, InboundBody)
            reply = InboundReply(parsed.event_id, parsed.channel, parsed.sender, parsed.text)
            return await notifier.reply_received(uow, partner, reply)

        return await webhook(request, partner, signature, InboundBody, apply)

    @api.get(
        "/accounts/{account_id}/contacts",
        summary="Every contact with an account: channel, status, attempts and outcomes",
        dependencies=[Depends(require("notifier:read"))],
    )
    async def contacts(account_id: str, uow: Uow) -> Any:
        found = await notifier.contacts(uow, account_id)
        return JSONResponse(json.loads(json.dumps(found, default=str)))

    return api
