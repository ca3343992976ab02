"""The desk's JSON API: what its pages do, for a softphone, a field agent's app or the
campaign's simulated collectors. Same sessions and CSRF as the pages (the token in
``X-CSRF-Token``); errors as problem+json naming the field."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, Field

from services.desk.domain import people
from services.desk.domain.queues import DeskOutcome
from services.desk.domain.training import Move
from services.desk.entrypoints.auth import CSRF_HEADER, Auth, Signed
from services.desk.entrypoints.views import item_view
from services.desk.handlers import Desk, OutcomeForm, Refused
from services.desk.repository import people as people_store
from services.desk.repository import training as training_store
from services.desk.repository import work
from services.desk.training import Played, Training
from shared.db import UnitOfWork
from shared.http import problem, validation_problem
from shared.service import Uow


class Login(BaseModel):
    username: Annotated[str, Field(min_length=1, max_length=64)]
    password: Annotated[str, Field(min_length=1, max_length=256)]


class OutcomeBody(BaseModel):
    outcome: DeskOutcome
    promise_amount: Annotated[Decimal, Field(gt=0, max_digits=19, decimal_places=4)] | None = None
    promise_date: date | None = None
    kind: Literal["installments", "extension", "settlement"] | None = None
    installments: Annotated[int, Field(ge=2, le=60)] | None = None
    extension_days: Annotated[int, Field(ge=1, le=180)] | None = None
    settlement_percent: Annotated[Decimal, Field(gt=0, le=100)] | None = None
    hardship_reason: (
        Literal["unemployment", "illness", "disaster", "income_drop", "other"] | None
    ) = None
    hardship_until: date | None = None
    callback_at: AwareDatetime | None = None

    def form(self) -> OutcomeForm:
        return OutcomeForm(**self.model_dump())


class Decision(BaseModel):
    approve: bool


class StartTraining(BaseModel):
    persona: Annotated[str, Field(min_length=1, max_length=64)]
    locale: Literal["en-US", "zh-CN"] = "en-US"
    local_time: Annotated[str, Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")] | None = None
    seed: Annotated[int, Field(ge=0, le=2**31)] | None = None


class PlayMove(BaseModel):
    move: Move
    text: Annotated[str, Field(max_length=500)] = ""


def refused(request: Request, exc: Refused) -> JSONResponse:
    if exc.status == 422 and exc.field:
        return validation_problem(request, [{"loc": (exc.field,), "msg": str(exc)}], ("body",))
    return problem(exc.status, _titles.get(exc.status, "Error"), str(exc))


_titles = {
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    422: "Unprocessable Content",
    429: "Too Many Requests",
}


def jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def played_view(p: Played) -> dict[str, Any]:
    s = p.session
    return {
        "session_id": p.session_id,
        "username": p.username,
        "persona": p.persona.key,
        "locale": s.locale,
        "local_time": s.local_time,
        "ended": s.ended,
        "outcome": s.outcome if s.ended else None,
        "transcript": [t.__dict__ for t in s.transcript],
        "deductions": [d.__dict__ for d in s.deductions],
        "score": p.score.total if p.score else None,
        "outcome_points": p.score.outcome_points if p.score else None,
        "conduct_points": p.score.conduct_points if p.score else None,
    }


def router(desk: Desk, training: Training, auth: Auth) -> APIRouter:
    api = APIRouter(prefix="/v1", tags=["desk"])
    unsafe = {"POST", "PUT", "PATCH", "DELETE"}

    async def session(request: Request) -> Signed:
        """The person signed in, and a write's CSRF token checked: a dependency, so that it
        answers (401, 403) before the body is even validated."""
        async with request.app.state.runtime.uow() as uow:
            signed = await auth.current(uow, request)
        if signed is None:
            raise HTTPException(401, "sign in first")
        if request.method in unsafe and not auth.csrf_ok(signed, request.headers.get(CSRF_HEADER)):
            raise HTTPException(403, f"missing or wrong {CSRF_HEADER}")
        return signed

    # a default, not an Annotated alias: this module's annotations are strings, read in its
    # globals, where a closure's alias is not
    signed_in_now = Depends(session)

    async def signed_in(
        request: Request,
        uow: UnitOfWork,
        signed: Signed,
        then: Callable[[Signed], Awaitable[Any]],
    ) -> Any:
        try:
            result = await then(signed)
            await uow.commit()
        except Refused as exc:
            return refused(request, exc)
        return result

    @api.post("/session", summary="Sign in: a session cookie and the CSRF token")
    async def login(request: Request, body: Login, uow: Uow) -> Any:
        client = request.client.host if request.client else "unknown"
        try:
            token, csrf, person = await auth.login(uow, body.username, body.password, client)
        except Refused as exc:
            await uow.commit()  # the failure counts
            return refused(request, exc)
        await uow.commit()
        response = JSONResponse(
            {"username": person.username, "role": person.role.value, "csrf": csrf}
        )
        auth.set_cookie(response, token)
        return response

    @api.delete("/session", summary="Sign out", status_code=204, response_model=None)
    async def logout(request: Request, uow: Uow, who: Signed = signed_in_now) -> Response:
        async def then(signed: Signed) -> Response:
            await people_store.close_session(uow.session, signed.token_hash)
            response = Response(status_code=204)
            auth.clear_cookie(response)
            return response

        result: Response = await signed_in(request, uow, who, then)
        return result

    @api.post(
        "/work/next",
        summary="Take the next item this person may work (or the one they hold); 204: none",
    )
    async def take_next(request: Request, uow: Uow, who: Signed = signed_in_now) -> Any:
        async def then(signed: Signed) -> Response:
            it = await desk.take_next(uow, signed.person)
            if it is None:
                return Response(status_code=204)
            customer = await work.customer(uow.session, it.customer_id)
            return JSONResponse(jsonable(item_view(it, signed.person, customer, desk.clock.now())))

        return await signed_in(request, uow, who, then)

    @api.get("/work", summary="Every item received, by contact id (team leads, managers)")
    async def listing(
        request: Request,
        uow: Uow,
        who: Signed = signed_in_now,
        after: Annotated[str, Query(max_length=128)] = "",
        limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
    ) -> Any:
        async def then(signed: Signed) -> Response:
            if signed.person.role not in people.SEES_FIGURES:
                raise Refused(403, "only a team lead or a manager lists the items")
            return JSONResponse(jsonable(await work.listing(uow.session, after, limit)))

        return await signed_in(request, uow, who, then)

    @api.get("/work/{contact_id}", summary="A work item (its holder, a team lead, a manager)")
    async def get_item(
        contact_id: str, request: Request, uow: Uow, who: Signed = signed_in_now
    ) -> Any:
        async def then(signed: Signed) -> Response:
            it = await desk.open_item(uow, signed.person, contact_id)
            customer = await work.customer(uow.session, it.customer_id)
            return JSONResponse(jsonable(item_view(it, signed.person, customer, desk.clock.now())))

        return await signed_in(request, uow, who, then)

    @api.post(
        "/work/{contact_id}/outcome",
        summary="Log the outcome; the desk reports it to the notifier (a plan beyond the "
        "collector's authority waits for approval)",
    )
    async def log_outcome(
        contact_id: str, body: OutcomeBody, request: Request, uow: Uow, who: Signed = signed_in_now
    ) -> Any:
        async def then(signed: Signed) -> Response:
            logged = await desk.log_outcome(uow, signed.person, contact_id, body.form())
            return JSONResponse(jsonable(logged.__dict__))

        return await signed_in(request, uow, who, then)

    @api.post("/work/{contact_id}/release", summary="Give an item back to the queue")
    async def release(
        contact_id: str, request: Request, uow: Uow, who: Signed = signed_in_now
    ) -> Any:
        async def then(signed: Signed) -> Response:
            await desk.release(uow, signed.person, contact_id)
            return JSONResponse({"status": "queued"})

        return await signed_in(request, uow, who, then)

    @api.get("/approvals", summary="Plans waiting for a team lead's approval")
    async def approvals(request: Request, uow: Uow, who: Signed = signed_in_now) -> Any:
        async def then(signed: Signed) -> Response:
            if signed.person.role not in people.APPROVES:
                raise Refused(403, "only a team lead or a manager sees approvals")
            return JSONResponse(jsonable(await work.approvals(uow.session)))

        return await signed_in(request, uow, who, then)

    @api.post("/approvals/{approval_id}", summary="Approve or decline a plan")
    async def decide(
        approval_id: str, body: Decision, request: Request, uow: Uow, who: Signed = signed_in_now
    ) -> Any:
        async def then(signed: Signed) -> Response:
            status = await desk.decide(uow, signed.person, approval_id, body.approve)
            return JSONResponse({"status": status})

        return await signed_in(request, uow, who, then)

    @api.get("/figures", summary="Queues, each person's results and the campaign's figures")
    async def figures(request: Request, uow: Uow, who: Signed = signed_in_now) -> Any:
        async def then(signed: Signed) -> Response:
            if signed.person.role not in people.SEES_FIGURES:
                raise Refused(403, "only a team lead or a manager sees the figures")
            return JSONResponse(jsonable(await figures_of(uow, desk.clock.now())))

        return await signed_in(request, uow, who, then)

    @api.get("/training/personas", summary="The simulated customers a trainee can call")
    async def personas(request: Request, uow: Uow, who: Signed = signed_in_now) -> Any:
        async def then(signed: Signed) -> Response:
            return JSONResponse(
                [
                    {"key": p.key, "title": p.title, "brief": p.brief, "local_time": p.local_time}
                    for p in training.personas.values()
                ]
            )

        return await signed_in(request, uow, who, then)

    @api.post("/training/sessions", summary="Start a training call with a persona")
    async def start(
        body: StartTraining, request: Request, uow: Uow, who: Signed = signed_in_now
    ) -> Any:
        async def then(signed: Signed) -> Response:
            session_id = await training.start(
                uow, signed.person, body.persona, body.locale, body.local_time, body.seed
            )
            played = await training.view(uow, signed.person, session_id)
            return JSONResponse(jsonable(played_view(played)), status_code=201)

        return await signed_in(request, uow, who, then)

    @api.get("/training/sessions/{session_id}", summary="A session's transcript and score")
    async def view(session_id: str, request: Request, uow: Uow, who: Signed = signed_in_now) -> Any:
        async def then(signed: Signed) -> Response:
            return JSONResponse(
                jsonable(played_view(await training.view(uow, signed.person, session_id)))
            )

        return await signed_in(request, uow, who, then)

    @api.post("/training/sessions/{session_id}/moves", summary="The trainee's next move")
    async def move(
        session_id: str, body: PlayMove, request: Request, uow: Uow, who: Signed = signed_in_now
    ) -> Any:
        async def then(signed: Signed) -> Response:
            played = await training.play(uow, signed.person, session_id, body.move, body.text)
            return JSONResponse(jsonable(played_view(played)))

        return await signed_in(request, uow, who, then)

    @api.get("/training/progress", summary="Each trainee's sessions and scores (trainers)")
    async def progress(request: Request, uow: Uow, who: Signed = signed_in_now) -> Any:
        async def then(signed: Signed) -> Response:
            if signed.person.role not in people.SEES_TRAINING:
                raise Refused(403, "only trainers, team leads and managers see progress")
            return JSONResponse(jsonable(await training_store.progress(uow.session)))

        return await signed_in(request, uow, who, then)

    return api


async def figures_of(uow: UnitOfWork, now: datetime) -> dict[str, Any]:
    results = await work.results(uow.session)
    for r in results:
        contacts, promises = r["contacts"], r["promises"]
        r["right_party_rate"] = round(r["right_party"] / contacts, 4) if contacts else None
        r["promise_rate"] = round(promises / r["right_party"], 4) if r["right_party"] else None
        settled = r["kept"] + r["broken"]
        r["kept_rate"] = round(r["kept"] / settled, 4) if settled else None
    return {
        "at": now,
        "queues": await work.queue_depths(uow.session, now),
        "collectors": results,
        "campaign": await work.figures(uow.session),
    }
