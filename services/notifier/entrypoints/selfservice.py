"""The customer's self-service page, at the signed, expiring link every SMS and email carries.

Server-rendered HTML that works without JavaScript and without a CDN (its one stylesheet is
served here). After a light identity check (birth date or the last four of the national id;
five wrong answers in a row lock it for a day; attempts are rate-limited) the customer sees what
is overdue in their language and can accept an offer within its limits, promise a payment or
report hardship: the same events follow as from any channel. Forms carry a CSRF token bound to
the link and the session; the session cookie is HttpOnly, SameSite=Strict and scoped to the
link. Nothing personal is in a URL, a log line or an error.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import date
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple, get_args

import yaml
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from services.notifier import repository
from services.notifier.domain import selfservice
from services.notifier.domain.offers import OfferRefused, Terms, choices
from services.notifier.domain.selfservice import LinkInvalid, PromiseRefused
from services.notifier.domain.templates import cents
from services.notifier.handlers import OFFER_REPLY_WINDOW, Notifier
from services.notifier.repository import Customer, Delivery
from shared.db import UnitOfWork
from shared.events import HardshipReason
from shared.http import Window, read_form

PAGES = Path(__file__).resolve().parent.parent / "pages"
COOKIE = "arrears_ss"
MAX_FORM_BYTES = 4096
REASONS: tuple[str, ...] = get_args(HardshipReason)
FIELDS = {"installments": "installments", "extension": "extension_days"}
FIELDS["settlement"] = "settlement_percent"


@lru_cache(maxsize=1)
def _strings() -> dict[str, dict[str, str]]:
    loaded: dict[str, dict[str, str]] = yaml.safe_load(
        (PAGES / "strings.yaml").read_text(encoding="utf-8")
    )
    return loaded


def _t(locale: str | None) -> dict[str, str]:
    strings = _strings()
    return strings.get(locale or "", strings["en-US"])


class Visit(NamedTuple):
    """An authenticated visit to a link: its unit of work, delivery, customer, session cookie
    and the form posted."""

    uow: UnitOfWork
    delivery: Delivery
    customer: Customer | None
    cookie: str
    form: dict[str, str]


def router(notifier: Notifier, secret: str, fingerprint_key: str, creditor: str) -> APIRouter:
    # A page for customers' browsers, not an API: it answers in HTML (errors too), needs no
    # key (the signed link is the credential) and stays out of the OpenAPI documents.
    api = APIRouter(prefix="/s", tags=["self-service"], include_in_schema=False)
    env = Environment(
        loader=FileSystemLoader(PAGES), autoescape=select_autoescape(["html"]), enable_async=False
    )
    page = env.get_template("page.html")
    per_link = Window(10, 60)  # POSTs per link per minute
    # POSTs per client address per minute: many customers share an address behind a carrier's
    # NAT, so this only stops a flood; the lock after five wrong answers guards each customer
    per_client = Window(300, 60)

    def render(status: int, locale: str | None, **context: Any) -> HTMLResponse:
        t = _t(locale)
        html = page.render(t=t, title=t["title"].format(creditor=creditor), **context)
        response = HTMLResponse(html, status_code=status)
        # No caching of a page about someone's debts; no framing (clickjacking).
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Content-Security-Policy"] = (
            "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'"
        )
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    async def opened(
        uow: UnitOfWork, token: str
    ) -> tuple[Delivery, Customer | None] | HTMLResponse:
        """The link's delivery and customer, or the page that says why the link is no good."""
        now = notifier.now()
        try:
            contact_id = selfservice.read_link(secret, token, now)
        except LinkInvalid as bad:
            t = _t(None)
            text = (
                t["expired"].format(days=selfservice.LINK_DAYS)
                if bad.why == "expired"
                else t["invalid"]
            )
            return render(410 if bad.why == "expired" else 404, None, view="gone", message=text)
        found = await repository.delivery(uow.session, contact_id)
        if found is None:
            return render(404, None, view="gone", message=_t(None)["invalid"])
        return found, await repository.customer(uow.session, found.customer_id)

    def locale_of(delivery: Delivery, customer: Customer | None) -> str | None:
        return delivery.locale or (customer.locale if customer else None)

    async def account_view(
        uow: UnitOfWork,
        token: str,
        delivery: Delivery,
        customer: Customer | None,
        cookie: str | None,
        status: int = 200,
        message: str | None = None,
        done: bool = False,
    ) -> HTMLResponse:
        locale = locale_of(delivery, customer)
        t = _t(locale)
        offered = await offer_of(uow, delivery)
        overdue = cents(delivery.total_overdue or Decimal(0))
        currency = delivery.currency or ""
        tail = delivery.account_id[-4:]
        overdue_line = (
            t["overdue"].format(
                amount=overdue, currency=currency, tail=tail, days=delivery.days_past_due or 0
            )
            if overdue > 0
            else t["nothing_overdue"].format(tail=tail)
        )
        due_line = (
            t["due_soon"].format(
                amount=cents(delivery.amount_due or Decimal(0)),
                currency=currency,
                date=delivery.due_date,
            )
            if delivery.due_date and delivery.amount_due
            else ""
        )
        listed = []
        if offered is not None and offered.offer and overdue > 0:
            for kind, (least, most) in choices(offered.offer).items():
                own = offered.offer.get(FIELDS[kind])
                listed.append((kind, FIELDS[kind], least, most, own if own is not None else most))
        return render(
            status,
            locale,
            view="account",
            token=token,
            form=selfservice.form_token(secret, token, cookie),
            overdue_line=overdue_line,
            due_line=due_line,
            as_of=t["as_of"].format(date=delivery.created_at.date().isoformat()),
            choices=listed,
            currency=currency,
            reasons=REASONS,
            message=message,
            done=done,
        )

    async def offer_of(uow: UnitOfWork, delivery: Delivery) -> Delivery | None:
        if delivery.offer:
            return delivery
        since = notifier.now() - OFFER_REPLY_WINDOW
        return await repository.latest_offer(uow.session, delivery.account_id, since)

    async def form_of(request: Request) -> dict[str, str] | Response:
        form = await read_form(request, MAX_FORM_BYTES, 20)
        return Response("request body too large", status_code=413) if form is None else form

    def throttled(request: Request, token: str) -> bool:
        client = request.client.host if request.client else "unknown"
        return not (per_link.allow(token) and per_client.allow(client))

    @api.get("/static/page.css", include_in_schema=False)
    async def stylesheet() -> FileResponse:
        return FileResponse(PAGES / "static" / "page.css", media_type="text/css")

    @api.get("/{token}", response_class=HTMLResponse, summary="The self-service page (HTML)")
    async def show(token: str, request: Request) -> Response:
        async with request.app.state.runtime.uow() as uow:
            found = await opened(uow, token)
            if isinstance(found, Response):
                return found
            delivery, customer = found
            cookie = request.cookies.get(COOKIE)
            if selfservice.session_valid(secret, token, cookie, notifier.now()):
                return await account_view(uow, token, delivery, customer, cookie)
            return render(
                200,
                locale_of(delivery, customer),
                view="check",
                token=token,
                form=selfservice.form_token(secret, token, None),
            )

    @api.post("/{token}/check", response_class=HTMLResponse, summary="The identity check")
    async def check(token: str, request: Request) -> Response:
        form = await form_of(request)
        if isinstance(form, Response):
            return form
        async with request.app.state.runtime.uow() as uow:
            found = await opened(uow, token)
            if isinstance(found, Response):
                return found
            delivery, customer = found
            locale = locale_of(delivery, customer)
            t = _t(locale)

            def again(status: int, message: str) -> HTMLResponse:
                return render(
                    status,
                    locale,
                    view="check",
                    token=token,
                    form=selfservice.form_token(secret, token, None),
                    message=message,
                )

            if throttled(request, token):
                return again(429, t["busy"])
            if not selfservice.form_valid(secret, token, None, form.get("form")):
                return again(403, t["invalid"])
            method = form.get("method", "birth_date")
            if method not in ("birth_date", "national_id_last4") or customer is None:
                return again(422, t["wrong"].format(left=selfservice.MAX_WRONG_ANSWERS))
            expected = customer.birth_ref if method == "birth_date" else customer.nid4_ref
            given = selfservice.answer_ref(
                method,  # type: ignore[arg-type]
                form.get("answer", ""),
                fingerprint_key,
            )
            now = notifier.now()
            state = await repository.check_state(uow.session, customer.customer_id)
            verdict = selfservice.check(expected, given, state.failures, state.locked_until, now)
            await repository.set_check(
                uow.session, customer.customer_id, verdict.failures, verdict.locked_until, now
            )
            await uow.commit()
            if verdict.locked_until is not None:
                until = verdict.locked_until.strftime("%Y-%m-%d %H:%M UTC")
                return render(423, locale, view="locked", message=t["locked"].format(until=until))
            if not verdict.ok:
                left = selfservice.MAX_WRONG_ANSWERS - verdict.failures
                return again(401, t["wrong"].format(left=left))
            session = selfservice.session_token(secret, token, now + selfservice.SESSION)
            response = Response(status_code=303, headers={"Location": f"/s/{token}"})
            response.set_cookie(
                COOKIE,
                session,
                max_age=int(selfservice.SESSION.total_seconds()),
                path=f"/s/{token}",
                httponly=True,
                samesite="strict",
                secure=request.url.scheme == "https",
            )
            return response

    Action = Callable[[Visit], Awaitable[Response]]

    async def action(request: Request, token: str, do: Action) -> Response:
        """The checks every action passes (size, rate, link, session, CSRF token), then ``do``
        in one unit of work."""
        form = await form_of(request)
        if isinstance(form, Response):
            return form
        if throttled(request, token):
            return render(429, None, view="gone", message=_t(None)["busy"])
        async with request.app.state.runtime.uow() as uow:
            found = await opened(uow, token)
            if isinstance(found, Response):
                return found
            delivery, customer = found
            cookie = request.cookies.get(COOKIE)
            if (
                cookie is None
                or not selfservice.session_valid(secret, token, cookie, notifier.now())
                or not selfservice.form_valid(secret, token, cookie, form.get("form"))
            ):
                return Response(status_code=303, headers={"Location": f"/s/{token}"})
            return await do(Visit(uow, delivery, customer, cookie, form))

    @api.post("/{token}/plan", response_class=HTMLResponse, summary="Accept an offer")
    async def plan(token: str, request: Request) -> Response:
        async def do(visit: Visit) -> Response:
            uow, delivery, customer, cookie, form = visit
            t = _t(locale_of(delivery, customer))

            async def again(message: str) -> Response:
                text = t["error"].format(message=message)
                return await account_view(uow, token, delivery, customer, cookie, 422, text)

            offered = await offer_of(uow, delivery)
            if offered is None:
                return await again("kind: no offer to accept")
            if await notifier.served_before(uow, offered, "plan"):  # sent twice: once is enough
                return await account_view(
                    uow,
                    token,
                    delivery,
                    customer,
                    cookie,
                    200,
                    t["already"],
                    True,
                )
            try:
                agreed = notifier.plan_from_offer(
                    uow, offered, notifier.now(), _terms(form), "self_service"
                )
            except OfferRefused as refused:
                return await again(f"{refused.field}: {refused.reason}")
            if agreed is None:
                return await again("nothing is overdue")
            await notifier.self_served(uow, offered, "plan", {"kind": agreed.kind})
            await uow.commit()
            schedule = ", ".join(f"{i.due_date} {i.amount}" for i in agreed.installments)
            message = t["done_plan"].format(schedule=schedule)
            return await account_view(uow, token, delivery, customer, cookie, 200, message, True)

        return await action(request, token, do)

    @api.post("/{token}/promise", response_class=HTMLResponse, summary="Promise a payment")
    async def promise(token: str, request: Request) -> Response:
        async def do(visit: Visit) -> Response:
            uow, delivery, customer, cookie, form = visit
            t = _t(locale_of(delivery, customer))
            today = notifier.today(customer.timezone if customer else None)
            try:
                amount, due = selfservice.promise_terms(
                    form.get("amount", ""), form.get("due_date", ""), today
                )
            except PromiseRefused as refused:
                message = t["error"].format(message=f"{refused.field}: {refused.reason}")
                return await account_view(uow, token, delivery, customer, cookie, 422, message)
            if not await notifier.served_before(uow, delivery, "promise"):
                notifier.promise(uow, delivery, amount, due, "self_service")
            await notifier.self_served(uow, delivery, "promise", {"due_date": due.isoformat()})
            await uow.commit()
            message = t["done_promise"].format(
                amount=amount, currency=delivery.currency or "", date=due
            )
            return await account_view(uow, token, delivery, customer, cookie, 200, message, True)

        return await action(request, token, do)

    @api.post("/{token}/hardship", response_class=HTMLResponse, summary="Report hardship")
    async def hardship(token: str, request: Request) -> Response:
        async def do(visit: Visit) -> Response:
            uow, delivery, customer, cookie, form = visit
            t = _t(locale_of(delivery, customer))
            reason = form.get("reason", "other")
            until = None
            try:
                until = date.fromisoformat(form["until"]) if form.get("until") else None
            except ValueError:
                message = t["error"].format(message="until: not a date")
                return await account_view(uow, token, delivery, customer, cookie, 422, message)
            if reason not in REASONS:
                message = t["error"].format(message="reason")
                return await account_view(uow, token, delivery, customer, cookie, 422, message)
            if not await notifier.served_before(uow, delivery, "hardship"):
                notifier.report_hardship(uow, delivery, reason, until, "self_service")  # type: ignore[arg-type]
            await notifier.self_served(uow, delivery, "hardship", {"reason": reason})
            await uow.commit()
            return await account_view(
                uow, token, delivery, customer, cookie, 200, t["done_hardship"], True
            )

        return await action(request, token, do)

    return api


def _terms(form: dict[str, str]) -> Terms:
    kind = form.get("kind", "")
    if kind not in FIELDS:
        raise OfferRefused("kind", "choose one of the plans offered")
    raw = form.get(FIELDS[kind], "").strip()
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise OfferRefused(FIELDS[kind], "not a number") from None
    if kind == "settlement":
        return Terms("settlement", settlement_percent=value)
    if value != value.to_integral_value():
        raise OfferRefused(FIELDS[kind], "a whole number")
    if kind == "installments":
        return Terms("installments", installments=int(value))
    return Terms("extension", extension_days=int(value))
