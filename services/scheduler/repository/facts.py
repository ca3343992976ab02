"""What the scheduler's decisions read: each account's party for the compliance engine, its
customer's contact history, its standing as of now, its segment facts, and its score.
Statements only, typed rows out, nothing committed here."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from services.scheduler.domain import scoring
from services.scheduler.domain.compliance import Contact, Party
from services.scheduler.domain.strategy import AccountFacts
from shared.events import FAILURES, RIGHT_PARTY

# The address column each channel uses.
CHANNEL_ADDRESS = {
    "sms": "phone_ref",
    "voice": "phone_ref",
    "email": "email_ref",
    "letter": "postal_ref",
    "field_visit": "postal_ref",
}


@dataclass(frozen=True, slots=True)
class Standing:
    """An account as of now, for a message: what is overdue, days past due, currency, locale."""

    account_id: str
    currency: str
    locale: str | None
    overdue: Decimal
    days_past_due: int
    propensity: Decimal | None = None  # the account's last score
    country: str | None = None


async def parties(session: AsyncSession, account_ids: Sequence[str]) -> dict[str, Party]:
    """What the compliance engine needs of each account's customer."""
    rows = await session.execute(
        text("""
            SELECT a.account_id, a.customer_id, a.dispute_open, a.plan_kept, a.promise_due,
                   a.hardship_until, c.country, c.timezone, c.phone_ref, c.email_ref, c.postal_ref,
                   coalesce(c.ceased, false) AS ceased,
                   ARRAY(SELECT f.flag FROM flag f
                         WHERE f.customer_id = a.customer_id AND f.active
                           AND f.account_id IN ('', a.account_id)) AS flags,
                   ARRAY(SELECT o.channel || ' ' || o.address_ref FROM opt_out o
                         WHERE o.customer_id = a.customer_id) AS opt_outs
            FROM account a LEFT JOIN customer c ON c.customer_id = a.customer_id
            WHERE a.account_id = ANY(CAST(:ids AS text[]))
        """),
        {"ids": list(account_ids)},
    )
    found = {}
    for r in rows.mappings():
        addresses = {channel: r[column] for channel, column in CHANNEL_ADDRESS.items() if r[column]}
        opted: set[tuple[str, str]] = set()
        for entry in r["opt_outs"]:
            channel, _, ref = entry.partition(" ")
            # An opt-out without an address covers whatever address the channel has now.
            opted.add((channel, ref or addresses.get(channel, "")))
        found[r["account_id"]] = Party(
            customer_id=r["customer_id"],
            account_id=r["account_id"],
            country=r["country"],
            timezone=r["timezone"],
            addresses=addresses,
            opted_out=frozenset(opted),
            ceased=r["ceased"],
            dispute_open=r["dispute_open"],
            flags=frozenset(r["flags"]),
            plan_kept=r["plan_kept"],
            promise_due=r["promise_due"],
            hardship_until=r["hardship_until"],
        )
    return found


async def history(
    session: AsyncSession, customer_ids: Sequence[str], addresses: Sequence[str], since: datetime
) -> list[Contact]:
    """The contacts requested since ``since`` with the customers or at the addresses given
    (another customer's contacts at a shared number count against that number's caps), with
    their outcomes, each naming its customer."""
    rows = await session.execute(
        text("""
            SELECT contact_id, customer_id, account_id, channel,
                   coalesce(attempted_at, requested_at) AS at, address_ref, outcome
            FROM contact_log
            WHERE customer_id = ANY(CAST(:ids AS text[])) AND requested_at >= :since
            UNION
            SELECT contact_id, customer_id, account_id, channel,
                   coalesce(attempted_at, requested_at), address_ref, outcome
            FROM contact_log
            WHERE address_ref = ANY(CAST(:refs AS text[])) AND requested_at >= :since
        """),
        {"ids": list(customer_ids), "refs": list(addresses), "since": since},
    )
    return [
        Contact(
            r.account_id, r.channel, r.at, r.address_ref, r.outcome, r.customer_id, r.contact_id
        )
        for r in rows
    ]


async def standings(
    session: AsyncSession, account_ids: Sequence[str], now: datetime
) -> dict[str, Standing]:
    # As of now, not of the miss that started the treatment: days past due go on counting in
    # the customer's calendar (not while a plan is kept), and the next instalment counts as
    # overdue from its due date (the ledger announces it only once missed, after the grace
    # days). A message never understates what is owed.
    rows = await session.execute(
        text("""
            SELECT a.account_id, a.currency, c.locale, c.country,
                   a.overdue + CASE WHEN a.next_due_date < l.today
                                    THEN a.next_due_amount ELSE 0 END AS overdue,
                   a.days_past_due
                     + CASE WHEN a.days_past_due > 0 AND NOT a.plan_kept
                                 AND a.dpd_as_of IS NOT NULL
                            THEN greatest(0, l.today - (a.dpd_as_of AT TIME ZONE l.tz)::date)
                            ELSE 0 END AS days_past_due,
                   s.value AS propensity
            FROM account a LEFT JOIN customer c USING (customer_id)
            LEFT JOIN score s USING (account_id)
            CROSS JOIN LATERAL (
              SELECT coalesce(c.timezone, 'UTC') AS tz,
                     (CAST(:now AS timestamptz)
                      AT TIME ZONE coalesce(c.timezone, 'UTC'))::date AS today) l
            WHERE a.account_id = ANY(CAST(:ids AS text[]))
        """),
        {"ids": list(account_ids), "now": now},
    )
    return {
        r.account_id: Standing(
            r.account_id,
            r.currency,
            r.locale,
            r.overdue,
            r.days_past_due,
            r.propensity,
            r.country,
        )
        for r in rows
    }


