"""Work items, customer locks, outcomes, approvals, outbound webhooks, and the read-only
context (customers, figures) the desk keeps from the topics."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from services.desk.domain.people import Person
from shared.events import RIGHT_PARTY, Outcome


@dataclass(frozen=True)
class Item:
    contact_id: str
    channel: str
    account_id: str
    customer_id: str
    country: str | None
    locale: str | None
    timezone: str | None
    address: str
    full_name: str | None
    script: str
    template: str | None
    purpose: str | None
    offer: dict[str, Any] | None
    total_overdue: Decimal | None
    currency: str | None
    days_past_due: int | None
    district: str | None
    not_before: datetime
    not_after: datetime
    priority: Decimal
    priority_why: dict[str, str] | None
    status: str
    holder: str | None
    held_until: datetime | None
    worked_by: str | None
    outcome: str | None
    outcome_at: datetime | None
    expired_reason: str | None
    received_at: datetime


_ITEM = ", ".join(Item.__dataclass_fields__)


def _item(r: Any) -> Item:
    return Item(**{k: getattr(r, k) for k in Item.__dataclass_fields__})


async def add_item(session: AsyncSession, values: dict[str, Any]) -> bool:
    """A new work item; False when this contact was received before (a retried send)."""
    values = values | {
        "offer": json.dumps(values["offer"]) if values.get("offer") is not None else None,
        "priority_why": json.dumps(values["priority_why"]),
    }
    found = await session.execute(
        text("""
            INSERT INTO work_item (contact_id, channel, account_id, customer_id, country, locale,
                                   timezone, address, full_name, script, template, purpose,
                                   offer, total_overdue, currency, days_past_due, district,
                                   not_before, not_after, priority, priority_why, received_at)
            VALUES (:contact_id, :channel, :account_id, :customer_id, :country, :locale,
                    :timezone, :address, :full_name, :script, :template, :purpose,
                    CAST(:offer AS jsonb), :total_overdue, :currency, :days_past_due, :district,
                    :not_before, :not_after, :priority, CAST(:priority_why AS jsonb),
                    :received_at)
            ON CONFLICT (contact_id) DO NOTHING
            RETURNING contact_id
        """),
        values,
    )
    return found.first() is not None


async def item(session: AsyncSession, contact_id: str, *, lock: bool = False) -> Item | None:
    r = (
        await session.execute(
            text(
                f"SELECT {_ITEM} FROM work_item WHERE contact_id = :c"
                + (" FOR UPDATE" if lock else "")
            ),
            {"c": contact_id},
        )
    ).first()
    return _item(r) if r is not None else None


async def held_by(session: AsyncSession, username: str, now: datetime) -> list[Item]:
    rows = await session.execute(
        text(f"""
            SELECT {_ITEM} FROM work_item
            WHERE status = 'held' AND holder = :u AND held_until > :now
            ORDER BY priority DESC, contact_id
        """),
        {"u": username, "now": now},
    )
    return [_item(r) for r in rows]


_VISIBLE = """
    w.status = 'queued' AND w.channel = ANY(CAST(:skills AS text[]))
    AND w.not_before <= :now AND w.not_after > :now
    AND (cardinality(CAST(:countries AS text[])) = 0 OR w.country = ANY(CAST(:countries AS text[])))
    AND (cardinality(CAST(:langs AS text[])) = 0 OR w.locale IS NULL
         OR w.locale = ANY(CAST(:langs AS text[])))
