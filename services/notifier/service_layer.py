"""The notifier's use cases. Handlers and webhook processing take the unit of work they run in and
never commit; the sender owns its two short transactions around each partner call.

Sending, in three steps so that nothing is lost and nothing is sent twice:
1. ``contact.requested`` is recorded as a *delivery* (the send intent), in the same transaction
   as the inbox claim; a redelivered request finds the row and changes nothing;
2. the sender claims due deliveries (``FOR UPDATE SKIP LOCKED``) and commits the claim, then
   calls the partner with ``Idempotency-Key: <contact_id>`` outside any transaction;
3. it records the result and emits ``contact.attempted``. A crash between 2 and 3 leaves the
   claim stale; the delivery is claimed again and re-sent with the same key, which the partner
   answers without sending again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

import httpx
from httpx_aiohttp import HttpxAiohttpClient
from sqlalchemy import text

from services.notifier.adapters import ADAPTERS, Message
from services.notifier.domain import replies
from services.notifier.domain.breaker import Breaker
from services.notifier.domain.offers import Terms, plan_installments
from services.notifier.domain.templates import Renderer, UnknownTemplate, offer_text
from services.notifier.settings import Partner
from shared.clock import Clock
from shared.consumer import Handlers, PermanentError
from shared.db import UnitOfWork, UnitOfWorkFactory
from shared.envelope import new_event
from shared.events import (
    DISPOSITIONS,
    ContactAttempted,
    ContactRequested,
    CustomerOptedOut,
    CustomerUpserted,
    DisputeOpened,
    NoticeDelivered,
    NoticeReturned,
    Payload,
    PlanAgreed,
    PlanInstallment,
    PromiseMade,
)
from shared.fingerprint import fingerprint

log = logging.getLogger(__name__)
SOURCE = "/arrears/notifier"
ADDRESS = {"sms": "phone", "voice": "phone", "email": "email", "letter": "postal_address"}
ADDRESS["field_visit"] = "postal_address"
NOTICES = {"bureau_pre_notice", "validation_notice"}
STALE_CLAIM = timedelta(seconds=60)  # a claim this old belongs to a process that died
OFFER_REPLY_WINDOW = timedelta(days=30)
# Partner statuses (webhooks) and what they mean for the delivery.
DELIVERY_STATUS = {"delivered": "delivered", "failed": "failed", "bounced": "failed"}
DELIVERY_STATUS["returned"] = "returned"
STATUSES = set(DELIVERY_STATUS) | DISPOSITIONS


Row = Mapping[Any, Any]  # a database row (SQLAlchemy RowMapping) or a plain dict


def wall() -> datetime:
    # Wall time on purpose: retry back-off and stale claims are operational, not business time.
    return datetime.now(UTC)


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


@dataclass(frozen=True)
class InboundReply:
    event_id: str
    channel: str
    sender: str  # the customer's address, never logged
    text: str


class Notifier:
    def __init__(
        self,
        clock: Clock,
        renderer: Renderer,
        partners: Sequence[Partner],
        fingerprint_key: str,
        creditor: str,
        retry_max_seconds: float = 30.0,
    ) -> None:
        self._clock = clock
        # set when there may be something to send before the next poll: new requests
        # committed, or the clock moved
        self.wake = asyncio.Event()
        self._renderer = renderer
        self.partners = {p.name: p for p in partners}
        self._key = fingerprint_key
        self._creditor = creditor
        self._breakers = {p.name: Breaker() for p in partners}
        self._retry_max = retry_max_seconds

    # --- state from core-banking.events ------------------------------------------------------

    async def upsert_customers(
        self, uow: UnitOfWork, customers: Sequence[CustomerUpserted]
    ) -> None:
        latest = list({c.customer_id: c for c in customers}.values())
        await uow.session.execute(
            text("""
                INSERT INTO customer (customer_id, full_name, phone, email, postal_address,
                                      phone_ref, email_ref, postal_ref, locale, country,
                                      updated_at)
                SELECT *, CAST(:now AS timestamptz)
                FROM unnest(CAST(:ids AS text[]), CAST(:names AS text[]),
                            CAST(:phones AS text[]), CAST(:emails AS text[]),
                            CAST(:postals AS text[]), CAST(:phone_refs AS text[]),
                            CAST(:email_refs AS text[]), CAST(:postal_refs AS text[]),
                            CAST(:locales AS text[]), CAST(:countries AS text[]))
                ON CONFLICT (customer_id) DO UPDATE
                SET full_name = excluded.full_name, phone = excluded.phone,
                    email = excluded.email, postal_address = excluded.postal_address,
                    phone_ref = excluded.phone_ref, email_ref = excluded.email_ref,
                    postal_ref = excluded.postal_ref, locale = excluded.locale,
                    country = excluded.country, updated_at = excluded.updated_at
            """),
            {
                "ids": [c.customer_id for c in latest],
                "names": [c.full_name for c in latest],
                "phones": [c.phone for c in latest],
                "emails": [c.email for c in latest],
                "postals": [c.postal_address for c in latest],
                "phone_refs": [fingerprint("phone", c.phone, self._key) for c in latest],
                "email_refs": [fingerprint("email", c.email, self._key) for c in latest],
                "postal_refs": [fingerprint("postal", c.postal_address, self._key) for c in latest],
                "locales": [c.locale for c in latest],
                "countries": [c.country for c in latest],
                "now": self._clock.now(),
            },
        )

    # --- contact.requested -------------------------------------------------------------------

    def route(self, channel: str, country: str | None) -> Partner | None:
        return next((p for p in self.partners.values() if p.serves(channel, country)), None)

    async def record_requests(self, uow: UnitOfWork, requests: Sequence[ContactRequested]) -> None:
        """The send intent, one row per contact; a request seen before changes nothing."""
        countries: dict[str, str | None] = dict(
            (
                await uow.session.execute(
                    text("""
                        SELECT customer_id, country FROM customer
                        WHERE customer_id = ANY(CAST(:ids AS text[]))
                    """),
                    {"ids": sorted({r.customer_id for r in requests})},
                )
            ).all()
        )
        rows = []
        for r in requests:
            if not self._renderer.has(r.template, r.channel):
                raise PermanentError(f"template: no template {r.template} for channel {r.channel}")
            partner = self.route(r.channel, countries.get(r.customer_id))
            if partner is None:
                raise PermanentError(f"channel: no partner serves {r.channel} for this country")
            rows.append((r, partner.name))
        now = self._clock.now()
        await uow.session.execute(
            text("""
                INSERT INTO delivery (contact_id, account_id, customer_id, channel, template,
                                      partner, locale, not_before, not_after, offer,
                                      total_overdue, currency, days_past_due, created_at)
                SELECT *, CAST(:now AS timestamptz)
                FROM unnest(CAST(:ids AS text[]), CAST(:accounts AS text[]),
                            CAST(:customers AS text[]), CAST(:channels AS text[]),
                            CAST(:templates AS text[]), CAST(:partners AS text[]),
                            CAST(:locales AS text[]), CAST(:not_before AS timestamptz[]),
                            CAST(:not_after AS timestamptz[]), CAST(:offers AS jsonb[]),
                            CAST(:overdue AS numeric[]), CAST(:currencies AS text[]),
                            CAST(:dpd AS int[]))
                ON CONFLICT (contact_id) DO NOTHING
            """),
            {
                "ids": [r.contact_id for r, _ in rows],
                "accounts": [r.account_id for r, _ in rows],
                "customers": [r.customer_id for r, _ in rows],
                "channels": [r.channel for r, _ in rows],
                "templates": [r.template for r, _ in rows],
                "partners": [p for _, p in rows],
                "locales": [r.locale for r, _ in rows],
                "not_before": [r.not_before for r, _ in rows],
                "not_after": [r.not_after for r, _ in rows],
                "offers": [r.offer.model_dump_json() if r.offer else None for r, _ in rows],
                "overdue": [r.total_overdue for r, _ in rows],
                "currencies": [r.currency for r, _ in rows],
                "dpd": [r.days_past_due for r, _ in rows],
                "now": now,
            },
        )
        uow.after_commit(self.wake.set)

    # --- sending -----------------------------------------------------------------------------

    async def clock_moved(self, uow: UnitOfWork, now: datetime) -> None:
        self.wake.set()

    async def send_due(
        self,
        units: UnitOfWorkFactory,
        http: httpx.AsyncClient,
        limit: int = 128,
        concurrency: int = 16,
    ) -> int:
        """One round: expire what is past its window, claim what is due, send, record."""
        now = self._clock.now()
        async with units() as uow:
            expired = await uow.session.execute(
                text("""
                    UPDATE delivery SET status = 'expired', outcome = 'expired',
                           last_error = 'not sent before not_after'
                    WHERE contact_id IN (
                      SELECT contact_id FROM delivery
                      WHERE status = 'pending' AND not_after <= :now
                      LIMIT 1000 FOR UPDATE SKIP LOCKED)
                    RETURNING contact_id, account_id, customer_id, channel
                """),
                {"now": now},
            )
            for row in expired.mappings():
                self._attempted(uow, row, "expired", now)
            claimed = (
                (
                    await uow.session.execute(
                        text("""
                        UPDATE delivery d
                        SET status = 'sending', claimed_at = :wall, attempts = d.attempts + 1
                        FROM (
                          SELECT contact_id FROM delivery
                          WHERE (status = 'pending' AND not_before <= :now AND not_after > :now
                                 AND (retry_at IS NULL OR retry_at <= :wall))
                             OR (status = 'sending' AND claimed_at < :stale)
                          ORDER BY not_before LIMIT :limit
                          FOR UPDATE SKIP LOCKED
                        ) due
                        WHERE d.contact_id = due.contact_id
                        RETURNING d.*
                    """),
                        {"now": now, "wall": wall(), "stale": wall() - STALE_CLAIM, "limit": limit},
                    )
                )
                .mappings()
                .all()
            )
            customers = await self._customers(uow, {r["customer_id"] for r in claimed})
            await uow.commit()
        if not claimed:
            return 0
        gate = asyncio.Semaphore(concurrency)

        async def one(row: Row) -> tuple[str, str, str | None, str | None]:
            async with gate:
                return await self._send_one(http, dict(row), customers.get(row["customer_id"]))

        results = await asyncio.gather(*(one(row) for row in claimed))
        async with units() as uow:
            await self._record_sends(uow, claimed, results)
            await uow.commit()
        return len(claimed)

    async def unsent(self, uow: UnitOfWork, now: datetime) -> int:
        """Deliveries the sender still has to send, expire or finish at ``now``."""
        return int(
            (
                await uow.session.execute(
                    text("""
                        SELECT count(*) FROM delivery
                        WHERE status = 'sending' OR (status = 'pending' AND not_before <= :now)
                    """),
                    {"now": now},
                )
            ).scalar_one()
        )

    async def _customers(self, uow: UnitOfWork, ids: set[str]) -> dict[str, Row]:
        if not ids:
            return {}
        rows = await uow.session.execute(
            text("SELECT * FROM customer WHERE customer_id = ANY(CAST(:ids AS text[]))"),
            {"ids": sorted(ids)},
        )
        return {r["customer_id"]: r for r in rows.mappings()}

    async def _send_one(
        self, http: httpx.AsyncClient, row: dict[str, Any], customer: Row | None
    ) -> tuple[str, str, str | None, str | None]:
        """(verdict, detail, partner message id, rendered digest); verdict is sent, retry,
        failed or expired. Never raises: every failure is a verdict."""
        if self._clock.now() >= row["not_after"]:
            return "expired", "not sent before not_after", None, None
        partner = self.partners.get(row["partner"])
        if partner is None:
            return "failed", "partner no longer configured", None, None
        address_field = ADDRESS[row["channel"]]
        address = customer.get(address_field) if customer else None
        if not address:
            # The customer's data may still be on its way: retry until the window closes.
            return "retry", f"no {address_field} on file", None, None
        breaker = self._breakers[partner.name]
        if not breaker.allows(time.monotonic()):
            return "retry", "circuit open", None, None
        overdue = row["total_overdue"] or Decimal(0)
        currency = row["currency"] or ""
        locale = row["locale"] or (customer or {}).get("locale")
        context = {
            "full_name": (customer or {}).get("full_name") or "",
            "first_name": ((customer or {}).get("full_name") or "").split(" ")[0],
            "postal_address": (customer or {}).get("postal_address") or "",
            "creditor": self._creditor,
            "account_tail": row["account_id"][-4:],
            "overdue": overdue,
            "currency": currency,
            "days_past_due": row["days_past_due"] or 0,
            "offer_text": offer_text(row["offer"], locale or "en-US", overdue, currency),
        }
        try:
            rendered = self._renderer.render(row["template"], row["channel"], locale, context)
        except UnknownTemplate as exc:
            return "failed", str(exc), None, None
        answer = await ADAPTERS[row["channel"]].send(
            http, partner, Message(row["contact_id"], address, rendered, row["not_after"])
        )
        if answer.transient:
            breaker.failed(time.monotonic())
        elif answer.verdict != "retry":
            breaker.succeeded()
        return answer.verdict, answer.detail, answer.message_id, rendered.digest

    async def _record_sends(
        self,
        uow: UnitOfWork,
        rows: Sequence[Row],
        results: Sequence[tuple[str, str, str | None, str | None]],
    ) -> None:
        """A round's results in a few statements: retries back to pending with their back-off,
        the rest settled, their outcomes recorded and announced."""
        now = self._clock.now()
        retry = [(r, res) for r, res in zip(rows, results, strict=True) if res[0] == "retry"]
        done = [(r, res) for r, res in zip(rows, results, strict=True) if res[0] != "retry"]
        if retry:
            await uow.session.execute(
                text("""
                    UPDATE delivery d
                    SET status = 'pending', retry_at = u.at, last_error = u.e,
                        rendered = coalesce(u.r, d.rendered)
                    FROM unnest(CAST(:ids AS text[]), CAST(:at AS timestamptz[]),
                                CAST(:e AS text[]), CAST(:r AS text[])) AS u (id, at, e, r)
                    WHERE d.contact_id = u.id AND d.status = 'sending'
                """),
                {
                    "ids": [r["contact_id"] for r, _ in retry],
                    "at": [
                        wall() + timedelta(seconds=self._backoff(r["attempts"])) for r, _ in retry
                    ],
                    "e": [res[1] for _, res in retry],
                    "r": [res[3] for _, res in retry],
                },
            )
        if not done:
            return
        changed = await uow.session.execute(
            text("""
                UPDATE delivery d
                SET status = u.s, outcome = u.s, message_id = u.m, rendered = u.r,
                    last_error = nullif(u.e, ''),
                    sent_at = CASE WHEN u.s = 'sent' THEN CAST(:now AS timestamptz) END,
                    address_ref = (
                      SELECT CASE d.channel
                        WHEN 'email' THEN c.email_ref
                        WHEN 'letter' THEN c.postal_ref
                        WHEN 'field_visit' THEN c.postal_ref
                        ELSE c.phone_ref END
                      FROM customer c WHERE c.customer_id = d.customer_id)
                FROM unnest(CAST(:ids AS text[]), CAST(:s AS text[]), CAST(:m AS text[]),
                            CAST(:r AS text[]), CAST(:e AS text[])) AS u (id, s, m, r, e)
                WHERE d.contact_id = u.id AND d.status = 'sending'
                RETURNING d.contact_id, d.account_id, d.customer_id, d.channel, d.address_ref,
                          d.status, d.last_error
            """),
            {
                "ids": [r["contact_id"] for r, _ in done],
                "s": [res[0] for _, res in done],
                "m": [res[2] for _, res in done],
                "r": [res[3] for _, res in done],
                "e": [res[1] for _, res in done],
                "now": now,
            },
        )
        settled = [dict(row) for row in changed.mappings()]
        for row in settled:
            self._attempted(uow, row, row["status"], now)
        if settled:
            await uow.session.execute(
                text("""
                    INSERT INTO outcome (contact_id, account_id, channel, outcome, detail, at)
                    SELECT id, a, ch, o, CASE WHEN e IS NULL THEN '{}'::jsonb
                                              ELSE jsonb_build_object('detail', e) END,
                           CAST(:now AS timestamptz)
                    FROM unnest(CAST(:ids AS text[]), CAST(:a AS text[]), CAST(:ch AS text[]),
                                CAST(:o AS text[]), CAST(:e AS text[])) AS u (id, a, ch, o, e)
                """),
                {
                    "ids": [r["contact_id"] for r in settled],
                    "a": [r["account_id"] for r in settled],
                    "ch": [r["channel"] for r in settled],
                    "o": [r["status"] for r in settled],
                    "e": [r["last_error"] for r in settled],
                    "now": now,
                },
            )

    def _backoff(self, attempts: int) -> float:
        """Exponential, capped, with jitter so that retries after an outage do not all land
        at once."""
        base: float = min(self._retry_max, 0.5 * 2.0 ** min(attempts, 12))
        return base * (0.5 + random.random())

    # --- webhooks ----------------------------------------------------------------------------

    async def seen(self, uow: UnitOfWork, partner: str, event_id: str, kind: str) -> bool:
        """Records the partner's event id; False if it was seen before (a replay: no effect)."""
        fresh = await uow.session.execute(
            text("""
                INSERT INTO webhook_event (partner, event_id, kind, received_at)
                VALUES (:p, :e, :k, :now) ON CONFLICT DO NOTHING RETURNING 1
            """),
            {"p": partner, "e": event_id, "k": kind, "now": self._clock.now()},
        )
        return fresh.first() is not None

    async def orphaned(self, uow: UnitOfWork, partner: str, event_id: str) -> None:
        await uow.session.execute(
            text("UPDATE webhook_event SET orphaned = true WHERE partner = :p AND event_id = :e"),
            {"p": partner, "e": event_id},
        )

    async def status_reported(self, uow: UnitOfWork, partner: str, report: StatusReport) -> str:
        """Apply a partner's status report. Returns applied, duplicate or orphaned."""
        if not await self.seen(uow, partner, report.event_id, "status"):
            return "duplicate"
        delivery = (
            (
                await uow.session.execute(
                    text(
                        "SELECT * FROM delivery WHERE contact_id = :c AND partner = :p FOR UPDATE"
                    ),
                    {"c": report.contact_id, "p": partner},
                )
            )
            .mappings()
            .first()
        )
        if delivery is None:
            await self.orphaned(uow, partner, report.event_id)
            return "orphaned"
        at = report.occurred_at or self._clock.now()
        status = DELIVERY_STATUS.get(
            report.status, "delivered" if report.status in DISPOSITIONS else delivery["status"]
        )
        await uow.session.execute(
            text("UPDATE delivery SET status = :s, outcome = :o WHERE contact_id = :c"),
            {"s": status, "o": report.status, "c": report.contact_id},
        )
        detail: dict[str, Any] = {}
        if report.status == "promise_to_pay" and report.promise_amount and report.promise_date:
            detail = {"amount": str(report.promise_amount), "due_date": str(report.promise_date)}
        await self._outcome(uow, delivery, report.status, detail, at)
        self._attempted(uow, delivery, report.status, at)
        customer, account = delivery["customer_id"], delivery["account_id"]
        if report.status == "promise_to_pay" and report.promise_amount and report.promise_date:
            self._publish(
                uow,
                customer,
                account,
                PromiseMade(
                    account_id=account,
                    amount=report.promise_amount,
                    due_date=report.promise_date,
                    currency=delivery["currency"],
                    promise_id=f"{partner}:{report.event_id}",
                ),
            )
        elif report.status == "dispute":
            self._publish(
                uow,
                customer,
                account,
                DisputeOpened(account_id=account, dispute_id=f"{partner}:{report.event_id}"),
            )
        elif report.status == "plan_accepted":
            await self._plan_from_offer(uow, delivery, at)
        if delivery["template"] in NOTICES and report.status in (
            "delivered",
            "returned",
            "bounced",
        ):
            notice = cast(Any, delivery["template"])
            if report.status == "delivered":
                event: Payload = NoticeDelivered(
                    account_id=account,
                    notice=notice,
                    customer_id=customer,
                    channel=delivery["channel"],
                    delivered_at=at,
                )
            else:
                event = NoticeReturned(
                    account_id=account,
                    notice=notice,
                    customer_id=customer,
                    channel=delivery["channel"],
                    returned_at=at,
                )
            self._publish(uow, customer, account, event)
        return "applied"

    async def reply_received(self, uow: UnitOfWork, partner: str, reply: InboundReply) -> str:
        if not await self.seen(uow, partner, reply.event_id, "inbound"):
            return "duplicate"
        kind = "phone" if reply.channel == "sms" else "email"
        ref = fingerprint(kind, reply.sender, self._key)
        column = "phone_ref" if kind == "phone" else "email_ref"
        customer = await uow.session.scalar(
            text(f"SELECT customer_id FROM customer WHERE {column} = :ref LIMIT 1"),  # noqa: S608 - a column name from a two-way choice
            {"ref": ref},
        )
        if customer is None:
            await self.orphaned(uow, partner, reply.event_id)
            return "orphaned"
        meaning = replies.intent(reply.text)
        now = self._clock.now()
        latest = (
            (
                await uow.session.execute(
                    text("""
                    SELECT * FROM delivery
                    WHERE customer_id = :c AND channel = :ch AND status IN ('sent', 'delivered')
                    ORDER BY sent_at DESC NULLS LAST LIMIT 1
                """),
                    {"c": customer, "ch": reply.channel},
                )
            )
            .mappings()
            .first()
        )
        await self._outcome(
            uow,
            latest or {"contact_id": None, "account_id": None, "channel": reply.channel},
            f"reply:{meaning}",
            {},
            now,
        )
        if meaning == "opt_out":
            self._publish(
                uow,
                customer,
                customer,
                CustomerOptedOut(customer_id=customer, channel=reply.channel, address_ref=ref),
            )
        elif meaning == "dispute" and latest is not None:
            self._publish(
                uow,
                customer,
                latest["account_id"],
                DisputeOpened(
                    account_id=latest["account_id"], dispute_id=f"{partner}:{reply.event_id}"
                ),
            )
        elif meaning == "accept_offer":
            offered = (
                (
                    await uow.session.execute(
                        text("""
                        SELECT * FROM delivery
                        WHERE customer_id = :c AND channel = :ch AND offer IS NOT NULL
                          AND status IN ('sent', 'delivered') AND sent_at >= :since
                        ORDER BY sent_at DESC LIMIT 1
                    """),
                        {"c": customer, "ch": reply.channel, "since": now - OFFER_REPLY_WINDOW},
                    )
                )
                .mappings()
                .first()
            )
            if offered is not None:
                await self._plan_from_offer(uow, offered, now)
        return "applied"

    async def _plan_from_offer(self, uow: UnitOfWork, delivery: Row, at: datetime) -> None:
        offer = delivery["offer"]
        owed = delivery["total_overdue"]
        if not offer or not owed or owed <= 0:
            return
        terms = Terms(
            kind=offer["kind"],
            installments=offer.get("installments"),
            extension_days=offer.get("extension_days"),
            settlement_percent=Decimal(str(offer["settlement_percent"]))
            if offer.get("settlement_percent") is not None
            else None,
        )
        schedule = plan_installments(terms, owed, at.date())
        self._publish(
            uow,
            delivery["customer_id"],
            delivery["account_id"],
            PlanAgreed(
                plan_id=f"plan-{delivery['contact_id']}",
                account_id=delivery["account_id"],
                kind=terms.kind,
                installments=[PlanInstallment(due_date=d, amount=a) for d, a in schedule],
            ),
        )

    # --- records -----------------------------------------------------------------------------

    async def contacts(self, uow: UnitOfWork, account_id: str) -> list[dict[str, Any]]:
        rows = await uow.session.execute(
            text("""
                SELECT d.contact_id, d.channel, d.template, d.partner, d.status, d.outcome,
                       d.attempts, d.not_before, d.not_after, d.sent_at, d.message_id,
                       d.rendered, d.last_error,
                       coalesce((SELECT json_agg(json_build_object(
                                   'outcome', o.outcome, 'at', o.at, 'detail', o.detail)
                                   ORDER BY o.id)
                                 FROM outcome o WHERE o.contact_id = d.contact_id), '[]')
                         AS outcomes
                FROM delivery d WHERE d.account_id = :a ORDER BY d.created_at, d.contact_id
            """),
            {"a": account_id},
        )
        return [dict(r) for r in rows.mappings()]

    # --- helpers -----------------------------------------------------------------------------

    async def _outcome(
        self,
        uow: UnitOfWork,
        delivery: Row,
        outcome: str,
        detail: Row,
        at: datetime,
    ) -> None:
        await uow.session.execute(
            text("""
                INSERT INTO outcome (contact_id, account_id, channel, outcome, detail, at)
                VALUES (:c, :a, :ch, :o, CAST(:d AS jsonb), :at)
            """),
            {
                "c": delivery["contact_id"],
                "a": delivery["account_id"],
                "ch": delivery["channel"],
                "o": outcome,
                "d": json.dumps(dict(detail)),
                "at": at,
            },
        )

    def _attempted(self, uow: UnitOfWork, row: Row, outcome: str, at: datetime) -> None:
        self._publish(
            uow,
            row["customer_id"],
            row["account_id"],
            ContactAttempted(
                contact_id=row["contact_id"],
                account_id=row["account_id"],
                channel=row["channel"],
                outcome=outcome,
                attempted_at=at,
                customer_id=row["customer_id"],
                address_ref=row.get("address_ref"),
            ),
        )

    def _publish(self, uow: UnitOfWork, customer_id: str, subject: str, data: Payload) -> None:
        uow.publish(
            new_event(data, source=SOURCE, key=customer_id, time=self._clock.now(), subject=subject)
        )


