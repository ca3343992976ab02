"""The sender: the loop beside the consumers that sends due deliveries to their partners.

Sending, in three steps so that nothing is lost and nothing is sent twice:
1. ``contact.requested`` is recorded as a *delivery* (the send intent), in the same transaction
   as the inbox claim; a redelivered request finds the row and changes nothing;
2. the sender claims due deliveries (``FOR UPDATE SKIP LOCKED``) and commits the claim, then
   calls the partner with ``Idempotency-Key: <contact_id>`` outside any transaction;
3. it records the result and emits ``contact.attempted``. A crash between 2 and 3 leaves the
   claim stale; the delivery is claimed again and re-sent with the same key, which the partner
   answers without sending again.
The sender owns its two short transactions around each round of partner calls.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
from httpx_aiohttp import HttpxAiohttpClient

from services.notifier import announce, repository
from services.notifier.adapters.channels import ADAPTERS, Message
from services.notifier.domain.breaker import Breaker
from services.notifier.domain.selfservice import LINK_DAYS, link_token
from services.notifier.domain.templates import Renderer, UnknownTemplate, cents, offer_text
from services.notifier.repository import Customer, Delivery, Result
from services.notifier.settings import Partner
from shared.clock import Clock, wall_now
from shared.db import UnitOfWorkFactory

log = logging.getLogger(__name__)
ADDRESS = {"sms": "phone", "voice": "phone", "email": "email", "letter": "postal_address"}
ADDRESS["field_visit"] = "postal_address"
STALE_CLAIM = timedelta(seconds=60)  # a claim this old belongs to a process that died


@dataclass(frozen=True)
class Links:
    """The signed, expiring self-service links messages carry."""

    secret: str
    base_url: str

    def url(self, contact_id: str, now: datetime) -> str:
        expires = now + timedelta(days=LINK_DAYS)
        return f"{self.base_url.rstrip('/')}/s/{link_token(self.secret, contact_id, expires)}"


wall = wall_now  # retry back-off and stale claims are operational, not business time


class Sender:
    def __init__(
        self,
        clock: Clock,
        renderer: Renderer,
        partners: Sequence[Partner],
        creditor: str,
        retry_max_seconds: float = 30.0,
        links: Links | None = None,
    ) -> None:
        self._clock = clock
        self._renderer = renderer
        self._partners = {p.name: p for p in partners}
        self._creditor = creditor
        self._breakers = {p.name: Breaker() for p in partners}
        self._retry_max = retry_max_seconds
        self._links = links

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
            for row in await repository.expire(uow.session, now):
                announce.attempted(uow, self._clock, row, "expired", now)
            claimed = await repository.claim(uow.session, now, wall(), wall() - STALE_CLAIM, limit)
            customers = await repository.customers(uow.session, {r.customer_id for r in claimed})
            await uow.commit()
        if not claimed:
            return 0
        gate = asyncio.Semaphore(concurrency)

        async def one(delivery: Delivery) -> Result:
            async with gate:
                return await self._send_one(http, delivery, customers.get(delivery.customer_id))

        results = await asyncio.gather(*(one(d) for d in claimed))
        async with units() as uow:
            retries = [r for r in results if r.status == "retry"]
            if retries:
                await repository.retry(uow.session, retries)
            done = [r for r in results if r.status != "retry"]
            if done:
                now = self._clock.now()
                for row in await repository.settle(uow.session, done, now):
                    announce.attempted(uow, self._clock, row, row.status, now)
            await uow.commit()
        return len(claimed)

    async def _send_one(
        self, http: httpx.AsyncClient, row: Delivery, customer: Customer | None
    ) -> Result:
        """Never raises: every failure is a result (sent, retry, failed or expired)."""

        def result(
            status: str, detail: str, message: str | None = None, digest: str | None = None
        ) -> Result:
            retry_at = None
            if status == "retry":
                retry_at = wall() + timedelta(seconds=self._backoff(row.attempts))
            return Result(row.contact_id, status, detail, message, digest, retry_at)

        if self._clock.now() >= row.not_after:
            return result("expired", "not sent before not_after")
        partner = self._partners.get(row.partner)
        if partner is None:
            return result("failed", "partner no longer configured")
        address_field = ADDRESS[row.channel]
        address = customer.get(address_field) if customer else None
        if not address:
            # The customer's data may still be on its way: retry until the window closes.
            return result("retry", f"no {address_field} on file")
        breaker = self._breakers[partner.name]
        if not breaker.allows(time.monotonic()):
            return result("retry", "circuit open")
        overdue = cents(row.total_overdue or Decimal(0))
        currency = row.currency or ""
        locale = row.locale or (customer.locale if customer else None)
        full_name = (customer.full_name if customer else None) or ""
        context = {
            "full_name": full_name,
            "first_name": full_name.split(" ")[0],
            "postal_address": (customer.postal_address if customer else None) or "",
            "creditor": self._creditor,
            "account_tail": row.account_id[-4:],
            "overdue": overdue,
            "currency": currency,
            "days_past_due": row.days_past_due or 0,
            "offer_text": offer_text(row.offer, locale or "en-US", overdue, currency),
            "due_date": row.due_date.isoformat() if row.due_date else "",
            "amount_due": cents(row.amount_due) if row.amount_due is not None else overdue,
        }
        link = None
        if self._links is not None and row.channel in ("sms", "email"):
            link = self._links.url(row.contact_id, self._clock.now())
        try:
            rendered = self._renderer.render(row.template, row.channel, locale, context, link)
        except UnknownTemplate as exc:
            return result("failed", str(exc))
        case: dict[str, Any] = {}
        if row.channel in ("voice", "field_visit"):
            case = {
                "account_id": row.account_id,
                "customer_id": row.customer_id,
                "country": customer.country if customer else None,
                "timezone": customer.timezone if customer else None,
                "not_before": row.not_before.isoformat(),
                "total_overdue": str(row.total_overdue) if row.total_overdue is not None else None,
                "currency": row.currency,
                "days_past_due": row.days_past_due,
                "purpose": row.purpose,
                "template": row.template,
                "offer": row.offer,
                "full_name": full_name or None,
                "propensity": str(row.propensity) if row.propensity is not None else None,
            }
        answer = await ADAPTERS[row.channel].send(
            http, partner, Message(row.contact_id, address, rendered, row.not_after, case)
        )
        if answer.transient:
            breaker.failed(time.monotonic())
        elif answer.verdict != "retry":
            breaker.succeeded()
        return result(answer.verdict, answer.detail, answer.message_id, rendered.digest)

    def _backoff(self, attempts: int) -> float:
        """Exponential, capped, with jitter so that retries after an outage do not all land
        at once."""
        base: float = min(self._retry_max, 0.5 * 2.0 ** min(attempts, 12))
        return base * (0.5 + random.random())


def sender(
    send: Sender, wake: asyncio.Event, concurrency: int, poll_seconds: float
) -> Callable[[UnitOfWorkFactory, asyncio.Event], Awaitable[None]]:
    """The sending loop the runtime runs beside the consumers; ``wake`` is set when there may
    be something to send before the next poll (requests committed, the clock moved)."""

    async def run(units: UnitOfWorkFactory, stop: asyncio.Event) -> None:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        # The aiohttp transport: httpx's own pool spends ~4x the CPU a request under
        # concurrency (encode/httpx#3215), which made the sender the notifier's bottleneck.
        async with HttpxAiohttpClient(limits=limits) as http:
            while not stop.is_set():
                wake.clear()  # before the round: a wake during it starts the next
                try:
                    busy = await send.send_due(
                        units, http, limit=concurrency * 4, concurrency=concurrency
                    )
                except Exception:
                    log.exception("send round failed; retrying")
                    busy = 0
                if not busy:
                    waiters = [
                        asyncio.ensure_future(wake.wait()),
                        asyncio.ensure_future(stop.wait()),
                    ]
                    await asyncio.wait(waiters, timeout=poll_seconds, return_when="FIRST_COMPLETED")
                    for waiter in waiters:
                        waiter.cancel()

    return run