"""


def _match(person: Person, now: datetime) -> dict[str, Any]:
    return {
        "skills": list(person.skills),
        "countries": list(person.countries),
        "langs": list(person.languages),
        "now": now,
    }


async def take_next(
    session: AsyncSession,
    person: Person,
    now: datetime,
    until: datetime,
    only: str | None = None,
) -> Item | None:
    """The highest-priority item this person may work whose customer nobody holds, locked to
    them until ``until``. Candidates are row-locked with SKIP LOCKED (two collectors asking at
    once get different rows); the customer lock's primary key settles a race between two items
    of one customer."""
    tried: list[str] = []
    for _ in range(50):
        # one candidate at a time: a row locked while others are tried would keep it from
        # every other collector asking at the same moment
        row = (
            await session.execute(
                text(f"""
                    SELECT w.contact_id, w.customer_id FROM work_item w
                    WHERE {_VISIBLE}
                      AND (CAST(:only AS text) IS NULL OR w.contact_id = :only)
                      AND w.contact_id <> ALL(CAST(:tried AS text[]))
                      AND NOT EXISTS (SELECT 1 FROM customer_lock l
                                      WHERE l.customer_id = w.customer_id AND l.until > :now)
                    ORDER BY w.priority DESC, w.not_after, w.contact_id
                    LIMIT 1
                    FOR UPDATE OF w SKIP LOCKED
                """),
                _match(person, now) | {"only": only, "tried": tried},
            )
        ).first()
        if row is None:
            return None
        contact_id, customer_id = row
        tried.append(contact_id)
        got = await session.execute(
            text("""
                INSERT INTO customer_lock (customer_id, contact_id, holder, until)
                VALUES (:cu, :c, :u, :until)
                ON CONFLICT (customer_id) DO UPDATE
                  SET contact_id = excluded.contact_id, holder = excluded.holder,
                      until = excluded.until
                  WHERE customer_lock.until <= :now
                RETURNING customer_id
            """),
            {"cu": customer_id, "c": contact_id, "u": person.username, "until": until, "now": now},
        )
        if got.first() is None:
            continue
        await session.execute(
            text("""
                UPDATE work_item SET status = 'held', holder = :u, held_until = :until
                WHERE contact_id = :c
            """),
            {"c": contact_id, "u": person.username, "until": until},
        )
        return await item(session, contact_id)
    return None


async def release(session: AsyncSession, contact_id: str) -> None:
    """Back to the queue (the holder let it go)."""
    await session.execute(
        text("""
            UPDATE work_item SET status = 'queued', holder = NULL, held_until = NULL
            WHERE contact_id = :c AND status = 'held'
        """),
        {"c": contact_id},
    )
    await session.execute(
        text("DELETE FROM customer_lock WHERE contact_id = :c"), {"c": contact_id}
    )


async def release_lapsed_locks(session: AsyncSession, now: datetime) -> int:
    """Items whose lock ran out go back to the queue (if their window is still open)."""
    rows = await session.execute(
        text("""
            UPDATE work_item SET status = 'queued', holder = NULL, held_until = NULL
            WHERE status = 'held' AND held_until <= :now
            RETURNING contact_id
        """),
        {"now": now},
    )
    released = len(rows.all())
    await session.execute(text("DELETE FROM customer_lock WHERE until <= :now"), {"now": now})
    return released


async def expire(session: AsyncSession, now: datetime) -> list[Item]:
    """Items nobody finished by ``not_after``: expired, each with its reason."""
    rows = await session.execute(
        text(f"""
            UPDATE work_item SET
              expired_reason = CASE WHEN status = 'held'
                THEN 'held by ' || holder || ' when the window closed; not logged'
                ELSE 'not taken before not_after' END,
              -- the collector who held it still sees what became of it
              worked_by = CASE WHEN status = 'held' THEN holder ELSE worked_by END,
              status = 'expired', holder = NULL, held_until = NULL
            WHERE status IN ('queued', 'held') AND not_after <= :now
            RETURNING {_ITEM}
        """),
        {"now": now},
    )
    expired = [_item(r) for r in rows]
    if expired:
        await session.execute(
            text("DELETE FROM customer_lock WHERE contact_id = ANY(CAST(:c AS text[]))"),
            {"c": [i.contact_id for i in expired]},
        )
    return expired


async def finish(
    session: AsyncSession,
    contact_id: str,
    username: str,
    outcome: str,
    at: datetime,
    status: str = "done",
) -> None:
    await session.execute(
        text("""
            UPDATE work_item SET status = :st, worked_by = :u, outcome = :o, outcome_at = :at,
                                 holder = NULL, held_until = NULL
            WHERE contact_id = :c
        """),
        {"c": contact_id, "u": username, "o": outcome, "at": at, "st": status},
    )
    await session.execute(
        text("DELETE FROM customer_lock WHERE contact_id = :c"), {"c": contact_id}
    )


async def record_outcome(
    session: AsyncSession,
    event_id: str,
    it: Item,
    username: str,
    outcome: str,
    status: str,
    detail: dict[str, Any],
    at: datetime,
) -> None:
    await session.execute(
        text("""
            INSERT INTO outcome (event_id, contact_id, account_id, username, outcome, status,
                                 detail, at)
            VALUES (:e, :c, :a, :u, :o, :s, CAST(:d AS jsonb), :at)
        """),
        {
            "e": event_id,
            "c": it.contact_id,
            "a": it.account_id,
            "u": username,
            "o": outcome,
            "s": status,
            "d": json.dumps(detail, default=str),
            "at": at,
        },
    )


async def outcomes_of(session: AsyncSession, contact_id: str) -> list[dict[str, Any]]:
    rows = await session.execute(
        text("SELECT * FROM outcome WHERE contact_id = :c ORDER BY at"), {"c": contact_id}
    )
    return [dict(r._mapping) for r in rows]


async def mark_promises(session: AsyncSession, event_ids: Sequence[str], kept: bool) -> None:
    await session.execute(
        text("UPDATE outcome SET kept = :k WHERE event_id = ANY(CAST(:e AS text[]))"),
        {"e": list(event_ids), "k": kept},
    )


# --- approvals -------------------------------------------------------------------------------


async def add_approval(
    session: AsyncSession,
    approval_id: str,
    it: Item,
    username: str,
    terms: dict[str, Any],
    reasons: Sequence[str],
    now: datetime,
) -> None:
    await session.execute(
        text("""
            INSERT INTO approval (approval_id, contact_id, account_id, requested_by, terms,
                                  reasons, created_at)
            VALUES (:id, :c, :a, :u, CAST(:t AS jsonb), CAST(:r AS jsonb), :now)
        """),
        {
            "id": approval_id,
            "c": it.contact_id,
            "a": it.account_id,
            "u": username,
            "t": json.dumps(terms, default=str),
            "r": json.dumps(list(reasons)),
            "now": now,
        },
    )


async def approvals(session: AsyncSession, status: str = "pending") -> list[dict[str, Any]]:
    rows = await session.execute(
        text("""
            SELECT a.*, w.offer, w.total_overdue, w.currency, w.days_past_due
            FROM approval a JOIN work_item w USING (contact_id)
            WHERE a.status = :s ORDER BY a.created_at, a.approval_id
        """),
        {"s": status},
    )
    return [dict(r._mapping) for r in rows]


async def lock_approval(session: AsyncSession, approval_id: str) -> dict[str, Any] | None:
    r = (
        await session.execute(
            text("SELECT * FROM approval WHERE approval_id = :id FOR UPDATE"),
            {"id": approval_id},
        )
    ).first()
    return dict(r._mapping) if r is not None else None


async def decide_approval(
    session: AsyncSession, approval_id: str, status: str, username: str, now: datetime
) -> None:
    await session.execute(
        text("""
            UPDATE approval SET status = :s, decided_by = :u, decided_at = :now
            WHERE approval_id = :id
        """),
        {"id": approval_id, "s": status, "u": username, "now": now},
    )


# --- outbound webhooks -----------------------------------------------------------------------


@dataclass(frozen=True)
class Webhook:
    event_id: str
    kind: str
    body: dict[str, Any]
    attempts: int


async def enqueue_webhook(
    session: AsyncSession,
    event_id: str,
    customer_id: str,
    body: dict[str, Any],
    now: datetime,
    wall: datetime,
) -> None:
    await session.execute(
        text("""
            INSERT INTO webhook_out (event_id, customer_id, body, next_at, created_at)
            VALUES (:e, :c, CAST(:b AS jsonb), :wall, :now)
            ON CONFLICT (event_id) DO NOTHING
        """),
        {
            "e": event_id,
            "c": customer_id,
            "b": json.dumps(body, default=str),
            "now": now,
            "wall": wall,
        },
    )


async def due_webhooks(session: AsyncSession, wall: datetime, limit: int) -> list[Webhook]:
    """The first unsent webhook of each customer that is due: a customer's outcomes reach the
    notifier in the order they were logged, different customers' at once."""
    rows = await session.execute(
        text("""
            SELECT event_id, kind, body, attempts FROM webhook_out w
            WHERE sent_at IS NULL AND next_at <= :wall
              AND NOT EXISTS (SELECT 1 FROM webhook_out e
                              WHERE e.customer_id = w.customer_id AND e.sent_at IS NULL
                                AND e.seq < w.seq)
            ORDER BY seq LIMIT :n
            FOR UPDATE SKIP LOCKED
        """),
        {"wall": wall, "n": limit},
    )
    return [Webhook(r.event_id, r.kind, r.body, r.attempts) for r in rows]


