"""Treatments, their timers (one per planned contact) and the decision log: statements only,
typed rows out, nothing committed here. Due timers are claimed ``FOR UPDATE SKIP LOCKED``, so
replicas share the work."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from shared.events import Channel

FIRE_BATCH = 2000
# What a timer is for: a collection step, a reminder before a due date (never collection), a
# hardship treatment's step, a callback the customer asked for.
Purpose = Literal["collection", "reminder", "hardship", "callback"]
# The timers that make an account "in treatment" (a new miss then starts nothing new).
TREATING = ("collection", "hardship")


@dataclass(frozen=True, slots=True)
class Decision:
    """One row of the audit trail: what was decided for an account (or one of its contacts),
    the rules behind it and the inputs it was decided on."""

    account_id: str
    kind: str
    contact_id: str | None
    reasons: Sequence[str]
    inputs: Mapping[str, Any]
    at: datetime


@dataclass(frozen=True, slots=True)
class Assignment:
    account_id: str
    strategy_id: str
    version: int
    variant: str


@dataclass(frozen=True, slots=True)
class TreatmentRow:
    account_id: str
    strategy_id: str
    version: int
    variant: str
    name: str
    bucket: str


@dataclass(frozen=True, slots=True)
class Timer:
    """A planned contact, pending until it fires, is deferred, cancelled or suppressed."""

    contact_id: str
    account_id: str
    customer_id: str
    strategy_id: str
    version: int
    variant: str
    treatment: str
    step_no: int
    channel: Channel
    template: str
    offer: dict[str, Any] | None
    due_at: datetime
    purpose: Purpose = "collection"
    context: dict[str, Any] | None = None  # what its message needs (a reminder's instalment)


def _json(value: Any) -> str:
    return json.dumps(value, default=str, sort_keys=True)


async def in_treatment(session: AsyncSession, account_ids: Sequence[str]) -> set[str]:
    """The accounts with a pending collection or hardship step (a reminder or a callback does
    not make an account in treatment)."""
    rows = await session.scalars(
        text("""
            SELECT DISTINCT account_id FROM timer
            WHERE status = 'pending' AND account_id = ANY(CAST(:ids AS text[]))
              AND purpose = ANY(CAST(:treating AS text[]))
        """),
        {"ids": list(account_ids), "treating": list(TREATING)},
    )
    return set(rows)


async def current_treatment(session: AsyncSession, account_id: str) -> TreatmentRow | None:
    row = (
        await session.execute(
            text("""
                SELECT account_id, strategy_id, version, variant, name, bucket
                FROM treatment WHERE account_id = :a
            """),
            {"a": account_id},
        )
    ).first()
    return None if row is None else TreatmentRow(*row)


async def treatment_bucket(session: AsyncSession, account_id: str) -> str | None:
    found: str | None = await session.scalar(
        text("SELECT bucket FROM treatment WHERE account_id = :a"), {"a": account_id}
    )
    return found


async def pending_steps(session: AsyncSession, account_id: str) -> int:
    """The account's pending collection and hardship steps."""
    found: int = await session.scalar(
        text("""
            SELECT count(*) FROM timer
            WHERE account_id = :a AND status = 'pending'
              AND purpose = ANY(CAST(:treating AS text[]))
        """),
        {"a": account_id, "treating": list(TREATING)},
    )
    return found


async def hold(session: AsyncSession, account_id: str, until: datetime) -> list[str]:
    """Pending steps due before ``until`` move there; returns their contact ids."""
    moved = await session.execute(
        text("""
            UPDATE timer SET due_at = CAST(:until AS timestamptz)
            WHERE account_id = :a AND status = 'pending'
              AND due_at < CAST(:until AS timestamptz)
            RETURNING contact_id
        """),
        {"a": account_id, "until": until},
    )
    return [contact_id for (contact_id,) in moved]


async def resume(session: AsyncSession, account_id: str, now: datetime) -> list[str]:
    """Pending steps become due now (if not already); returns their contact ids."""
    resumed = await session.execute(
        text("""
            UPDATE timer SET due_at = least(due_at, CAST(:now AS timestamptz))
            WHERE account_id = :a AND status = 'pending' RETURNING contact_id
        """),
        {"a": account_id, "now": now},
    )
    return [contact_id for (contact_id,) in resumed]


ALL_PURPOSES: tuple[Purpose, ...] = ("collection", "reminder", "hardship", "callback")


async def cancel_pending(
    session: AsyncSession,
    account_ids: Sequence[str],
    now: datetime,
    purposes: Sequence[Purpose] = ALL_PURPOSES,
) -> list[tuple[str, str]]:
    """Cancel the accounts' pending steps of ``purposes``; returns (account id, contact id) of
    each."""
    rows = await session.execute(
        text("""
            UPDATE timer SET status = 'cancelled', settled_at = :now
            WHERE account_id = ANY(CAST(:ids AS text[])) AND status = 'pending'
              AND purpose = ANY(CAST(:purposes AS text[]))
            RETURNING account_id, contact_id
        """),
        {"ids": list(account_ids), "now": now, "purposes": list(purposes)},
    )
    return [(a, c) for a, c in rows]