async def facts(
    session: AsyncSession, account_ids: Sequence[str]
) -> dict[str, tuple[str, AccountFacts]]:
    """Each account's customer and the facts a strategy segments on."""
    rows = await session.execute(
        text("""
            SELECT a.account_id, a.customer_id, a.bucket, a.overdue, a.product, c.country,
                   coalesce(s.band, 'medium') AS band, a.times_late
            FROM account a
            LEFT JOIN customer c USING (customer_id)
            LEFT JOIN score s USING (account_id)
            WHERE a.account_id = ANY(CAST(:ids AS text[]))
        """),
        {"ids": list(account_ids)},
    )
    return {
        r.account_id: (
            r.customer_id,
            AccountFacts(
                bucket=r.bucket,
                score_band=r.band,
                product=r.product,
                country=r.country,
                overdue=r.overdue,
                times_late=r.times_late,
            ),
        )
        for r in rows
    }


async def score_inputs(
    session: AsyncSession, account_ids: Sequence[str], now: datetime
) -> dict[str, scoring.Inputs]:
    """What :func:`scoring.features` needs, as of now (the fitting replays the same from the
    history: services/scheduler/domain/learning.py)."""
    rows = await session.execute(
        text("""
            SELECT a.account_id, c.credit_score, a.days_past_due, a.broken_promises,
                   a.kept_promises, a.overdue, a.times_late,
                   (SELECT count(*) FROM payment_seen p
                    WHERE p.account_id = a.account_id AND p.at >= :since) AS payments_90d,
                   k.talks, k.failures, k.attempts,
                   last.channel AS last_channel,
                   extract(hour FROM last.attempted_at
                                AT TIME ZONE coalesce(c.timezone, 'UTC'))::int AS last_hour
            FROM account a LEFT JOIN customer c USING (customer_id)
            CROSS JOIN LATERAL (
              SELECT count(*) FILTER (WHERE l.outcome = ANY(CAST(:talks AS text[]))) AS talks,
                     count(*) FILTER (WHERE l.outcome = ANY(CAST(:failures AS text[])))
                       AS failures,
                     count(*) FILTER (WHERE l.outcome IS NOT NULL) AS attempts
              FROM contact_log l WHERE l.account_id = a.account_id) k
            LEFT JOIN LATERAL (
              SELECT l.channel, l.attempted_at FROM contact_log l
              WHERE l.account_id = a.account_id AND l.attempted_at IS NOT NULL
              ORDER BY l.attempted_at DESC, l.contact_id DESC LIMIT 1) last ON true
            WHERE a.account_id = ANY(CAST(:ids AS text[]))
        """),
        {
            "ids": list(account_ids),
            "since": now - timedelta(days=90),
            "talks": sorted(RIGHT_PARTY),
            "failures": sorted(FAILURES),
        },
    )
    return {
        r.account_id: scoring.Inputs(
            credit_score=r.credit_score,
            days_past_due=r.days_past_due,
            payments_90d=r.payments_90d,
            broken_promises=r.broken_promises,
            kept_promises=r.kept_promises,
            right_party_contacts=r.talks,
            failed_contacts=r.failures,
            overdue=r.overdue,
            times_late=r.times_late,
            contacts=r.attempts,
            last_channel=r.last_channel,
            last_local_hour=r.last_hour,
        )
        for r in rows
    }


async def credit_scores(session: AsyncSession, account_ids: Sequence[str]) -> dict[str, int | None]:
    """Each account's customer's credit score (its segment in a contact table)."""
    rows = await session.execute(
        text("""
            SELECT a.account_id, c.credit_score
            FROM account a LEFT JOIN customer c USING (customer_id)
            WHERE a.account_id = ANY(CAST(:ids AS text[]))
        """),
        {"ids": list(account_ids)},
    )
    return {a: s for a, s in rows}


async def model_versions(session: AsyncSession, account_ids: Sequence[str]) -> dict[str, int]:
    """The model version each account was last scored with."""
    rows = await session.execute(
        text(
            "SELECT account_id, model_version FROM score"
            " WHERE account_id = ANY(CAST(:ids AS text[]))"
        ),
        {"ids": list(account_ids)},
    )
    return {a: v for a, v in rows}


def _json(value: Any) -> str:
    return json.dumps(value, default=str, sort_keys=True)


async def save_scores(
    session: AsyncSession, scores: dict[str, scoring.Score], now: datetime
) -> None:
    if not scores:
        return
    await session.execute(
        text("""
            INSERT INTO score (account_id, value, band, model_version, inputs,
                               contributions, computed_at)
            SELECT * , CAST(:now AS timestamptz)
            FROM unnest(CAST(:ids AS text[]), CAST(:values AS numeric[]),
                        CAST(:bands AS text[]), CAST(:versions AS int[]),
                        CAST(:inputs AS jsonb[]), CAST(:contributions AS jsonb[]))
            ON CONFLICT (account_id) DO UPDATE
            SET value = excluded.value, band = excluded.band,
                model_version = excluded.model_version, inputs = excluded.inputs,
                contributions = excluded.contributions, computed_at = excluded.computed_at
        """),
        {
            "ids": list(scores),
            "values": [s.value for s in scores.values()],
            "bands": [s.band for s in scores.values()],
            "versions": [s.model_version for s in scores.values()],
            "inputs": [_json(s.inputs) for s in scores.values()],
            "contributions": [_json(s.contributions) for s in scores.values()],
            "now": now,
        },
    )
