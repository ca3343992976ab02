"""The scheduler's HTTP API: the decision audit, strategy versions and dry runs. Routes only
translate; the service layer and ``strategies`` do the work."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, Field, ValidationError

from services.scheduler import strategies
from services.scheduler.domain import compliance, scoring
from services.scheduler.domain.compliance import CHANNELS, Channel, Pack
from services.scheduler.domain.strategy import BUCKETS, Strategy
from services.scheduler.models import versions as model_versions
from services.scheduler.repository import facts, timers
from shared.auth import require
from shared.clock import Clock
from shared.http import problem, validation_problem
from shared.service import Uow

READ = [Depends(require("scheduler:read"))]
# a version number as the database stores it (integer): anything larger cannot exist
VersionNo = Annotated[int, Path(ge=1, le=2**31 - 1)]
WRITE = [Depends(require("strategies:write"))]


class Decision(BaseModel):
    id: int
    at: datetime
    kind: str
    contact_id: str | None
    reasons: list[str]
    inputs: dict[str, Any]


class DecisionCount(BaseModel):
    day: date = Field(description="the decision's day (UTC)")
    kind: str
    reason: str | None = Field(description="one rule id (a decision with several counts once each)")
    variant: str | None
    count: int


class StrategyVersion(BaseModel):
    strategy_id: str
    version: int
    status: Literal["draft", "published", "retired"]
    checksum: str
    created_at: datetime
    published_at: datetime | None
    retired_at: datetime | None


class Stored(BaseModel):
    strategy_id: str
    version: int
    result: Literal["created", "unchanged"]


class Valid(BaseModel):
    valid: bool
    strategy_id: str
    version: int


class ModelVersion(BaseModel):
    version: int
    kind: Literal["hand-written", "fitted"]
    status: Literal["draft", "published", "retired"]
    checksum: str
    created_at: datetime
    published_at: datetime | None
    retired_at: datetime | None
    training: dict[str, Any] | None = Field(description="its training window, when fitted")
    held_out: dict[str, Any] | None = Field(description="its metrics on held-out decisions")


class StoredModel(BaseModel):
    version: int
    result: Literal["created", "unchanged"]


class DryRunRequest(BaseModel):
    account_id: str = Field(min_length=1, max_length=128)
    bucket: Literal[BUCKETS]  # type: ignore[valid-type]
    days_past_due: int = Field(ge=0, le=10_000)
    overdue: Decimal = Field(ge=0, max_digits=19, decimal_places=4)
    country: str | None = Field(None, pattern=r"^[A-Z]{2}$")
    timezone: str | None = Field(None, max_length=64)
    credit_score: int | None = Field(None, ge=0, le=1000)
    channels: list[Literal[CHANNELS]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: list(CHANNELS)
    )
    product: str | None = Field(None, max_length=64)
    version: int | None = Field(None, ge=1, description="default: the published version")
    at: AwareDatetime | None = Field(None, description="default: the service clock's now")


class ComplianceState(BaseModel):
    account_id: str
    pack: str
    channel: str
    allowed_now: bool
    window_closes_at: datetime | None
    next_allowed_at: datetime | None
    blocked_by: list[str]
    lines: list[dict[str, str]]
    at: datetime


def router(
    clock: Clock, packs: Mapping[str, Pack], model: scoring.Model, default_country: str
) -> APIRouter:
    api = APIRouter(prefix="/v1", tags=["scheduler"])

    @api.get(
        "/accounts/{account_id}/decisions",
        response_model=list[Decision],
        summary="Every decision about an account, oldest first, with its reasons and inputs",
        dependencies=READ,
    )
    async def decisions(
        account_id: str,
        uow: Uow,
        after: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
        limit: Annotated[int, Query(ge=1, le=5000)] = 500,
    ) -> Any:
        return await timers.decisions_of(uow.session, account_id, after, limit)

    @api.get(
        "/reports/decisions",
        response_model=list[DecisionCount],
        summary="Decisions counted by day, kind (fired, deferred, suppressed...), rule and variant",
        dependencies=READ,
    )
    async def decision_counts(
        uow: Uow, since: date | None = None, until: date | None = None
    ) -> Any:
        return await timers.decision_counts(uow.session, since, until)

    @api.get(
        "/strategies",
        response_model=list[StrategyVersion],
        summary="Every stored strategy version and its status",
        dependencies=READ,
    )
    async def list_versions(uow: Uow) -> Any:
        return await strategies.versions(uow)

    @api.get(
        "/strategies/{strategy_id}/versions/{version}",
        summary="One strategy version's content",
        responses={404: {"description": "No such version"}},
        dependencies=READ,
    )
    async def get_version(strategy_id: str, version: VersionNo, uow: Uow) -> Any:
        found = await strategies.body(uow, strategy_id, version)
        if found is None:
            return problem(404, "Not Found", "no such strategy version")
        return found.model_dump(mode="json")

    @api.post(
        "/strategies/validate",
        response_model=Valid,
        summary="Validate a strategy document without storing it",
        responses={422: {"description": "Invalid; problem+json lists each error's exact path"}},
        dependencies=WRITE,
    )
    async def validate(request: Request, document: Annotated[dict[str, Any], Body()]) -> Any:
        parsed = _parse(request, document)
        if isinstance(parsed, JSONResponse):
            return parsed
        return Valid(valid=True, strategy_id=parsed.id, version=parsed.version)

    @api.post(
        "/strategies",
        response_model=Stored,
        status_code=201,
        summary="Store a new strategy version as a draft (publish it separately)",
        responses={
            409: {"description": "That version exists with other content"},
            422: {"description": "Invalid; problem+json lists each error's exact path"},
        },
        dependencies=WRITE,
    )
    async def create(
        request: Request, uow: Uow, document: Annotated[dict[str, Any], Body()]
    ) -> Any:
        parsed = _parse(request, document)
        if isinstance(parsed, JSONResponse):
            return parsed
        try:
            result = await strategies.store(uow, parsed, clock.now())
        except strategies.StrategyConflict as exc:
            return problem(409, "Conflict", str(exc))
        await uow.commit()
        return Stored(strategy_id=parsed.id, version=parsed.version, result=result)

    @api.post(
        "/strategies/{strategy_id}/versions/{version}/publish",
        response_model=list[StrategyVersion],
        summary="Publish a version; the one published before is retired",
        responses={
            404: {"description": "No such version"},
            409: {"description": "A variant names a model version that is not published"},
        },
        dependencies=WRITE,
    )
    async def publish(strategy_id: str, version: VersionNo, uow: Uow) -> Any:
        try:
            await strategies.publish(uow, strategy_id, version, clock.now())
        except KeyError:
            return problem(404, "Not Found", "no such strategy version")
        except strategies.StrategyConflict as exc:
            return problem(409, "Conflict", str(exc))
        await uow.commit()
        return [v for v in await strategies.versions(uow) if v["strategy_id"] == strategy_id]

    @api.post(
        "/strategies/{strategy_id}/versions/{version}/retire",
        response_model=list[StrategyVersion],
        summary="Retire a version: no new treatment starts on it",
        responses={404: {"description": "No such version"}},
        dependencies=WRITE,
    )
    async def retire(strategy_id: str, version: VersionNo, uow: Uow) -> Any:
        try:
            await strategies.retire(uow, strategy_id, version, clock.now())
        except KeyError:
            return problem(404, "Not Found", "no such strategy version")
        await uow.commit()
        return [v for v in await strategies.versions(uow) if v["strategy_id"] == strategy_id]

    @api.post(
        "/strategies/{strategy_id}/dry-run",
        summary="What the strategy would do for an account state, without side effects",
        responses={404: {"description": "No such strategy or version"}},
        dependencies=READ,
    )
    async def dry_run(strategy_id: str, uow: Uow, body: DryRunRequest) -> Any:
        version = body.version or await strategies.published_version(uow, strategy_id)
        found = None if version is None else await strategies.body(uow, strategy_id, version)
        if found is None:
            return problem(404, "Not Found", "no such strategy, or none of it is published")
        account = strategies.DryRunAccount(
            account_id=body.account_id,
            bucket=body.bucket,
            days_past_due=body.days_past_due,
            overdue=body.overdue,
            country=body.country,
            timezone=body.timezone,
            credit_score=body.credit_score,
            channels=body.channels,
            product=body.product,
        )
        models = await model_versions.published(uow)
        result = strategies.dry_run(
            found, packs, model, account, body.at or clock.now(), default_country, models
        )
        return JSONResponse(_jsonable(result))

    @api.get(
        "/models",
        response_model=list[ModelVersion],
        summary="Every stored propensity model version and its status",
        dependencies=READ,
    )
    async def list_models(uow: Uow) -> Any:
        return await model_versions.versions(uow)

    @api.get(
        "/models/{version}",
        summary="One model version's content: weights, bands, training window, metrics",
        responses={404: {"description": "No such version"}},
        dependencies=READ,
    )
    async def get_model(version: VersionNo, uow: Uow) -> Any:
        found = await model_versions.body(uow, version)
        if found is None:
            return problem(404, "Not Found", "no such model version")
        return found.model_dump(mode="json")

    @api.post(
        "/models",
        response_model=StoredModel,
        status_code=201,
        summary="Store a model version as a draft (publish it separately)",
        responses={
            409: {"description": "That version exists with other content"},
            422: {"description": "Invalid (a feature unknown, or one listed without a weight)"},
        },
        dependencies=WRITE,
    )
    async def create_model(
        request: Request, uow: Uow, document: Annotated[dict[str, Any], Body()]
    ) -> Any:
        try:
            parsed = scoring.Model.model_validate(document)
        except ValidationError as exc:
            errors = exc.errors(include_input=False, include_url=False)
            return validation_problem(request, errors, ("body",), "invalid model")
        try:
            result = await model_versions.store(uow, parsed, clock.now())
        except model_versions.ModelConflict as exc:
            return problem(409, "Conflict", str(exc))
        await uow.commit()
        return StoredModel(version=parsed.version, result=result)

    @api.post(
        "/models/{version}/publish",
        response_model=list[ModelVersion],
        summary="Publish a model version: a strategy variant may then score with it",
        responses={404: {"description": "No such version"}},
        dependencies=WRITE,
    )
    async def publish_model(version: VersionNo, uow: Uow) -> Any:
        try:
            await model_versions.publish(uow, version, clock.now())
        except KeyError:
            return problem(404, "Not Found", "no such model version")
        await uow.commit()
        return await model_versions.versions(uow)

    @api.post(
        "/models/{version}/retire",
        response_model=list[ModelVersion],
        summary="Retire a model version no published strategy scores with",
        responses={
            404: {"description": "No such version"},
            409: {"description": "A published strategy's variant, or the default, uses it"},
        },
        dependencies=WRITE,
    )
    async def retire_model(version: VersionNo, uow: Uow) -> Any:
        try:
            await model_versions.retire(uow, version, model.version, clock.now())
        except KeyError:
            return problem(404, "Not Found", "no such model version")
        except model_versions.ModelConflict as exc:
            return problem(409, "Conflict", str(exc))
        await uow.commit()
        return await model_versions.versions(uow)

    lookback = timedelta(days=compliance.history_days(packs.values()))

    @api.get(
        "/accounts/{account_id}/compliance",
        response_model=ComplianceState,
        summary="What the pack still allows on a channel now, and why (for a collector)",
        responses={404: {"description": "No such account"}},
        dependencies=READ,
    )
    async def compliance_state(
        account_id: str,
        uow: Uow,
        channel: Annotated[Channel, Query()] = "voice",
        contact_id: Annotated[
            str | None,
            Query(
                max_length=128,
                description="the contact being made now, left out of the "
                "history it is judged against",
            ),
        ] = None,
    ) -> Any:
        party = (await facts.parties(uow.session, [account_id])).get(account_id)
        if party is None:
            return problem(404, "Not Found", "no such account")
        now = clock.now()
        pack = packs.get(party.country or "", packs[default_country])
        history = await facts.history(
            uow.session, [party.customer_id], sorted(set(party.addresses.values())), now - lookback
        )
        history = [c for c in history if c.contact_id is None or c.contact_id != contact_id]
        found = compliance.state(pack, party, history, channel, now)
        return ComplianceState(
            account_id=account_id,
            pack=f"{pack.country}@{pack.version}",
            channel=found.channel,
            allowed_now=found.allowed_now,
            window_closes_at=found.window_closes_at,
            next_allowed_at=found.next_allowed_at,
            blocked_by=list(found.blocked_by),
            lines=[{"rule": line.rule, "text": line.text} for line in found.lines],
            at=now,
        )

    @api.get("/packs", summary="The compliance packs and their rule ids", dependencies=READ)
    async def list_packs() -> Any:
        return {country: pack.model_dump(mode="json") for country, pack in packs.items()}

    return api


def _parse(request: Request, document: dict[str, Any]) -> Strategy | JSONResponse:
    try:
        return Strategy.model_validate(document)
    except ValidationError as exc:
        errors = exc.errors(include_input=False, include_url=False)
        return validation_problem(request, errors, ("body",), "invalid strategy")


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value