async def end_treatments(session: AsyncSession, account_ids: Sequence[str]) -> None:
    await session.execute(
        text("DELETE FROM treatment WHERE account_id = ANY(CAST(:ids AS text[]))"),
        {"ids": list(account_ids)},
    )


async def start(
    session: AsyncSession,
    assignments: Sequence[Assignment],
    treatments: Sequence[TreatmentRow],
    timers: Sequence[Timer],
    now: datetime,
) -> None:
    """Record the variants assigned, the treatments started and their steps' timers."""
    if assignments:
        await session.execute(
            text("""
                INSERT INTO assignment (account_id, strategy_id, version, variant, assigned_at)
                SELECT *, CAST(:now AS timestamptz)
                FROM unnest(CAST(:a AS text[]), CAST(:s AS text[]), CAST(:v AS int[]),
                            CAST(:variant AS text[]))
                ON CONFLICT DO NOTHING
            """),
            {
                "a": [x.account_id for x in assignments],
                "s": [x.strategy_id for x in assignments],
                "v": [x.version for x in assignments],
                "variant": [x.variant for x in assignments],
                "now": now,
            },
        )
    if treatments:
        await session.execute(
            text("""
                INSERT INTO treatment (account_id, strategy_id, version, variant, name, bucket,
                                       started_at)
                SELECT *, CAST(:now AS timestamptz)
                FROM unnest(CAST(:a AS text[]), CAST(:s AS text[]), CAST(:v AS int[]),
                            CAST(:variant AS text[]), CAST(:name AS text[]),
                            CAST(:bucket AS text[]))
                ON CONFLICT (account_id) DO UPDATE
                SET strategy_id = excluded.strategy_id, version = excluded.version,
                    variant = excluded.variant, name = excluded.name,
                    bucket = excluded.bucket, started_at = excluded.started_at
            """),
            {
                "a": [t.account_id for t in treatments],
                "s": [t.strategy_id for t in treatments],
                "v": [t.version for t in treatments],
                "variant": [t.variant for t in treatments],
                "name": [t.name for t in treatments],
                "bucket": [t.bucket for t in treatments],
                "now": now,
            },
        )
    if timers:
        await session.execute(
            text("""
                INSERT INTO timer (contact_id, account_id, customer_id, strategy_id, version,
                                   variant, treatment, step_no, channel, template, offer,
                                   due_at, purpose, context, created_at)
                SELECT *, CAST(:now AS timestamptz)
                FROM unnest(CAST(:id AS text[]), CAST(:a AS text[]), CAST(:c AS text[]),
                            CAST(:s AS text[]), CAST(:v AS int[]), CAST(:variant AS text[]),
                            CAST(:t AS text[]), CAST(:n AS int[]), CAST(:ch AS text[]),
                            CAST(:tpl AS text[]), CAST(:offer AS jsonb[]),
                            CAST(:due AS timestamptz[]), CAST(:purpose AS text[]),
                            CAST(:context AS jsonb[]))
                ON CONFLICT (contact_id) DO NOTHING
            """),
            {
                "id": [t.contact_id for t in timers],
                "a": [t.account_id for t in timers],
                "c": [t.customer_id for t in timers],
                "s": [t.strategy_id for t in timers],
                "v": [t.version for t in timers],
                "variant": [t.variant for t in timers],
                "t": [t.treatment for t in timers],
                "n": [t.step_no for t in timers],
                "ch": [t.channel for t in timers],
                "tpl": [t.template for t in timers],
                "offer": [None if t.offer is None else _json(t.offer) for t in timers],
                "due": [t.due_at for t in timers],
                "purpose": [t.purpose for t in timers],
                "context": [None if t.context is None else _json(t.context) for t in timers],
                "now": now,
            },
        )


async def claim_due(
    session: AsyncSession, now: datetime, accounts: Sequence[str] | None
) -> list[Timer]:
    """Due timers (all, or some accounts'), oldest first and in each customer's strategy order,
    locked; others' locks are skipped."""
    where = "" if accounts is None else "AND account_id = ANY(CAST(:ids AS text[]))"
    claimed = await session.execute(
        text(f"""
            SELECT contact_id, account_id, customer_id, strategy_id, version, variant,
                   treatment, step_no, channel, template, offer, due_at, purpose, context
            FROM timer
            WHERE status = 'pending' AND due_at <= :now {where}
              -- a customer whose details have not arrived yet (they come on another topic)
              -- has no country or address to decide by: their steps wait for them
              AND EXISTS (SELECT 1 FROM customer c WHERE c.customer_id = timer.customer_id)
            -- steps piled up at one instant are decided in strategy order
            ORDER BY due_at, customer_id, account_id, step_no, contact_id
            LIMIT {FIRE_BATCH}
            FOR UPDATE SKIP LOCKED
        """),  # noqa: S608 - the only interpolations are constants
        {"now": now, "ids": list(accounts or [])},
    )
    return [Timer(**row) for row in claimed.mappings()]


