"""All of the notifier's SQL: customers' contact data, deliveries (the send intents and their
results), outcomes and partner webhook events. Statements only, typed rows out; nothing here
commits. Due deliveries are claimed ``FOR UPDATE SKIP LOCKED``, so replicas share the work."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from shared.events import Channel, ContactRequested


@dataclass(frozen=True, slots=True)
class Customer:
    """A customer's contact data: the only place in Arrears that holds it."""

    customer_id: str
    full_name: str | None
    phone: str | None
    email: str | None
    postal_address: str | None
    phone_ref: str | None
    email_ref: str | None
    postal_ref: str | None
    locale: str | None
    country: str | None
    updated_at: datetime
    timezone: str | None = None
    birth_ref: str | None = None  # fingerprints the self-service identity check compares
    nid4_ref: str | None = None

    def get(self, field: str) -> Any:
        return getattr(self, field)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One contact.requested: the send intent and, later, its result. status: pending,
    sending, sent, delivered, failed, expired, returned."""

    contact_id: str
    account_id: str
    customer_id: str
    channel: Channel
    template: str
    partner: str
    locale: str | None
    address_ref: str | None
    not_before: datetime
    not_after: datetime
    offer: dict[str, Any] | None
    total_overdue: Decimal | None
    currency: str | None
    days_past_due: int | None
    status: str
    attempts: int
    retry_at: datetime | None
    claimed_at: datetime | None
    message_id: str | None
    rendered: str | None
    last_error: str | None
    outcome: str | None
    created_at: datetime
    sent_at: datetime | None
    purpose: str | None = None
    due_date: date | None = None
    amount_due: Decimal | None = None
    propensity: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Settled:
    """A delivery whose send (or expiry) is settled, for its contact.attempted."""

    contact_id: str
    account_id: str
    customer_id: str
    channel: Channel
    address_ref: str | None
    status: str
    last_error: str | None


@dataclass(frozen=True, slots=True)
class Result:
    """What one send came to: the delivery's new status, the detail, the partner's message id,
    the rendered digest, and when to retry (wall time) if it is to be retried."""

    contact_id: str
    status: str
    detail: str
    message_id: str | None
    rendered: str | None
    retry_at: datetime | None = None


async def upsert_customers(
    session: AsyncSession, customers: Sequence[Customer], now: datetime
) -> None:
    await session.execute(
        text("""
            INSERT INTO customer (customer_id, full_name, phone, email, postal_address,
                                  phone_ref, email_ref, postal_ref, locale, country,
                                  timezone, birth_ref, nid4_ref, updated_at)
            SELECT *, CAST(:now AS timestamptz)
            FROM unnest(CAST(:ids AS text[]), CAST(:names AS text[]),
                        CAST(:phones AS text[]), CAST(:emails AS text[]),
                        CAST(:postals AS text[]), CAST(:phone_refs AS text[]),
                        CAST(:email_refs AS text[]), CAST(:postal_refs AS text[]),
                        CAST(:locales AS text[]), CAST(:countries AS text[]),
                        CAST(:tzs AS text[]), CAST(:births AS text[]), CAST(:nids AS text[]))
            ON CONFLICT (customer_id) DO UPDATE
            SET full_name = excluded.full_name, phone = excluded.phone,
                email = excluded.email, postal_address = excluded.postal_address,
                phone_ref = excluded.phone_ref, email_ref = excluded.email_ref,
                postal_ref = excluded.postal_ref, locale = excluded.locale,
                country = excluded.country, timezone = excluded.timezone,
                birth_ref = excluded.birth_ref, nid4_ref = excluded.nid4_ref,
                updated_at = excluded.updated_at
        """),
        {
            "ids": [c.customer_id for c in customers],
            "names": [c.full_name for c in customers],
            "phones": [c.phone for c in customers],
            "emails": [c.email for c in customers],
            "postals": [c.postal_address for c in customers],
            "phone_refs": [c.phone_ref for c in customers],
            "email_refs": [c.email_ref for c in customers],
            "postal_refs": [c.postal_ref for c in customers],
            "locales": [c.locale for c in customers],
            "countries": [c.country for c in customers],
            "tzs": [c.timezone for c in customers],
            "births": [c.birth_ref for c in customers],
            "nids": [c.nid4_ref for c in customers],
            "now": now,
        },
    )


async def countries(session: AsyncSession, customer_ids: Sequence[str]) -> dict[str, str | None]:
    rows = await session.execute(
        text("""
            SELECT customer_id, country FROM customer
            WHERE customer_id = ANY(CAST(:ids AS text[]))
        """),
        {"ids": sorted(customer_ids)},
    )
    return {c: country for c, country in rows}


async def customers(session: AsyncSession, customer_ids: set[str]) -> dict[str, Customer]:
    if not customer_ids:
        return {}
    rows = await session.execute(
        text("SELECT * FROM customer WHERE customer_id = ANY(CAST(:ids AS text[]))"),
        {"ids": sorted(customer_ids)},
    )
    return {r["customer_id"]: Customer(**r) for r in rows.mappings()}


async def customer_by_ref(session: AsyncSession, kind: str, ref: str) -> str | None:
    """The customer whose phone (``kind`` phone) or email fingerprint is ``ref``."""
    column = "phone_ref" if kind == "phone" else "email_ref"
    found: str | None = await session.scalar(
        text(f"SELECT customer_id FROM customer WHERE {column} = :ref LIMIT 1"),  # noqa: S608 - a column name from a two-way choice
        {"ref": ref},
    )
    return found


async def record_requests(
    session: AsyncSession, requests: Sequence[tuple[ContactRequested, str]], now: datetime
) -> None:
    """(request, partner) pairs as send intents; a contact seen before changes nothing."""
    await session.execute(
        text("""
            INSERT INTO delivery (contact_id, account_id, customer_id, channel, template,
                                  partner, locale, not_before, not_after, offer,
                                  total_overdue, currency, days_past_due, purpose, due_date,
                                  amount_due, propensity, created_at)
            SELECT *, CAST(:now AS timestamptz)
            FROM unnest(CAST(:ids AS text[]), CAST(:accounts AS text[]),
                        CAST(:customers AS text[]), CAST(:channels AS text[]),
                        CAST(:templates AS text[]), CAST(:partners AS text[]),
                        CAST(:locales AS text[]), CAST(:not_before AS timestamptz[]),
                        CAST(:not_after AS timestamptz[]), CAST(:offers AS jsonb[]),
                        CAST(:overdue AS numeric[]), CAST(:currencies AS text[]),
                        CAST(:dpd AS int[]), CAST(:purposes AS text[]),
                        CAST(:due_dates AS date[]), CAST(:amounts_due AS numeric[]),
                        CAST(:propensities AS numeric[]))
            ON CONFLICT (contact_id) DO NOTHING
        """),
        {
            "ids": [r.contact_id for r, _ in requests],
            "accounts": [r.account_id for r, _ in requests],
            "customers": [r.customer_id for r, _ in requests],
            "channels": [r.channel for r, _ in requests],
            "templates": [r.template for r, _ in requests],
            "partners": [p for _, p in requests],
            "locales": [r.locale for r, _ in requests],
            "not_before": [r.not_before for r, _ in requests],
            "not_after": [r.not_after for r, _ in requests],
            "offers": [r.offer.model_dump_json() if r.offer else None for r, _ in requests],
            "overdue": [r.total_overdue for r, _ in requests],
            "currencies": [r.currency for r, _ in requests],
            "dpd": [r.days_past_due for r, _ in requests],
            "purposes": [r.purpose for r, _ in requests],
            "due_dates": [r.due_date for r, _ in requests],
            "amounts_due": [r.amount_due for r, _ in requests],
            "propensities": [r.propensity for r, _ in requests],
            "now": now,
        },
    )


async def expire(session: AsyncSession, now: datetime) -> list[Settled]:
    """Pending deliveries whose window closed, expired (a thousand at a time)."""
    rows = await session.execute(
        text("""
            UPDATE delivery SET status = 'expired', outcome = 'expired',
                   last_error = 'not sent before not_after'
            WHERE contact_id IN (
              SELECT contact_id FROM delivery
              WHERE status = 'pending' AND not_after <= :now
              LIMIT 1000 FOR UPDATE SKIP LOCKED)
            RETURNING contact_id, account_id, customer_id, channel, address_ref, status,
                      last_error
        """),
        {"now": now},
    )
    return [Settled(**r) for r in rows.mappings()]


async def claim(
    session: AsyncSession, now: datetime, wall: datetime, stale: datetime, limit: int
) -> list[Delivery]:
    """Deliveries due to send (or whose claim went stale: its process died), claimed."""
    rows = await session.execute(
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
        {"now": now, "wall": wall, "stale": stale, "limit": limit},
    )
    return [Delivery(**r) for r in rows.mappings()]


async def unsent(session: AsyncSession, now: datetime) -> int:
    found = await session.execute(
        text("""
            SELECT count(*) FROM delivery
            WHERE status = 'sending' OR (status = 'pending' AND not_before <= :now)
        """),
        {"now": now},
    )
    return int(found.scalar_one())


async def retry(session: AsyncSession, results: Sequence[Result]) -> None:
    """Back to pending, each with its back-off."""
    await session.execute(
        text("""
            UPDATE delivery d
            SET status = 'pending', retry_at = u.at, last_error = u.e,
                rendered = coalesce(u.r, d.rendered)
            FROM unnest(CAST(:ids AS text[]), CAST(:at AS timestamptz[]),
                        CAST(:e AS text[]), CAST(:r AS text[])) AS u (id, at, e, r)
            WHERE d.contact_id = u.id AND d.status = 'sending'
        """),
        {
            "ids": [r.contact_id for r in results],
            "at": [r.retry_at for r in results],
            "e": [r.detail for r in results],
            "r": [r.rendered for r in results],
        },
    )


async def settle(session: AsyncSession, results: Sequence[Result], now: datetime) -> list[Settled]:
    """Sends settled (sent, failed, expired), with the address each used; their outcomes are
    recorded too. Returns the deliveries settled (a stale claim settled elsewhere is not)."""
    changed = await session.execute(
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
            "ids": [r.contact_id for r in results],
            "s": [r.status for r in results],
            "m": [r.message_id for r in results],
            "r": [r.rendered for r in results],
            "e": [r.detail for r in results],
            "now": now,
        },
    )
    settled = [Settled(**row) for row in changed.mappings()]
    if settled:
        await session.execute(
            text("""
                INSERT INTO outcome (contact_id, account_id, channel, outcome, detail, at)
                SELECT id, a, ch, o, CASE WHEN e IS NULL THEN '{}'::jsonb
                                          ELSE jsonb_build_object('detail', e) END,
                       CAST(:now AS timestamptz)
                FROM unnest(CAST(:ids AS text[]), CAST(:a AS text[]), CAST(:ch AS text[]),
                            CAST(:o AS text[]), CAST(:e AS text[])) AS u (id, a, ch, o, e)
            """),
            {
                "ids": [r.contact_id for r in settled],
                "a": [r.account_id for r in settled],
                "ch": [r.channel for r in settled],
                "o": [r.status for r in settled],
                "e": [r.last_error for r in settled],
                "now": now,
            },
        )
    return settled


async def webhook_seen(
    session: AsyncSession, partner: str, event_id: str, kind: str, now: datetime
) -> bool:
    """Records the partner's event id; False if it was seen before (a replay)."""
    fresh = await session.execute(
        text("""
            INSERT INTO webhook_event (partner, event_id, kind, received_at)
            VALUES (:p, :e, :k, :now) ON CONFLICT DO NOTHING RETURNING 1
        """),
        {"p": partner, "e": event_id, "k": kind, "now": now},
    )
    return fresh.first() is not None


