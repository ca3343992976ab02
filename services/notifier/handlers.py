"""The notifier's use cases: customers' contact data from core banking, send intents from the
scheduler, and what partners report (status webhooks, inbound replies). Thin: load, decide
(``domain/status.py``, ``domain/replies.py``, ``domain/offers.py``), persist. Each takes the unit
of work it runs in and never commits."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from services.notifier import announce, repository
from services.notifier.domain import replies
from services.notifier.domain.offers import Terms, chosen_terms, plan_installments
from services.notifier.domain.status import meaning
from services.notifier.domain.templates import Renderer
from services.notifier.repository import Customer, Delivery
from services.notifier.settings import DESK_PARTNER, Partner
from shared.clock import Clock
from shared.consumer import Handlers, PermanentError
from shared.db import UnitOfWork
from shared.events import (
    CallbackRequested,
    Channel,
    ContactRequested,
    CustomerOptedOut,
    CustomerUpserted,
    DisputeOpened,
    HardshipReason,
    HardshipReported,
    NoticeDelivered,
    NoticeReturned,
    Payload,
    PlanAgreed,
    PlanInstallment,
    PromiseMade,
)
from shared.fingerprint import fingerprint

OFFER_REPLY_WINDOW = timedelta(days=30)


@dataclass(frozen=True)
class StatusReport:
    event_id: str
    contact_id: str
    status: str
    occurred_at: datetime | None = None
    message_id: str | None = None
    promise_amount: Decimal | None = None
    promise_date: Any = None
    offer_id: str | None = None
    terms: Terms | None = None  # the terms the customer chose within the offer's limits
    hardship_reason: HardshipReason | None = None
    hardship_until: date | None = None
    callback_at: datetime | None = None


@dataclass(frozen=True)
class InboundReply:
    event_id: str
    channel: Channel
    sender: str  # the customer's address, never logged
    text: str


class Notifier:
    def __init__(
        self,
        clock: Clock,
        renderer: Renderer,
        partners: Sequence[Partner],
        fingerprint_key: str,
    ) -> None:
        self._clock = clock
        # set when there may be something to send before the next poll: new requests
        # committed, or the clock moved
        self.wake = asyncio.Event()
        self._renderer = renderer
        self.partners = {p.name: p for p in partners}
        self._key = fingerprint_key

    # --- state from core-banking.events ------------------------------------------------------

    async def upsert_customers(
        self, uow: UnitOfWork, customers: Sequence[CustomerUpserted]
    ) -> None:
        latest = list({c.customer_id: c for c in customers}.values())
        now = self._clock.now()
        rows = [
            Customer(
                c.customer_id,
                c.full_name,
                c.phone,
                c.email,
                c.postal_address,
                fingerprint("phone", c.phone, self._key),
                fingerprint("email", c.email, self._key),
                fingerprint("postal", c.postal_address, self._key),
                c.locale,
                c.country,
                now,
                c.timezone,
                fingerprint("birth", c.birth_date.isoformat() if c.birth_date else None, self._key),
                fingerprint("nid4", c.national_id[-4:] if c.national_id else None, self._key),
            )
            for c in latest
        ]
        await repository.upsert_customers(uow.session, rows, now)

    # --- contact.requested -------------------------------------------------------------------

    def route(
        self, channel: str, country: str | None, treatment: str | None = None
    ) -> Partner | None:
        return next(
            (p for p in self.partners.values() if p.serves(channel, country, treatment)), None
        )

    async def record_requests(self, uow: UnitOfWork, requests: Sequence[ContactRequested]) -> None:
        """The send intent, one row per contact; a request seen before changes nothing."""
        countries = await repository.countries(uow.session, list({r.customer_id for r in requests}))
        rows = []
        for r in requests:
            if not self._renderer.has(r.template, r.channel):
                raise PermanentError(f"template: no template {r.template} for channel {r.channel}")
            # the scheduler's word first: this service may not have read the customer yet
            country = r.country or countries.get(r.customer_id)
            partner = self.route(r.channel, country, r.treatment)
            if partner is None:
                raise PermanentError(f"channel: no partner serves {r.channel} for this country")
            rows.append((r, partner.name))
        await repository.record_requests(uow.session, rows, self._clock.now())
        uow.after_commit(self.wake.set)

    async def clock_moved(self, uow: UnitOfWork, now: datetime) -> None:
        self.wake.set()

    async def unsent(self, uow: UnitOfWork, now: datetime) -> int:
        """Deliveries the sender still has to send, expire or finish at ``now``."""
        return await repository.unsent(uow.session, now)

    # --- webhooks ----------------------------------------------------------------------------

    async def status_reported(self, uow: UnitOfWork, partner: str, report: StatusReport) -> str:
        """Apply a partner's status report. Returns applied, duplicate or orphaned."""
        now = self._clock.now()
        if not await repository.webhook_seen(uow.session, partner, report.event_id, "status", now):
            return "duplicate"
        delivery = await repository.lock_delivery(uow.session, report.contact_id, partner)
        if delivery is None:
            await repository.orphaned(uow.session, partner, report.event_id)
            return "orphaned"
        at = report.occurred_at or now
        means = meaning(
            report.status,
            delivery.status,
            delivery.template,
            report.promise_amount,
            report.promise_date is not None,
        )
        await repository.set_status(
            uow.session, delivery.contact_id, means.delivery_status, report.status
        )
        detail: dict[str, Any] = {}
        if means.promise:
            detail = {"amount": str(report.promise_amount), "due_date": str(report.promise_date)}
        await self._outcome(uow, delivery, report.status, detail, at)
        announce.attempted(uow, self._clock, delivery, report.status, at)
        customer, account = delivery.customer_id, delivery.account_id
        if means.promise and report.promise_amount is not None:
            self._publish(
                uow,
                customer,
                account,
                PromiseMade(
                    account_id=account,
                    amount=report.promise_amount,
                    due_date=report.promise_date,
                    currency=delivery.currency,
                    promise_id=f"{partner}:{report.event_id}",
                ),
            )
        elif means.dispute:
            self._publish(
                uow,
                customer,
                account,
                DisputeOpened(account_id=account, dispute_id=f"{partner}:{report.event_id}"),
            )
        elif means.plan:
            self.plan_from_offer(uow, delivery, at, report.terms, delivery.channel)
        elif means.hardship:
            self._publish(
                uow,
                customer,
                account,
                HardshipReported(
                    account_id=account,
                    customer_id=customer,
                    reason=report.hardship_reason or "other",
                    until=report.hardship_until,
                    source="desk" if partner == DESK_PARTNER else delivery.channel,
                ),
            )
        elif means.callback and report.callback_at is not None:
            self._publish(
                uow,
                customer,
                account,
                CallbackRequested(
                    account_id=account,
                    customer_id=customer,
                    channel="voice",
                    at=report.callback_at,
                ),
            )
        if means.notice is not None:
            notice: Any = delivery.template  # one of domain.status.NOTICES
            event: Payload
            if means.notice == "delivered":
                event = NoticeDelivered(
                    account_id=account,
                    notice=notice,
                    customer_id=customer,
                    channel=delivery.channel,
                    delivered_at=at,
                )
            else:
                event = NoticeReturned(
                    account_id=account,
                    notice=notice,
                    customer_id=customer,
                    channel=delivery.channel,
                    returned_at=at,
                )
            self._publish(uow, customer, account, event)
        return "applied"

    async def reply_received(self, uow: UnitOfWork, partner: str, reply: InboundReply) -> str:
        now = self._clock.now()
        if not await repository.webhook_seen(uow.session, partner, reply.event_id, "inbound", now):
            return "duplicate"
        kind = "phone" if reply.channel == "sms" else "email"
        ref = fingerprint(kind, reply.sender, self._key)
        customer = None if ref is None else await repository.customer_by_ref(uow.session, kind, ref)
        if customer is None:
            await repository.orphaned(uow.session, partner, reply.event_id)
            return "orphaned"
        who = await repository.customer(uow.session, customer)
        reading = replies.read(reply.text, now, (who.timezone if who else None) or "UTC")
        intent = reading.intent
        latest = await repository.latest_sent(uow.session, customer, reply.channel)
        await repository.record_outcome(
            uow.session,
            latest.contact_id if latest else None,
            latest.account_id if latest else None,
            reply.channel,
            f"reply:{intent}",
            {},
            now,
        )
        if intent == "opt_out":
            self._publish(
                uow,
                customer,
                customer,
                CustomerOptedOut(customer_id=customer, channel=reply.channel, address_ref=ref),
            )
        elif intent == "dispute" and latest is not None:
            self._publish(
                uow,
                customer,
                latest.account_id,
                DisputeOpened(
                    account_id=latest.account_id, dispute_id=f"{partner}:{reply.event_id}"
                ),
            )
        elif intent == "hardship" and latest is not None and reading.reason is not None:
            self.report_hardship(uow, latest, reading.reason, None, reply.channel)
        elif intent == "callback" and latest is not None and reading.at is not None:
            self._publish(
                uow,
                customer,
                latest.account_id,
                CallbackRequested(
                    account_id=latest.account_id,
                    customer_id=customer,
                    channel="voice",
                    at=reading.at,
                ),
            )
        elif intent == "accept_offer":
            since = now - OFFER_REPLY_WINDOW
            offered = await repository.latest_sent(
                uow.session, customer, reply.channel, offer_since=since
            )
            if offered is not None:
                self.plan_from_offer(uow, offered, now, None, reply.channel)
        return "applied"

    def report_hardship(
        self,
        uow: UnitOfWork,
        delivery: Delivery,
        reason: HardshipReason,
        until: date | None,
        source: str,
    ) -> None:
        self._publish(
            uow,
            delivery.customer_id,
            delivery.account_id,
            HardshipReported(
                account_id=delivery.account_id,
                customer_id=delivery.customer_id,
                reason=reason,
                until=until,
                source=source,
            ),
        )

    def plan_from_offer(
        self,
        uow: UnitOfWork,
        delivery: Delivery,
        at: datetime,
        chosen: Terms | None,
        source: str,
    ) -> PlanAgreed | None:
        """plan.agreed from the delivery's offer, on its own terms or on terms the customer
        chose within its limits (:class:`OfferRefused` otherwise)."""
        offer, owed = delivery.offer, delivery.total_overdue
        if not offer or not owed or owed <= 0:
            return None
        terms = chosen_terms(offer, chosen)
        schedule = plan_installments(terms, owed, at.date())
        agreed = PlanAgreed(
            plan_id=f"plan-{delivery.contact_id}",
            account_id=delivery.account_id,
            kind=terms.kind,
            installments=[PlanInstallment(due_date=d, amount=a) for d, a in schedule],
            hardship=bool(offer.get("hardship")),
            source=source,
        )
        self._publish(uow, delivery.customer_id, delivery.account_id, agreed)
        return agreed

    def now(self) -> datetime:
        return self._clock.now()

    def today(self, timezone: str | None) -> date:
        """The customer's calendar day now."""
        try:
            zone = ZoneInfo(timezone or "UTC")
        except (ZoneInfoNotFoundError, ValueError):
            zone = ZoneInfo("UTC")
        return self._clock.now().astimezone(zone).date()

    async def served_before(self, uow: UnitOfWork, delivery: Delivery, what: str) -> bool:
        return await repository.self_served_before(uow.session, delivery.contact_id, what)

    async def self_served(
        self, uow: UnitOfWork, delivery: Delivery, what: str, detail: dict[str, Any]
    ) -> None:
        """The audit trail of what a customer did on the self-service page."""
        await self._outcome(uow, delivery, f"self_service:{what}", detail, self._clock.now())

    def promise(
        self, uow: UnitOfWork, delivery: Delivery, amount: Decimal, due: date, source: str
    ) -> None:
        self._publish(
            uow,
            delivery.customer_id,
            delivery.account_id,
            PromiseMade(
                account_id=delivery.account_id,
                amount=amount,
                due_date=due,
                currency=delivery.currency,
                promise_id=f"{source}:{delivery.contact_id}:{due.isoformat()}:{amount}",
            ),
        )

    # --- records -----------------------------------------------------------------------------

    async def contacts(self, uow: UnitOfWork, account_id: str) -> list[dict[str, Any]]:
        return await repository.contacts(uow.session, account_id)

    async def _outcome(
        self,
        uow: UnitOfWork,
        delivery: Delivery,
        outcome: str,
        detail: dict[str, Any],
        at: datetime,
    ) -> None:
        await repository.record_outcome(
            uow.session,
            delivery.contact_id,
            delivery.account_id,
            delivery.channel,
            outcome,
            detail,
            at,
        )

    def _publish(self, uow: UnitOfWork, customer_id: str, subject: str, data: Payload) -> None:
        announce.publish(uow, self._clock, customer_id, subject, data)


def handlers(notifier: Notifier) -> Handlers:
    """What the notifier does with each payload it reads."""
    registry = Handlers()
    registry.runs(CustomerUpserted, notifier.upsert_customers)
    registry.runs(ContactRequested, notifier.record_requests)
    return registry