async def waiting_for(
    session: AsyncSession, customer_ids: Sequence[str], now: datetime
) -> list[str]:
    """The accounts of these customers with steps due: what waited for their details."""
    rows = await session.execute(
        text("""
            SELECT DISTINCT account_id FROM timer
            WHERE status = 'pending' AND due_at <= :now
              AND customer_id = ANY(CAST(:ids AS text[]))
            ORDER BY account_id
        """),
        {"now": now, "ids": list(customer_ids)},
    )
    return [r[0] for r in rows]


async def fired(
    session: AsyncSession, timers: Sequence[Timer], refs: Sequence[str | None], now: datetime
) -> None:
    """The timers fired, and their contacts logged with the address (``refs``) each used."""
    ids = [t.contact_id for t in timers]
    # the channel and template it went by (a step asking for the best channel chose them)
    await session.execute(
        text("""
            UPDATE timer t SET status = 'fired', settled_at = CAST(:now AS timestamptz),
                               channel = u.channel, template = u.template
            FROM unnest(CAST(:ids AS text[]), CAST(:channels AS text[]),
                        CAST(:templates AS text[])) AS u (contact_id, channel, template)
            WHERE t.contact_id = u.contact_id
        """),
        {
            "ids": ids,
            "channels": [t.channel for t in timers],
            "templates": [t.template for t in timers],
            "now": now,
        },
    )
    await session.execute(
        text("""
            INSERT INTO contact_log (contact_id, customer_id, account_id, channel,
                                     address_ref, requested_at)
            SELECT * , CAST(:now AS timestamptz)
            FROM unnest(CAST(:ids AS text[]), CAST(:customers AS text[]),
                        CAST(:accounts AS text[]), CAST(:channels AS text[]),
                        CAST(:refs AS text[]))
            ON CONFLICT (contact_id) DO NOTHING
        """),
        {
            "ids": ids,
            "customers": [t.customer_id for t in timers],
            "accounts": [t.account_id for t in timers],
            "channels": [t.channel for t in timers],
            "refs": list(refs),
            "now": now,
        },
    )


async def settle(session: AsyncSession, settled: Sequence[tuple[str, str]], now: datetime) -> None:
    """(contact id, status) pairs: cancelled or suppressed."""
    if settled:
        await session.execute(
            text("UPDATE timer SET status = :status, settled_at = :now WHERE contact_id = :id"),
            [{"id": c, "status": s, "now": now} for c, s in settled],
        )


async def move(session: AsyncSession, moved: Sequence[tuple[str, datetime]]) -> None:
    """(contact id, new due instant) pairs."""
    if moved:
        await session.execute(
            text("UPDATE timer SET due_at = :due WHERE contact_id = :id"),
            [{"id": c, "due": d} for c, d in moved],
        )


async def record(session: AsyncSession, decisions: Sequence[Decision]) -> None:
    if not decisions:
        return
    await session.execute(
        text("""
            INSERT INTO decision (account_id, kind, contact_id, reasons, inputs, at)
            SELECT a, k, c, CASE WHEN r = '' THEN '{}' ELSE string_to_array(r, chr(31)) END,
                   i, at
            FROM unnest(CAST(:a AS text[]), CAST(:k AS text[]), CAST(:c AS text[]),
                        CAST(:r AS text[]), CAST(:i AS jsonb[]), CAST(:now AS timestamptz[]))
              AS t (a, k, c, r, i, at)
        """),
        {
            "a": [d.account_id for d in decisions],
            "k": [d.kind for d in decisions],
            "c": [d.contact_id for d in decisions],
            # a text[] per row would need a 2-D array; reasons travel joined and are split back
            "r": ["\x1f".join(d.reasons) for d in decisions],
            "i": [_json(d.inputs) for d in decisions],
            "now": [d.at for d in decisions],
        },
    )


async def decisions_of(
    session: AsyncSession, account_id: str, after: int, limit: int
) -> list[dict[str, Any]]:
    rows = await session.execute(
        text("""
            SELECT id, at, kind, contact_id, reasons, inputs FROM decision
            WHERE account_id = :a AND id > :after ORDER BY id LIMIT :limit
        """),
        {"a": account_id, "after": after, "limit": limit},
    )
    return [dict(r) for r in rows.mappings()]


async def decision_counts(
    session: AsyncSession, since: date | None, until: date | None
) -> list[dict[str, Any]]:
    """Decisions counted by day, kind, rule and variant (segment and variant rows aside)."""
    rows = await session.execute(
        text("""
            SELECT (d.at AT TIME ZONE 'UTC')::date AS day, d.kind,
                   r.reason, t.variant, count(*) AS count
            FROM decision d
            LEFT JOIN timer t ON t.contact_id = d.contact_id
            LEFT JOIN LATERAL unnest(nullif(d.reasons, '{}')) AS r(reason) ON true
            WHERE d.kind NOT IN ('segment', 'variant')
              AND (CAST(:since AS date) IS NULL OR d.at >= CAST(:since AS date))
              AND (CAST(:until AS date) IS NULL OR d.at < CAST(:until AS date) + 1)
            GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
        """),
        {"since": since, "until": until},
    )
    return [dict(r) for r in rows.mappings()]