async def orphaned(session: AsyncSession, partner: str, event_id: str) -> None:
    await session.execute(
        text("UPDATE webhook_event SET orphaned = true WHERE partner = :p AND event_id = :e"),
        {"p": partner, "e": event_id},
    )


async def lock_delivery(session: AsyncSession, contact_id: str, partner: str) -> Delivery | None:
    row = (
        (
            await session.execute(
                text("SELECT * FROM delivery WHERE contact_id = :c AND partner = :p FOR UPDATE"),
                {"c": contact_id, "p": partner},
            )
        )
        .mappings()
        .first()
    )
    return None if row is None else Delivery(**row)


async def set_status(session: AsyncSession, contact_id: str, status: str, outcome: str) -> None:
    await session.execute(
        text("UPDATE delivery SET status = :s, outcome = :o WHERE contact_id = :c"),
        {"s": status, "o": outcome, "c": contact_id},
    )


async def latest_sent(
    session: AsyncSession, customer_id: str, channel: str, *, offer_since: datetime | None = None
) -> Delivery | None:
    """The customer's latest delivery sent on ``channel`` (with ``offer_since``: the latest that
    carried an offer, sent since then)."""
    offered = "AND offer IS NOT NULL AND sent_at >= :since" if offer_since is not None else ""
    row = (
        (
            await session.execute(
                text(f"""
                    SELECT * FROM delivery
                    WHERE customer_id = :c AND channel = :ch AND status IN ('sent', 'delivered')
                      {offered}
                    ORDER BY sent_at DESC NULLS LAST LIMIT 1
                """),  # noqa: S608 - a constant clause
                {"c": customer_id, "ch": channel, "since": offer_since},
            )
        )
        .mappings()
        .first()
    )
    return None if row is None else Delivery(**row)


