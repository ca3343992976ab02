"""The partner API the notifier sends calls and visits to: the same one any dialer or field
agency offers (``POST /v1/messages/{channel}``, Bearer key, ``Idempotency-Key``)."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, Field, ValidationError

from services.desk import security
from services.desk.handlers import Desk
from shared.http import problem, validation_problem


class Case(BaseModel):
    account_id: Annotated[str, Field(min_length=1, max_length=128)]
    customer_id: Annotated[str, Field(min_length=1, max_length=128)]
    country: str | None = None
    timezone: str | None = None
    not_before: AwareDatetime | None = None
    total_overdue: str | None = None
    currency: str | None = None
    days_past_due: int | None = None
    purpose: str | None = None
    template: str | None = None
    offer: dict[str, Any] | None = None
    full_name: Annotated[str, Field(max_length=200)] | None = None
    propensity: Annotated[Decimal, Field(ge=0, le=1)] | None = None


class Send(BaseModel):
    contact_id: Annotated[str, Field(min_length=1, max_length=128)]
    channel: Literal["voice", "field_visit"]
    to: Annotated[str, Field(max_length=64)] | None = None
    postal_address: Annotated[str, Field(max_length=500)] | None = None
    script: Annotated[str, Field(max_length=8000)] | None = None
    instructions: Annotated[str, Field(max_length=8000)] | None = None
    locale: str | None = None
    not_after: AwareDatetime
    case: Case


class Accepted(BaseModel):
    message_id: str
    status: Literal["accepted", "duplicate"]


def router(desk: Desk, api_key: str) -> APIRouter:
    api = APIRouter(prefix="/v1", tags=["partner"])

    @api.post(
        "/messages/{channel}",
        response_model=Accepted,
        summary="The notifier sends a call or a visit to the desk's queues (partner API)",
        responses={
            401: {"description": "Missing or wrong partner key"},
            404: {"description": "A channel the desk does not work"},
            422: {"description": "Malformed send; problem+json names the field"},
        },
    )
    async def send(
        channel: str,
        request: Request,
        authorization: Annotated[str | None, Header()] = None,
        idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
    ) -> Any:
        offered = (authorization or "").removeprefix("Bearer ").strip()
        if not offered or not security.same(offered, api_key):
            return problem(401, "Unauthorized", "missing or wrong partner key")
        if channel not in ("voice", "field_visit"):
            return problem(404, "Not Found", f"the desk does not work {channel}")
        try:
            body = Send.model_validate_json(await request.body())
        except ValidationError as exc:
            errors = exc.errors(include_input=False, include_url=False)
            return validation_problem(request, errors, ("body",))
        if not idempotency_key or idempotency_key != body.contact_id:
            return validation_problem(
                request,
                [{"loc": ("Idempotency-Key",), "msg": "must be the contact_id"}],
                ("header",),
            )
        async with request.app.state.runtime.uow() as uow:
            created = await desk.receive(uow, channel, body.model_dump(mode="json"))
            await uow.commit()
        return JSONResponse(
            {"message_id": body.contact_id, "status": "accepted" if created else "duplicate"}
        )

    return api