def sender(
    notifier: Notifier, concurrency: int, poll_seconds: float
) -> Callable[[UnitOfWorkFactory, asyncio.Event], Awaitable[None]]:
    """The sending loop the runtime runs beside the consumers."""

    async def run(units: UnitOfWorkFactory, stop: asyncio.Event) -> None:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        # The aiohttp transport: httpx's own pool spends ~4x the CPU a request under
        # concurrency (encode/httpx#3215), which made the sender the notifier's bottleneck.
        async with HttpxAiohttpClient(limits=limits) as http:
            while not stop.is_set():
                notifier.wake.clear()  # before the round: a wake during it starts the next
                try:
                    busy = await notifier.send_due(
                        units, http, limit=concurrency * 4, concurrency=concurrency
                    )
                except Exception:
                    log.exception("send round failed; retrying")
                    busy = 0
                if not busy:
                    waiters = [
                        asyncio.ensure_future(notifier.wake.wait()),
                        asyncio.ensure_future(stop.wait()),
                    ]
                    await asyncio.wait(waiters, timeout=poll_seconds, return_when="FIRST_COMPLETED")
                    for waiter in waiters:
                        waiter.cancel()

    return run


def handlers(notifier: Notifier) -> Handlers:
    """What the notifier does with each payload it reads."""
    registry = Handlers()
    registry.runs(CustomerUpserted, notifier.upsert_customers)
    registry.runs(ContactRequested, notifier.record_requests)
    return registry
