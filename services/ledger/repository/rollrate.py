"""The bucket history read for roll rates, set-based: statements only, nothing committed here.
:func:`services.ledger.domain.rollrate.transitions` is the specification of ``transitions``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession


async def transitions(
    session: AsyncSession, bounds: Sequence[datetime]
) -> Counter[tuple[int, str, str]]:
    """(period k, bucket at bounds[k], bucket at bounds[k+1]) -> accounts opened by bounds[k]."""
    # Only accounts that ever changed bucket need looking up; the others stood where they
    # stand now at every boundary, and are counted in one pass.
    rows = await session.execute(
        text("""
            WITH b AS (
              SELECT (k - 1)::int AS k, at
              FROM unnest(CAST(:bounds AS timestamptz[])) WITH ORDINALITY AS u (at, k)
            ),
            moved AS (
              SELECT a.account_id, a.opened_on, a.bucket FROM account a
              WHERE EXISTS (SELECT 1 FROM bucket_change c WHERE c.account_id = a.account_id)
            ),
            state AS (
              SELECT m.account_id, m.opened_on, b.k, b.at,
                     coalesce(
                       (SELECT c.to_bucket FROM bucket_change c
                        WHERE c.account_id = m.account_id AND c.changed_at <= b.at
                        ORDER BY c.id DESC LIMIT 1),
                       (SELECT c.from_bucket FROM bucket_change c
                        WHERE c.account_id = m.account_id
                        ORDER BY c.id LIMIT 1)) AS bucket
              FROM moved m CROSS JOIN b
            )
            SELECT s.k, s.bucket AS from_bucket, t.bucket AS to_bucket, count(*) AS n
            FROM state s JOIN state t ON t.account_id = s.account_id AND t.k = s.k + 1
            WHERE s.opened_on <= (s.at AT TIME ZONE 'UTC')::date
            GROUP BY 1, 2, 3
            UNION ALL
            SELECT b.k, a.bucket, a.bucket, count(*)
            FROM account a JOIN b ON a.opened_on <= (b.at AT TIME ZONE 'UTC')::date
            WHERE b.k < :last
              AND NOT EXISTS (SELECT 1 FROM bucket_change c WHERE c.account_id = a.account_id)
            GROUP BY 1, 2, 3
        """),
        {"bounds": list(bounds), "last": len(bounds) - 1},
    )
    out: Counter[tuple[int, str, str]] = Counter()
    for r in rows:
        out[(r.k, r.from_bucket, r.to_bucket)] += r.n
    return out


async def delinquent_overdue(session: AsyncSession) -> list[tuple[str, str, Decimal]]:
    """(bucket, currency, overdue) summed by bucket and currency, of accounts behind now."""
    rows = await session.execute(
        text("""
            SELECT bucket, currency, sum(overdue) AS overdue FROM account
            WHERE bucket <> 'current' AND overdue > 0 GROUP BY 1, 2 ORDER BY 1, 2
        """)
    )
    return [(r.bucket, r.currency, r.overdue) for r in rows]
