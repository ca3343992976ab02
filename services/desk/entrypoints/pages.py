"""The desk's pages: server-rendered HTML with forms (no JavaScript, no CDN; one stylesheet
served here). Every page needs a session; every form carries the session's CSRF token."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from services.desk.adapters.context import Context
from services.desk.domain import people, queues
from services.desk.domain.people import Role
from services.desk.domain.queues import DeskOutcome
from services.desk.domain.training import MOVE_WORDS, Move
from services.desk.entrypoints.api import figures_of
from services.desk.entrypoints.auth import Auth, Signed
from services.desk.entrypoints.views import item_view, money, plain
from services.desk.handlers import Desk, OutcomeForm, Refused, zone_of
from services.desk.repository import people as people_store
from services.desk.repository import training as training_store
from services.desk.repository import work
from services.desk.training import Training
from shared.db import UnitOfWork
from shared.http import read_form

PAGES = Path(__file__).resolve().parent.parent / "pages"
MAX_FORM_BYTES = 16 * 1024
HOME = {
    Role.COLLECTOR: "/queue",
    Role.FIELD_AGENT: "/field",
    Role.TEAM_LEAD: "/approvals",
    Role.MANAGER: "/manager",
    Role.TRAINER: "/trainer",
    Role.TRAINEE: "/training",
}
HARDSHIP_REASONS = ("unemployment", "illness", "disaster", "income_drop", "other")


def _headers(response: Response) -> Response:
    # nothing about a customer is cached; no framing; only this service's stylesheet
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    )
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def see_other(location: str) -> Response:
    return _headers(Response(status_code=303, headers={"Location": location}))


def router(desk: Desk, training: Training, auth: Auth, context: Context) -> APIRouter:
    api = APIRouter(include_in_schema=False)
    env = Environment(loader=FileSystemLoader(PAGES), autoescape=select_autoescape(["html"]))
    env.filters["money"] = money
    env.filters["plain"] = plain

    def render(name: str, signed: Signed | None, status: int = 200, **values: Any) -> Response:
        html = env.get_template(name).render(
            me=signed.person if signed else None,
            csrf=signed.csrf if signed else "",
            home=HOME.get(signed.person.role, "/") if signed else "/login",
            Role=Role,
            **values,
        )
        return _headers(HTMLResponse(html, status_code=status))

    async def form_of(request: Request) -> dict[str, str] | Response:
        form = await read_form(request, MAX_FORM_BYTES, 30)
        return Response("request body too large", status_code=413) if form is None else form

    async def page(
        request: Request,
        then: Callable[[UnitOfWork, Signed, dict[str, str]], Awaitable[Response]],
        *,
        roles: set[Role] | None = None,
    ) -> Response:
        """Signed in (else to the login page), the role allowed, a POST's CSRF token checked;
        ``then`` runs in one unit of work, committed when it returns."""
        async with request.app.state.runtime.uow() as uow:
            signed = await auth.current(uow, request)
            if signed is None:
                return see_other("/login")
            if roles is not None and signed.person.role not in roles:
                return render("error.html", signed, 403, message="This page is not for your role.")
            form: dict[str, str] = {}
            if request.method == "POST":
                got = await form_of(request)
                if isinstance(got, Response):
                    return got
                form = got
                if not auth.csrf_ok(signed, form.get("csrf")):
                    return render(
                        "error.html", signed, 403, message="The form expired; open the page again."
                    )
            try:
                response = await then(uow, signed, form)
                await uow.commit()
                return response
            except Refused as exc:
                return render("error.html", signed, exc.status, message=str(exc))

    @api.get("/static/desk.css")
    async def css() -> Any:
        return FileResponse(PAGES / "static" / "desk.css", media_type="text/css")

    @api.get("/")
    async def index(request: Request) -> Response:
        async with request.app.state.runtime.uow() as uow:
            signed = await auth.current(uow, request)
        return see_other(HOME[signed.person.role] if signed else "/login")

    @api.get("/login")
    async def login_page(request: Request) -> Response:
        return render("login.html", None)

    @api.post("/login")
    async def login(request: Request) -> Response:
        form = await form_of(request)
        if isinstance(form, Response):
            return form
        client = request.client.host if request.client else "unknown"
        async with request.app.state.runtime.uow() as uow:
            try:
                token, _, person = await auth.login(
                    uow, form.get("username", ""), form.get("password", ""), client
                )
            except Refused as exc:
                await uow.commit()
                return render("login.html", None, exc.status, error=str(exc))
            await uow.commit()
        response = see_other(HOME[person.role])
        auth.set_cookie(response, token)
        return response

    @api.post("/logout")
    async def logout(request: Request) -> Response:
        async def then(uow: UnitOfWork, signed: Signed, form: dict[str, str]) -> Response:
            await people_store.close_session(uow.session, signed.token_hash)
            response = see_other("/login")
            auth.clear_cookie(response)
            return response

        return await page(request, then)

    # --- collectors ------------------------------------------------------------------------

    @api.get("/queue")
    async def queue(request: Request) -> Response:
        async def then(uow: UnitOfWork, signed: Signed, form: dict[str, str]) -> Response:
            now = desk.clock.now()
            held = await work.held_by(uow.session, signed.person.username, now)
            waiting = await work.visible_count(uow.session, signed.person, now)
            mine = [
                r
                for r in await work.results(uow.session)
                if r["username"] == signed.person.username
            ]
            return render("queue.html", signed, held=held, waiting=waiting, results=mine)

        return await page(request, then, roles=people.WORKS_QUEUES)

    @api.post("/queue/next")
    async def take_next(request: Request) -> Response:
        async def then(uow: UnitOfWork, signed: Signed, form: dict[str, str]) -> Response:
            it = await desk.take_next(uow, signed.person)
            if it is None:
                return see_other("/queue?empty=1")
            return see_other(f"/items/{it.contact_id}")

        return await page(request, then, roles=people.WORKS_QUEUES)

    @api.get("/items/{contact_id}")
    async def item(contact_id: str, request: Request) -> Response:
        async def then(uow: UnitOfWork, signed: Signed, form: dict[str, str]) -> Response:
            return await item_page(uow, signed, contact_id)

        return await page(request, then)

    async def item_page(
        uow: UnitOfWork,
        signed: Signed,
        contact_id: str,
        status: int = 200,
        error: str | None = None,
        done: str | None = None,
    ) -> Response:
        it = await desk.open_item(uow, signed.person, contact_id)
        now = desk.clock.now()
        customer = await work.customer(uow.session, it.customer_id)
        view = item_view(it, signed.person, customer, now)
        ctx = await context.of(it.account_id, it.channel, it.contact_id)
        outcomes = queues.VISIT_OUTCOMES if it.channel == "field_visit" else queues.CALL_OUTCOMES
        local = now.astimezone(zone_of(it))
        return render(
            "item.html",
            signed,
            status,
            item=view,
            ctx=ctx,
            outcomes=[o.value for o in outcomes],
            reasons=HARDSHIP_REASONS,
            today=local.date().isoformat(),
            soon=(local + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M"),
            error=error,
            done=done,
            history=await work.outcomes_of(uow.session, contact_id),
        )

    @api.post("/items/{contact_id}/outcome")
    async def outcome(contact_id: str, request: Request) -> Response:
        async def then(uow: UnitOfWork, signed: Signed, form: dict[str, str]) -> Response:
            it = await desk.open_item(uow, signed.person, contact_id)
            try:
                parsed = _outcome_form(form, zone_of(it))
                logged = await desk.log_outcome(uow, signed.person, contact_id, parsed)
            except Refused as exc:
                if exc.status in (403, 404):
                    raise
                return await item_page(uow, signed, contact_id, exc.status, error=str(exc))
            if logged.verdict == "approval":
                message = "The plan is beyond your authority: it waits for a team lead's approval ("
                done = message + "; ".join(logged.reasons) + ")."
            else:
                done = "Logged and reported."
            return await item_page(uow, signed, contact_id, done=done)

        return await page(request, then)

    @api.post("/items/{contact_id}/release")
    async def release(contact_id: str, request: Request) -> Response:
        async def then(uow: UnitOfWork, signed: Signed, form: dict[str, str]) -> Response:
            await desk.release(uow, signed.person, contact_id)
            return see_other(HOME[signed.person.role])

        return await page(request, then)

    # --- field agents ----------------------------------------------------------------------

    @api.get("/field")
    async def field(request: Request) -> Response:
        async def then(uow: UnitOfWork, signed: Signed, form: dict[str, str]) -> Response:
            now = desk.clock.now()
            visits = await work.field_day(
                uow.session, signed.person, now, now + timedelta(hours=24)
            )
            by_district: dict[str, list[dict[str, Any]]] = {}
            for it in visits:
                zone = zone_of(it)
                # the end of the agent's day in the customer's calendar
                if it.not_before.astimezone(zone).date() > now.astimezone(zone).date():
                    continue
                by_district.setdefault(it.district or "unknown", []).append(
                    {
                        "contact_id": it.contact_id,
                        "opens": max(it.not_before, now).astimezone(zone).strftime("%H:%M"),
                        "closes": it.not_after.astimezone(zone).strftime("%H:%M"),
                        "status": it.status,
                        "mine": it.holder == signed.person.username,
                        "overdue": it.total_overdue,
                        "currency": it.currency,
                        "days_past_due": it.days_past_due,
                        "priority": it.priority,
                    }
                )
            return render("field.html", signed, districts=by_district)

        return await page(request, then, roles={Role.FIELD_AGENT, Role.TEAM_LEAD})

    @api.post("/field/{contact_id}/take")
    async def take_visit(contact_id: str, request: Request) -> Response:
        async def then(uow: UnitOfWork, signed: Signed, form: dict[str, str]) -> Response:
            it = await desk.take(uow, signed.person, contact_id)
            return see_other(f"/items/{it.contact_id}")

        return await page(request, then, roles={Role.FIELD_AGENT, Role.TEAM_LEAD})

    # --- team leads and managers -----------------------------------------------------------

    @api.get("/approvals")
    async def approvals(request: Request) -> Response:
        async def then(uow: UnitOfWork, signed: Signed, form: dict[str, str]) -> Response:
            pending = await work.approvals(uow.session)
            decided = await work.approvals(uow.session, "approved") + await work.approvals(
                uow.session, "declined"
            )
            return render("approvals.html", signed, pending=pending, decided=decided[-20:])

        return await page(request, then, roles=people.APPROVES)

    @api.post("/approvals/{approval_id}")
    async def decide(approval_id: str, request: Request) -> Response:
        async def then(uow: UnitOfWork, signed: Signed, form: dict[str, str]) -> Response:
            await desk.decide(uow, signed.person, approval_id, form.get("decision") == "approve")
            return see_other("/approvals")

        return await page(request, then, roles=people.APPROVES)

    @api.get("/manager")
    async def manager(request: Request) -> Response:
        async def then(uow: UnitOfWork, signed: Signed, form: dict[str, str]) -> Response:
            found = await figures_of(uow, desk.clock.now())
            expired = await work.expired_items(uow.session, 20)
            return render("manager.html", signed, figures=found, expired=expired)

        return await page(request, then, roles=people.SEES_FIGURES)

    # --- training --------------------------------------------------------------------------

    @api.get("/training")
    async def training_home(request: Request) -> Response:
        async def then(uow: UnitOfWork, signed: Signed, form: dict[str, str]) -> Response:
            mine = await training_store.sessions(uow.session, signed.person.username)
            return render(
                "training.html", signed, personas=training.personas.values(), sessions=mine
            )

        return await page(request, then, roles=people.TRAINS)

    @api.post("/training")
    async def training_start(request: Request) -> Response:
        async def then(uow: UnitOfWork, signed: Signed, form: dict[str, str]) -> Response:
            session_id = await training.start(
                uow,
                signed.person,
                form.get("persona", ""),
                form.get("locale", "en-US"),
                form.get("local_time") or None,
            )
            return see_other(f"/training/{session_id}")

        return await page(request, then, roles=people.TRAINS)

    @api.get("/training/{session_id}")
    async def training_session(session_id: str, request: Request) -> Response:
        async def then(uow: UnitOfWork, signed: Signed, form: dict[str, str]) -> Response:
            played = await training.view(uow, signed.person, session_id)
            return render(
                "session.html",
                signed,
                played=played,
                moves=[(m.value, MOVE_WORDS[played.session.locale][m]) for m in Move],
                conduct=training.conduct,
            )

        return await page(request, then)

    @api.post("/training/{session_id}/move")
    async def training_move(session_id: str, request: Request) -> Response:
        async def then(uow: UnitOfWork, signed: Signed, form: dict[str, str]) -> Response:
            await training.play(
                uow, signed.person, session_id, form.get("move", ""), form.get("text", "")
            )
            return see_other(f"/training/{session_id}")

        return await page(request, then, roles=people.TRAINS)

    @api.get("/trainer")
    async def trainer(request: Request) -> Response:
        async def then(uow: UnitOfWork, signed: Signed, form: dict[str, str]) -> Response:
            return render(
                "trainer.html",
                signed,
                sessions=await training_store.sessions(uow.session),
                progress=await training_store.progress(uow.session),
                personas=training.personas,
            )

        return await page(request, then, roles=people.SEES_TRAINING)

    return api


def _outcome_form(form: dict[str, str], zone: Any) -> OutcomeForm:
    """The outcome form's fields, read; a bad one is refused naming it."""

    def number(name: str, kind: type[Any]) -> Any:
        raw = form.get(name, "").strip()
        if not raw:
            return None
        try:
            return kind(raw)
        except (ValueError, InvalidOperation) as exc:
            raise Refused(422, f"{name}: not a number", name) from exc

    try:
        outcome = DeskOutcome(form.get("outcome", ""))
    except ValueError as exc:
        raise Refused(422, "outcome: choose an outcome", "outcome") from exc
    try:
        promise_date = (
            datetime.fromisoformat(form["promise_date"]).date()
            if form.get("promise_date")
            else None
        )
        until = (
            datetime.fromisoformat(form["hardship_until"]).date()
            if form.get("hardship_until")
            else None
        )
        callback = None
        if form.get("callback_at"):
            callback = datetime.fromisoformat(form["callback_at"])
            if callback.tzinfo is None:  # the form's local time is the customer's
                callback = callback.replace(tzinfo=zone)
    except ValueError as exc:
        raise Refused(422, "a date or time is not valid", "promise_date") from exc
    kind = form.get("kind") or None
    return OutcomeForm(
        outcome=outcome,
        promise_amount=number("promise_amount", Decimal),
        promise_date=promise_date,
        kind=kind,
        installments=number("installments", int),
        extension_days=number("extension_days", int),
        settlement_percent=number("settlement_percent", Decimal),
        hardship_reason=form.get("hardship_reason") or None,
        hardship_until=until,
        callback_at=callback,
    )
