"""The ledger's HTTP API: reads of accounts and customers, and ingest for upstream systems that
cannot write to Kafka. Routes only translate; the service layer and the read models do the work."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from services.ledger.handlers import Ledger
from services.ledger.repository import views
from shared.auth import require
from shared.consumer import ConsumerSpec, PermanentError, apply_events, inbox_name
from shared.envelope import CloudEvent, describe_errors
from shared.events import REGISTRY, Id, Instant, PaymentPosted
from shared.http import count_rejected, problem
from shared.service import Uow
from shared.topics import CORE_BANKING

MAX_BATCH = 500
MAX_STANDINGS = 10_000


class StructuredEvent(BaseModel):
    """A CloudEvent in structured JSON mode (``application/cloudevents+json``)."""

    model_config = ConfigDict(extra="ignore")
    specversion: str = Field(pattern=r"^1\.0$")
    id: str = Field(min_length=1, max_length=128)
    source: str = Field(min_length=1, max_length=256)
    type: str = Field(min_length=1, max_length=64)
    time: AwareDatetime
    subject: str | None = Field(None, max_length=128)
    datacontenttype: str = Field("application/json", pattern=r"^application/json")
    partitionkey: str | None = Field(None, max_length=128)
    data: dict[str, Any]


class InstallmentView(BaseModel):
    installment_no: int
    due_date: date
    amount: Decimal
    paid: Decimal
    outstanding: Decimal
    missed: bool


class PlanInstallmentView(BaseModel):
    installment_no: int
    due_date: date
    amount: Decimal


class PlanView(BaseModel):
    plan_id: str
    kind: str
    status: str
    agreed_at: datetime
    total: Decimal
    hardship: bool = False  # agreed under hardship
    source: str | None = None  # where it was agreed: a channel, self_service or desk
    installments: list[PlanInstallmentView]


class PromiseView(BaseModel):
    promise_id: str
    amount: Decimal
    due_date: date
    status: str


class AccountView(BaseModel):
    account_id: str
    customer_id: str
    product: str
    currency: str
    principal: Decimal
    opened_on: date
    outstanding: Decimal
    paid: Decimal
    overdue: Decimal
    days_past_due: int
    bucket: str
    in_arrears: bool
    first_delinquency: date | None = Field(
        None,
        description="The oldest unpaid due date when the account fell behind; kept while it "
        "stays behind and when it is paid off behind, cleared once it is current again",
    )
    evaluated_at: datetime | None
    flags: list[str]
    installments: list[InstallmentView]
    plan: PlanView | None = None
    promise: PromiseView | None = None


class AccountSummary(BaseModel):
    account_id: str
    product: str
    currency: str
    days_past_due: int
    bucket: str
    overdue: Decimal


class HistoryEntry(BaseModel):
    at: datetime
    kind: str
    ref: str
    amount: Decimal | None = None
    from_bucket: str | None = None
    to_bucket: str | None = None
    dpd: int | None = None
    detail: str | None = None


class StandingRequest(BaseModel):
    account_ids: list[Id] = Field(min_length=1, max_length=MAX_STANDINGS)
    as_of: Instant | None = Field(
        None,
        description="Answer once this service's clock has reached this instant and applied its "
        "move (plans and promises settled, buckets evaluated); 503 with Retry-After if it has "
        "not within 10 seconds, at once if the instant is more than a day ahead of its clock. "
        "A reporting cycle asks with its own instant.",
    )


class Standing(BaseModel):
    account_id: str
    currency: str
    overdue: Decimal
    balance: Decimal = Field(description="The whole outstanding balance, principal not yet due")
    days_past_due: int
    bucket: str
    first_delinquency: date | None = None
    plan_active: bool = Field(False, description="A repayment plan is running")


class IngestResult(BaseModel):
    id: str = Field(description="The event's id (ce_id)")
    status: Literal["applied", "duplicate"] = Field(
        description="applied: it had its effect now; duplicate: it had none (see reason)"
    )
    reason: Literal["id", "payment_id"] | None = Field(
        None,
        description="Why a duplicate had no effect: its event id was seen before (by this API "
        "or on core-banking.events), or it posts a payment_id already applied",
    )


def router(spec: ConsumerSpec, service: str, ledger: Ledger) -> APIRouter:
    api = APIRouter(prefix="/v1", tags=["ledger"])
    inbox = inbox_name(service, spec)
    not_found: dict[int | str, dict[str, Any]] = {404: {"description": "No such account"}}

    @api.get(
        "/accounts/{account_id}",
        response_model=AccountView,
        responses=not_found,
        dependencies=[Depends(require("ledger:read"))],
    )
    async def get_account(account_id: str, uow: Uow) -> Any:
        found = await views.account(uow.session, account_id, await ledger.state(uow, account_id))
        return found if found else problem(404, "Not Found", "no such account")

    @api.get(
        "/accounts/{account_id}/history",
        response_model=list[HistoryEntry],
        responses=not_found,
        dependencies=[Depends(require("ledger:read"))],
    )
    async def get_history(account_id: str, uow: Uow) -> Any:
        if await views.customer_of(uow.session, account_id) is None:
            return problem(404, "Not Found", "no such account")
        return await views.history(uow.session, account_id)

    @api.get(
        "/customers/{customer_id}/accounts",
        response_model=list[AccountSummary],
        dependencies=[Depends(require("ledger:read"))],
    )
    async def get_customer_accounts(customer_id: str, uow: Uow) -> Any:
        return await views.customer_accounts(uow.session, customer_id)

    @api.post(
        "/accounts/standing",
        response_model=list[Standing],
        summary="Where many accounts stand now (for reconciliation); unknown ids are left out",
        dependencies=[Depends(require("ledger:read"))],
    )
    async def post_standing(body: StandingRequest, uow: Uow) -> Any:
        if body.as_of is not None and not await ledger.reached(body.as_of, 10.0):
            late = problem(
                503, "Service Unavailable", "this service's clock has not applied that instant yet"
            )
            late.headers["Retry-After"] = "1"
            return late
        rows = await ledger.standings(uow, body.account_ids)
        return [
            Standing(
                account_id=r.account_id,
                currency=r.currency,
                overdue=r.overdue,
                balance=r.outstanding,
                days_past_due=r.dpd,
                bucket=r.bucket,
                first_delinquency=r.first_delinquency,
                plan_active=r.plan_active,
            )
            for r in rows
        ]

    @api.get(
        "/forecast/roll-rates",
        summary="Roll rates between buckets as a Markov chain, the buckets forecast ahead, the "
        "expected recovery, and the back-test of each past period",
        description=(
            "Periods of `step_days` end at `as_of` (default now); the matrix is estimated from "
            "every period, the forecast runs `horizon_days` ahead. `back_test` forecasts each "
            "past period from the ones before it: `error` is the share of accounts forecast "
            "in the wrong bucket, `tolerance` what sampling and estimation alone would explain. "
            "`expected_recovery` (as of now only): accounts expected back to current, and their "
            "overdue amounts by currency weighted by that chance. `actual`: once the horizon "
            "has passed, where the accounts stood then."
        ),
        dependencies=[Depends(require("ledger:read"))],
    )
    async def get_roll_rates(
        uow: Uow,
        as_of: Annotated[Instant | None, Query()] = None,
        step_days: Annotated[int, Query(ge=1, le=366)] = 30,
        periods: Annotated[int, Query(ge=1, le=36)] = 6,
        horizon_days: Annotated[int, Query(ge=1, le=366)] = 30,
    ) -> Any:
        found = await ledger.roll_rates(uow, as_of, step_days, periods, horizon_days)
        return JSONResponse(jsonable_encoder(found))

    @api.post(
        "/events",
        response_model=list[IngestResult],
        summary="Ingest a batch of core-banking CloudEvents (structured JSON)",
        description=(
            "The same handlers and the same deduplication by event id as the "
            f"`{CORE_BANKING}` consumer: an event sent both ways has one effect. The batch is "
            "all or nothing: any invalid event gives a 422 naming it and applies none. Events "
            f"applied are forwarded, unchanged, to `{CORE_BANKING}` for the other services."
        ),
        responses={422: {"description": "An event is invalid; problem+json names it"}},
        dependencies=[Depends(require("events:write"))],
    )
    async def post_events(
        request: Request,
        batch: Annotated[list[StructuredEvent], Body(min_length=1, max_length=MAX_BATCH)],
    ) -> Any:
        events: list[CloudEvent] = []
        for index, item in enumerate(batch):
            spec_for = REGISTRY.get(item.type)
            if spec_for is None or spec_for.topic != CORE_BANKING:
                count_rejected(request)
                return _invalid(index, "type", f"not a {CORE_BANKING} event type")
            try:
                data = spec_for.model.model_validate(item.data)
            except ValidationError as exc:
                count_rejected(request)
                return _invalid(index, "data", describe_errors(exc))
            key = item.partitionkey or getattr(data, "customer_id", None) or item.subject or ""
            events.append(
                CloudEvent(
                    id=item.id,
                    source=item.source,
                    type=item.type,
                    time=item.time,
                    key=key,
                    data=data,
                    subject=item.subject,
                )
            )
        refused = False
        # Its own units of work (not the dependency's): one for the batch, one to find the
        # culprit of a refused batch; a body refused as invalid never reaches the database.
        async with request.app.state.runtime.uow() as uow:
            known = await views.applied_payments(
                uow.session,
                [e.data.payment_id for e in events if isinstance(e.data, PaymentPosted)],
            )
            try:
                applied = await apply_events(uow, inbox, spec, events)
            except PermanentError:
                refused = True  # rolled back as the unit of work closes, before the search
            if not refused:
                # The other services learn of upstream events from core-banking.events:
                # forward what was applied there, unchanged (same ce_id), in the same
                # transaction. The ledger's own consumer finds those ids in its inbox and
                # skips them.
                for event, fresh in zip(events, applied, strict=True):
                    if fresh:
                        uow.publish(event)
                await uow.commit()
        if refused:
            count_rejected(request)
            index, reason = await _culprit(request, inbox, spec, events)
            return _refused(index, events[index].id, reason)
        results = []
        for event, fresh in zip(events, applied, strict=True):
            payment = event.data.payment_id if isinstance(event.data, PaymentPosted) else None
            if not fresh:
                results.append(IngestResult(id=event.id, status="duplicate", reason="id"))
            elif payment is not None and payment in known:
                results.append(IngestResult(id=event.id, status="duplicate", reason="payment_id"))
            else:
                results.append(IngestResult(id=event.id, status="applied"))
                if payment is not None:
                    known.add(payment)  # a second event for it in this batch changes nothing
        return results

    return api


async def _culprit(
    request: Request, inbox: str, spec: ConsumerSpec, events: list[CloudEvent]
) -> tuple[int, str]:
    """Which event of a refused batch a business rule refuses, and why: the batch is replayed
    one event at a time in a transaction that is rolled back (each event sees those before it,
    as in the batch)."""
    async with request.app.state.runtime.uow() as probe:
        for index, event in enumerate(events):
            try:
                await apply_events(probe, inbox, spec, [event])
            except PermanentError as exc:
                return index, str(exc)
    return len(events) - 1, "refused by a business rule"


def _refused(index: int, event_id: str, reason: str) -> JSONResponse:
    field, _, message = reason.partition(": ")
    if not message:
        field, message = "", reason
    path = f"body.{index}.data.{field}" if field else f"body.{index}.data"
    return problem(
        422,
        "Unprocessable Content",
        f"event {index} ({event_id}): {reason}",
        errors=[{"field": path, "message": message, "index": index, "id": event_id}],
    )


def _invalid(index: int, field: str, reason: str) -> JSONResponse:
    return problem(
        422,
        "Unprocessable Content",
        f"event {index}: {field}: {reason}",
        errors=[{"field": f"body.{index}.{field}", "message": reason}],
    )