async def webhook_sent(session: AsyncSession, event_id: str, wall: datetime) -> None:
    await session.execute(
        text("UPDATE webhook_out SET sent_at = :w, last_error = NULL WHERE event_id = :e"),
        {"e": event_id, "w": wall},
    )


async def webhook_failed(
    session: AsyncSession, event_id: str, error: str, next_at: datetime
) -> None:
    await session.execute(
        text("""
            UPDATE webhook_out SET attempts = attempts + 1, last_error = :err, next_at = :n
            WHERE event_id = :e
        """),
        {"e": event_id, "err": error[:500], "n": next_at},
    )


async def unsent_webhooks(session: AsyncSession) -> int:
    return int(
        (
            await session.execute(text("SELECT count(*) FROM webhook_out WHERE sent_at IS NULL"))
        ).scalar_one()
    )


# --- context and figures ---------------------------------------------------------------------


async def upsert_customers(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    if not rows:
        return
    keys = ("customer_id", "full_name", "national_id_last4", "phone", "locale", "country")
    await session.execute(
        text("""
            INSERT INTO customer (customer_id, full_name, national_id_last4, phone, locale,
                                  country, timezone, updated_at)
            SELECT * FROM unnest(CAST(:customer_id AS text[]), CAST(:full_name AS text[]),
                                 CAST(:national_id_last4 AS text[]), CAST(:phone AS text[]),
                                 CAST(:locale AS text[]), CAST(:country AS text[]),
                                 CAST(:timezone AS text[]), CAST(:updated_at AS timestamptz[]))
            ON CONFLICT (customer_id) DO UPDATE SET
              full_name = excluded.full_name, national_id_last4 = excluded.national_id_last4,
              phone = excluded.phone, locale = excluded.locale, country = excluded.country,
              timezone = excluded.timezone, updated_at = excluded.updated_at
        """),
        {k: [r[k] for r in rows] for k in (*keys, "timezone", "updated_at")},
    )


async def customer(session: AsyncSession, customer_id: str) -> dict[str, Any] | None:
    r = (
        await session.execute(
            text("SELECT * FROM customer WHERE customer_id = :c"), {"c": customer_id}
        )
    ).first()
    return dict(r._mapping) if r is not None else None


async def promises_broken(session: AsyncSession, account_ids: Sequence[str], at: datetime) -> None:
    await session.execute(
        text("""
            INSERT INTO broken_promise (account_id, broken_at)
            SELECT unnest(CAST(:a AS text[])), :at
            ON CONFLICT (account_id) DO UPDATE SET broken_at = excluded.broken_at
        """),
        {"a": list(account_ids), "at": at},
    )


async def broke_a_promise_since(session: AsyncSession, account_id: str, since: datetime) -> bool:
    found = await session.execute(
        text("SELECT 1 FROM broken_promise WHERE account_id = :a AND broken_at >= :s"),
        {"a": account_id, "s": since},
    )
    return found.first() is not None


async def add_figures(session: AsyncSession, counts: dict[str, Decimal]) -> None:
    if not counts:
        return
    await session.execute(
        text("""
            INSERT INTO figure (name, value)
            SELECT * FROM unnest(CAST(:n AS text[]), CAST(:v AS numeric[]))
            ON CONFLICT (name) DO UPDATE SET value = figure.value + excluded.value
        """),
        {"n": list(counts), "v": list(counts.values())},
    )


async def figures(session: AsyncSession) -> dict[str, Decimal]:
    rows = await session.execute(text("SELECT name, value FROM figure ORDER BY name"))
    return {r.name: r.value for r in rows}


async def results(session: AsyncSession) -> list[dict[str, Any]]:
    """Each person's contacts, right-party conversations, promises (and how many were kept or
    broken), plans and hardship reports."""
    rows = await session.execute(
        text("""
            SELECT username,
                   count(*) AS contacts,
                   count(*) FILTER (WHERE status = ANY(CAST(:rp AS text[]))) AS right_party,
                   count(*) FILTER (WHERE status = :promise) AS promises,
                   count(*) FILTER (WHERE status = :promise AND kept) AS kept,
                   count(*) FILTER (WHERE status = :promise AND kept = false) AS broken,
                   count(*) FILTER (WHERE status = :plan) AS plans,
                   count(*) FILTER (WHERE status = :hardship) AS hardship
            FROM outcome GROUP BY username ORDER BY username
        """),
        {
            "rp": sorted(o.value for o in RIGHT_PARTY),
            "promise": Outcome.PROMISE_TO_PAY.value,
            "plan": Outcome.PLAN_ACCEPTED.value,
            "hardship": Outcome.HARDSHIP.value,
        },
    )
    return [dict(r._mapping) for r in rows]


async def queue_depths(session: AsyncSession, now: datetime) -> list[dict[str, Any]]:
    """Per queue (channel and country): waiting now, not yet visible, held, awaiting approval,
    done and expired."""
    rows = await session.execute(
        text("""
            SELECT channel, coalesce(country, '') AS country,
                   count(*) FILTER (WHERE status = 'queued' AND not_before <= :now
                                    AND not_after > :now) AS waiting,
                   count(*) FILTER (WHERE status = 'queued' AND not_before > :now) AS later,
                   count(*) FILTER (WHERE status = 'held') AS held,
                   count(*) FILTER (WHERE status = 'approval') AS approval,
                   count(*) FILTER (WHERE status = 'done') AS done,
                   count(*) FILTER (WHERE status = 'expired') AS expired
            FROM work_item GROUP BY channel, country ORDER BY channel, country
        """),
        {"now": now},
    )
    return [dict(r._mapping) for r in rows]


async def visible_count(session: AsyncSession, person: Person, now: datetime) -> int:
    return int(
        (
            await session.execute(
                text(f"SELECT count(*) FROM work_item w WHERE {_VISIBLE}"), _match(person, now)
            )
        ).scalar_one()
    )


async def field_day(
    session: AsyncSession, person: Person, now: datetime, day_end: datetime
) -> list[Item]:
    """Visits this field agent may make today: waiting or held by them, open before the end
    of the local day, by district."""
    rows = await session.execute(
        text(f"""
            SELECT {_ITEM} FROM work_item w
            WHERE w.channel = 'field_visit' AND w.not_after > :now AND w.not_before < :day_end
              AND (w.status = 'queued' OR (w.status = 'held' AND w.holder = :u))
              AND (cardinality(CAST(:countries AS text[])) = 0
                   OR w.country = ANY(CAST(:countries AS text[])))
            ORDER BY w.district, w.not_before, w.contact_id
        """),
        {
            "now": now,
            "day_end": day_end,
            "u": person.username,
            "countries": list(person.countries),
        },
    )
    return [_item(r) for r in rows]


async def listing(session: AsyncSession, after: str, limit: int) -> list[dict[str, Any]]:
    """Every item received, by contact id (paged): what the desk was asked to do and what came
    of it."""
    rows = await session.execute(
        text("""
            SELECT contact_id, channel, account_id, status, outcome, worked_by, received_at
            FROM work_item WHERE contact_id > :after ORDER BY contact_id LIMIT :n
        """),
        {"after": after, "n": limit},
    )
    return [dict(r._mapping) for r in rows]


async def expired_items(session: AsyncSession, limit: int = 50) -> list[Item]:
    rows = await session.execute(
        text(f"""
            SELECT {_ITEM} FROM work_item WHERE status = 'expired'
            ORDER BY not_after DESC, contact_id LIMIT :n
        """),
        {"n": limit},
    )
    return [_item(r) for r in rows]
