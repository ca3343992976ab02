"""The desk's use cases: work arriving from the notifier, taking and logging it, approvals, the
clock's expiries, and the events it reads for context. Entry points turn input into a call
here; this loads, asks the domain, and persists (the caller's unit of work commits)."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from services.desk.domain import people, queues
from services.desk.domain.people import Authority, Person, Role, Terms
from services.desk.domain.queues import DeskOutcome, Facts, Weights
from services.desk.repository import work
from services.desk.repository.work import Item
from shared.clock import Clock, wall_now
from shared.consumer import Handlers
from shared.db import UnitOfWork
from shared.events import (
    AccountCured,
    CustomerUpserted,
    PaymentReceived,
    PlanActivated,
    PlanBroken,
    PlanCompleted,
    PromiseBroken,
    PromiseKept,
)

DESK_PROMISE = "desk:"  # the notifier names a partner's promise "<partner>:<event id>"
# a promise broken this recently puts the account's next call first
BROKEN_PROMISE_DAYS = 60


class Refused(Exception):
    """A request the desk will not carry out; ``status`` is its HTTP status, ``field`` the
    form field at fault (or empty). The message carries no personal data."""

    def __init__(self, status: int, message: str, field: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.field = field


@dataclass(frozen=True)
class OutcomeForm:
    outcome: DeskOutcome
    promise_amount: Decimal | None = None
    promise_date: date | None = None
    kind: str | None = None
    installments: int | None = None
    extension_days: int | None = None
    settlement_percent: Decimal | None = None
    hardship_reason: str | None = None
    hardship_until: date | None = None
    callback_at: datetime | None = None  # aware; the page reads it in the customer's zone


@dataclass(frozen=True)
class Logged:
    verdict: str  # reported, approval
    event_id: str | None = None
    approval_id: str | None = None
    reasons: tuple[str, ...] = ()


def zone_of(item: Item) -> ZoneInfo:
    try:
        return ZoneInfo(item.timezone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


class Desk:
    def __init__(
        self,
        clock: Clock,
        weights: Weights,
        authority: dict[str, Authority],
        lock_minutes: int,
    ) -> None:
        self._clock = clock
        self._weights = weights
        self.authority = authority
        self._lock = timedelta(minutes=lock_minutes)

    @property
    def clock(self) -> Clock:
        return self._clock

    def person(
        self,
        username: str,
        display_name: str,
        role: Role,
        *,
        team: str = "",
        languages: Sequence[str] = (),
        countries: Sequence[str] = (),
        skills: Sequence[str] = (),
    ) -> Person:
        """A person with their role's authority (``data/roles.yaml``)."""
        return Person(
            username,
            display_name,
            role,
            team,
            tuple(languages),
            tuple(countries),
            tuple(skills),
            self.authority.get(role.value, Authority()),
        )

    # --- work from the notifier ------------------------------------------------------------

    async def receive(self, uow: UnitOfWork, channel: str, body: dict[str, Any]) -> bool:
        """A call or visit the notifier sends (its partner API); False for a repeat."""
        case = body.get("case") or {}
        now = self._clock.now()
        not_after = datetime.fromisoformat(body["not_after"])
        not_before = datetime.fromisoformat(case["not_before"]) if case.get("not_before") else now
        overdue = Decimal(case["total_overdue"]) if case.get("total_overdue") else None
        score = case.get("propensity")
        account_id = case.get("account_id") or ""
        broken = await work.broke_a_promise_since(
            uow.session, account_id, now - timedelta(days=BROKEN_PROMISE_DAYS)
        )
        value, why = queues.priority(
            Facts(
                total_overdue=overdue or Decimal(0),
                days_past_due=int(case.get("days_past_due") or 0),
                not_after=not_after,
                purpose=case.get("purpose"),
                broken_promise=broken,
                propensity=Decimal(str(score)) if score is not None else None,
            ),
            self._weights,
            now,
        )
        address = body.get("to") or body.get("postal_address") or ""
        return await work.add_item(
            uow.session,
            {
                "contact_id": body["contact_id"],
                "channel": channel,
                "account_id": account_id,
                "customer_id": case.get("customer_id") or "",
                "country": case.get("country"),
                "locale": body.get("locale"),
                "timezone": case.get("timezone"),
                "address": address,
                "full_name": case.get("full_name"),
                "script": body.get("script") or body.get("instructions") or "",
                "template": case.get("template"),
                "purpose": case.get("purpose"),
                "offer": case.get("offer"),
                "total_overdue": overdue,
                "currency": case.get("currency"),
                "days_past_due": case.get("days_past_due"),
                "district": queues.district(address) if channel == "field_visit" else None,
                "not_before": not_before,
                "not_after": not_after,
                "priority": value,
                "priority_why": why,
                "received_at": now,
            },
        )

    # --- the queues ------------------------------------------------------------------------

    async def take_next(self, uow: UnitOfWork, person: Person) -> Item | None:
        """The item this person holds, else the next one they may work."""
        if person.role not in people.WORKS_QUEUES:
            raise Refused(403, "this role does not work the queues")
        now = self._clock.now()
        held = await work.held_by(uow.session, person.username, now)
        if held:
            return held[0]
        return await work.take_next(uow.session, person, now, now + self._lock)

    async def take(self, uow: UnitOfWork, person: Person, contact_id: str) -> Item:
        """A field agent's chosen visit from their day's list (a collector takes the next)."""
        now = self._clock.now()
        it = await work.item(uow.session, contact_id)
        if it is None:
            raise Refused(404, "no such item")
        if it.status == "held" and it.holder == person.username:
            return it
        if it.status != "queued" or not people.may_work(person, it.channel, it.country, it.locale):
            raise Refused(409, "this item is not free for you to take")
        got = await work.take_next(
            uow.session, _only(person, it.channel), now, now + self._lock, contact_id
        )
        if got is None:
            raise Refused(409, "someone holds this customer")
        return got

    async def open_item(self, uow: UnitOfWork, person: Person, contact_id: str) -> Item:
        """An item for its holder only (a team lead or a manager may look at any)."""
        it = await work.item(uow.session, contact_id)
        if it is None:
            raise Refused(404, "no such item")
        if person.role in (Role.TEAM_LEAD, Role.MANAGER):
            return it
        if it.holder != person.username and it.worked_by != person.username:
            raise Refused(403, "this item is not yours")
        return it

    async def release(self, uow: UnitOfWork, person: Person, contact_id: str) -> None:
        it = await work.item(uow.session, contact_id, lock=True)
        if it is None or it.holder != person.username:
            raise Refused(403, "this item is not yours")
        await work.release(uow.session, contact_id)

    async def log_outcome(
        self, uow: UnitOfWork, person: Person, contact_id: str, form: OutcomeForm
    ) -> Logged:
        now = self._clock.now()
        it = await work.item(uow.session, contact_id, lock=True)
        if it is None:
            raise Refused(404, "no such item")
        if it.status in ("done", "approval"):
            raise Refused(409, "this item's outcome is already logged")
        if it.status == "expired" or now >= it.not_after:
            closes = it.not_after.astimezone(zone_of(it)).strftime("%H:%M")
            raise Refused(
                409,
                f"the contact window closed at {closes} local time: this item expired and "
                "the scheduler plans the contact again",
            )
        if it.holder != person.username or it.held_until is None or it.held_until <= now:
            raise Refused(403, "this item is not yours (or your hold on it lapsed)")
        detail = self._detail(it, form, now)
        if form.outcome is DeskOutcome.PLAN:
            terms = Terms(
                form.kind or "", form.installments, form.extension_days, form.settlement_percent
            )
            decision = people.decide_plan(terms, person.authority, it.offer)
            if decision.verdict == "refused":
                raise Refused(422, "; ".join(decision.reasons), _term_field(terms))
            if decision.verdict == "approval":
                approval_id = str(uuid.uuid4())
                await work.add_approval(
                    uow.session, approval_id, it, person.username, detail, decision.reasons, now
                )
                await work.finish(
                    uow.session, it.contact_id, person.username, form.outcome, now, "approval"
                )
                return Logged("approval", approval_id=approval_id, reasons=decision.reasons)
        event_id = await self._report(uow, it, person.username, form.outcome, detail, now)
        await work.finish(uow.session, it.contact_id, person.username, form.outcome, now)
        return Logged("reported", event_id=event_id)

    def _detail(self, it: Item, form: OutcomeForm, now: datetime) -> dict[str, Any]:
        visit = it.channel == "field_visit"
        if form.outcome in (DeskOutcome.NOT_AT_HOME, DeskOutcome.MOVED) and not visit:
            raise Refused(422, f"outcome: {form.outcome} is for a field visit", "outcome")
        today = now.astimezone(zone_of(it)).date()
        if form.outcome is DeskOutcome.PROMISE:
            if form.promise_amount is None or form.promise_amount <= 0:
                raise Refused(422, "promise_amount: a promise needs an amount", "promise_amount")
            if form.promise_date is None or form.promise_date < today:
                raise Refused(
                    422, "promise_date: a promise needs a date from today on", "promise_date"
                )
            return {
                "promise_amount": str(form.promise_amount),
                "promise_date": form.promise_date.isoformat(),
            }
        if form.outcome is DeskOutcome.PLAN:
            if it.offer is None:
                raise Refused(422, "outcome: this contact carries no offer to agree", "outcome")
            if form.kind not in ("installments", "extension", "settlement"):
                raise Refused(422, "kind: choose installments, extension or settlement", "kind")
            return {
                "offer_id": it.offer.get("offer_id"),
                "kind": form.kind,
                "installments": form.installments if form.kind == "installments" else None,
                "extension_days": form.extension_days if form.kind == "extension" else None,
                "settlement_percent": (
                    str(form.settlement_percent) if form.kind == "settlement" else None
                ),
            }
        if form.outcome is DeskOutcome.HARDSHIP:
            if not form.hardship_reason:
                raise Refused(
                    422, "hardship_reason: say why the customer cannot pay", "hardship_reason"
                )
            until = form.hardship_until.isoformat() if form.hardship_until else None
            return {"hardship_reason": form.hardship_reason, "hardship_until": until}
        if form.outcome is DeskOutcome.CALLBACK:
            if form.callback_at is None or form.callback_at <= now:
                raise Refused(422, "callback_at: a callback needs a time ahead", "callback_at")
            return {"callback_at": form.callback_at.isoformat()}
        return {}

    async def _report(
        self,
        uow: UnitOfWork,
        it: Item,
        username: str,
        outcome: DeskOutcome,
        detail: dict[str, Any],
        now: datetime,
    ) -> str:
        event_id = str(uuid.uuid4())
        body = queues.status_body(event_id, it.contact_id, outcome, now, detail)
        status = str(body["status"])
        await work.record_outcome(uow.session, event_id, it, username, outcome, status, detail, now)
        await work.enqueue_webhook(uow.session, event_id, it.customer_id, body, now, wall_now())
        return event_id

    # --- approvals -------------------------------------------------------------------------

    async def decide(self, uow: UnitOfWork, person: Person, approval_id: str, approve: bool) -> str:
        if person.role not in people.APPROVES:
            raise Refused(403, "only a team lead or a manager approves plans")
        found = await work.lock_approval(uow.session, approval_id)
        if found is None:
            raise Refused(404, "no such approval")
        if found["status"] != "pending":
            raise Refused(409, f"this approval is already {found['status']}")
        it = await work.item(uow.session, found["contact_id"], lock=True)
        assert it is not None
        terms = found["terms"]
        if approve:
            plan = Terms(
                terms["kind"],
                terms.get("installments"),
                terms.get("extension_days"),
                Decimal(terms["settlement_percent"]) if terms.get("settlement_percent") else None,
            )
            decision = people.decide_plan(plan, person.authority, it.offer)
            if decision.verdict != "agree":
                raise Refused(403, "; ".join(decision.reasons) or "beyond your authority")
        now = self._clock.now()
        requester = found["requested_by"]
        # declined: the conversation happened, without a plan
        outcome = DeskOutcome.PLAN if approve else DeskOutcome.RIGHT_PARTY
        await self._report(uow, it, requester, outcome, terms if approve else {}, now)
        await work.decide_approval(
            uow.session, approval_id, "approved" if approve else "declined", person.username, now
        )
        await work.finish(uow.session, it.contact_id, requester, outcome, now)
        return "approved" if approve else "declined"

    # --- the clock -------------------------------------------------------------------------

    async def clock_moved(self, uow: UnitOfWork, now: datetime) -> None:
        """Lapsed holds go back to the queue; what nobody worked by its ``not_after`` expires
        and is reported so (the scheduler plans the contact again)."""
        expired = await work.expire(uow.session, now)  # first: a lapsed hold expires as held
        await work.release_lapsed_locks(uow.session, now)
        for it in expired:
            event_id = f"expired:{it.contact_id}"
            body = {
                "event_id": event_id,
                "contact_id": it.contact_id,
                "status": "expired",
                "occurred_at": it.not_after.isoformat(),
            }
            await work.enqueue_webhook(uow.session, event_id, it.customer_id, body, now, wall_now())

    async def pending(self, uow: UnitOfWork, now: datetime) -> int:
        return await work.unsent_webhooks(uow.session)

    # --- context from the topics -----------------------------------------------------------

    async def customers(self, uow: UnitOfWork, found: Sequence[CustomerUpserted]) -> None:
        now = self._clock.now()
        latest = {c.customer_id: c for c in found}.values()
        await work.upsert_customers(
            uow.session,
            [
                {
                    "customer_id": c.customer_id,
                    "full_name": c.full_name,
                    "national_id_last4": c.national_id[-4:] if c.national_id else None,
                    "phone": c.phone,
                    "locale": c.locale,
                    "country": c.country,
                    "timezone": c.timezone,
                    "updated_at": now,
                }
                for c in latest
            ],
        )

    async def promises(
        self, uow: UnitOfWork, settled: Sequence[PromiseKept | PromiseBroken]
    ) -> None:
        for kept in (True, False):
            ids = [
                p.promise_id.removeprefix(DESK_PROMISE)
                for p in settled
                if p.promise_id
                and p.promise_id.startswith(DESK_PROMISE)
                and isinstance(p, PromiseKept) == kept
            ]
            if ids:
                await work.mark_promises(uow.session, ids, kept)
        broken = [p.account_id for p in settled if isinstance(p, PromiseBroken)]
        if broken:
            await work.promises_broken(uow.session, sorted(set(broken)), self._clock.now())
        counts = Counter(
            "promises_kept" if isinstance(p, PromiseKept) else "promises_broken" for p in settled
        )
        await work.add_figures(uow.session, {k: Decimal(v) for k, v in counts.items()})

    async def count(self, uow: UnitOfWork, events: Sequence[Any]) -> None:
        """The campaign's figures, live: what the ledger announces, counted."""
        counts: Counter[str] = Counter()
        amounts: dict[str, Decimal] = {}
        for e in events:
            if isinstance(e, PaymentReceived):
                counts["payments"] += 1
                key = f"paid_{e.currency}"
                amounts[key] = amounts.get(key, Decimal(0)) + e.amount
            elif isinstance(e, AccountCured):
                counts["accounts_cured"] += 1
            elif isinstance(e, PlanActivated):
                counts["plans_activated"] += 1
            elif isinstance(e, PlanBroken):
                counts["plans_broken"] += 1
            elif isinstance(e, PlanCompleted):
                counts["plans_completed"] += 1
        await work.add_figures(uow.session, {k: Decimal(v) for k, v in counts.items()} | amounts)


def _only(person: Person, channel: str) -> Person:
    return Person(
        person.username,
        person.display_name,
        person.role,
        person.team,
        person.languages,
        person.countries,
        (channel,),
        person.authority,
    )


def _term_field(terms: Terms) -> str:
    return {
        "installments": "installments",
        "extension": "extension_days",
        "settlement": "settlement_percent",
    }.get(terms.kind, "kind")


def handlers(desk: Desk) -> Handlers:
    registry = Handlers()
    registry.runs(CustomerUpserted, desk.customers)
    registry.runs(PromiseKept, desk.promises)
    registry.runs(PromiseBroken, desk.promises)
    for payload in (PaymentReceived, AccountCured, PlanActivated, PlanBroken, PlanCompleted):
        registry.runs(payload, desk.count)
    return registry