async def record_outcome(
    session: AsyncSession,
    contact_id: str | None,
    account_id: str | None,
    channel: str,
    outcome: str,
    detail: Mapping[str, Any],
    at: datetime,
) -> None:
    await session.execute(
        text("""
            INSERT INTO outcome (contact_id, account_id, channel, outcome, detail, at)
            VALUES (:c, :a, :ch, :o, CAST(:d AS jsonb), :at)
        """),
        {
            "c": contact_id,
            "a": account_id,
            "ch": channel,
            "o": outcome,
            "d": json.dumps(dict(detail)),
            "at": at,
        },
    )


async def contacts(session: AsyncSession, account_id: str) -> list[dict[str, Any]]:
    rows = await session.execute(
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


# --- the self-service page ---------------------------------------------------------------------


async def delivery(session: AsyncSession, contact_id: str) -> Delivery | None:
    row = (
        (
            await session.execute(
                text("SELECT * FROM delivery WHERE contact_id = :c"), {"c": contact_id}
            )
        )
        .mappings()
        .first()
    )
    return None if row is None else Delivery(**row)


async def customer(session: AsyncSession, customer_id: str) -> Customer | None:
    return (await customers(session, {customer_id})).get(customer_id)


async def latest_offer(session: AsyncSession, account_id: str, since: datetime) -> Delivery | None:
    """The account's latest delivery sent since ``since`` that carried an offer."""
    row = (
        (
            await session.execute(
                text("""
                    SELECT * FROM delivery
                    WHERE account_id = :a AND offer IS NOT NULL
                      AND status IN ('sent', 'delivered') AND sent_at >= :since
                    ORDER BY sent_at DESC, contact_id LIMIT 1
                """),
                {"a": account_id, "since": since},
            )
        )
        .mappings()
        .first()
    )
    return None if row is None else Delivery(**row)


@dataclass(frozen=True, slots=True)
class CheckState:
    failures: int
    locked_until: datetime | None


async def check_state(session: AsyncSession, customer_id: str) -> CheckState:
    """The customer's wrong identity answers in a row and any lock, locked for this
    transaction (two answers at once cannot both be counted as the fifth)."""
    await session.execute(
        text("""
            INSERT INTO self_service_check (customer_id, updated_at) VALUES (:c, now())
            ON CONFLICT DO NOTHING
        """),
        {"c": customer_id},
    )
    row = (
        await session.execute(
            text("""
                SELECT failures, locked_until FROM self_service_check
                WHERE customer_id = :c FOR UPDATE
            """),
            {"c": customer_id},
        )
    ).one()
    return CheckState(row.failures, row.locked_until)


async def set_check(
    session: AsyncSession,
    customer_id: str,
    failures: int,
    locked_until: datetime | None,
    now: datetime,
) -> None:
    await session.execute(
        text("""
            UPDATE self_service_check
            SET failures = :f, locked_until = :l, updated_at = :now WHERE customer_id = :c
        """),
        {"c": customer_id, "f": failures, "l": locked_until, "now": now},
    )


async def self_served_before(session: AsyncSession, contact_id: str, what: str) -> bool:
    """Whether the customer already did ``what`` (plan, promise, hardship) on this link's page:
    a form sent twice (a double click, a retry after a dropped connection) changes nothing.
    The delivery is locked first, so two at once cannot both find nothing."""
    await session.execute(
        text("SELECT 1 FROM delivery WHERE contact_id = :c FOR UPDATE"), {"c": contact_id}
    )
    found = await session.scalar(
        text("SELECT 1 FROM outcome WHERE contact_id = :c AND outcome = :o LIMIT 1"),
        {"c": contact_id, "o": f"self_service:{what}"},
    )
    return found is not None
