"""Reporting cycles, their records, files and submissions: statements only, nothing committed
here. Read models for the API are at the end."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

FACTS_SQL = text("""
    SELECT a.*, c.full_name, c.national_id, c.birth_date, c.postal_address, c.country,
           -- what the ledger will show overdue: the next instalment falls due on its date
           -- without an event (one only comes when it is missed, after the grace days)
           a.overdue + CASE WHEN a.next_due_date
                                 < (CAST(:now AS timestamptz)
                                    AT TIME ZONE coalesce(c.timezone, 'UTC'))::date
                            THEN a.next_due_amount ELSE 0 END AS overdue_now,
           last.posted_on AS last_paid_on, last.amount AS last_paid_amount,
           (SELECT coalesce(sum(p.amount), 0) FROM payment p
            WHERE p.account_id = a.account_id AND p.reversed_at IS NULL
              AND p.posted_at >= :since AND p.posted_at < :now) AS paid_in_period,
           (a.rejected_at IS NOT NULL AND a.updated_at <= a.rejected_at
            AND (c.updated_at IS NULL OR c.updated_at <= a.rejected_at)) AS rejected_unchanged,
           ARRAY(SELECT f.flag FROM flag f
                 WHERE f.customer_id = a.customer_id AND f.active
                   AND f.account_id IN ('', a.account_id)) AS flags
    FROM account a LEFT JOIN customer c ON c.customer_id = a.customer_id
    LEFT JOIN LATERAL (SELECT p.posted_on, p.amount FROM payment p
                       WHERE p.account_id = a.account_id AND p.reversed_at IS NULL
                         AND p.posted_at < :now
                       ORDER BY p.posted_at DESC, p.payment_id DESC LIMIT 1) last ON true
    -- in scope: 30 days behind as this service last heard, reported before, or behind since
    -- a first delinquency 30 days ago: days past due count from the oldest unpaid due date,
    -- never earlier than the first delinquency, so this holds every account the ledger has
    -- at 30 or more now, even one whose bucket change at this very clock move is on its way
    WHERE (a.days_past_due >= 30 OR a.reported_status IS NOT NULL
           OR (a.bucket <> 'current'
               AND a.first_delinquency <= (CAST(:now AS timestamptz)
                                           AT TIME ZONE coalesce(c.timezone, 'UTC'))::date - 30))
      AND a.account_id > :after
      AND NOT EXISTS (SELECT 1 FROM report r
                      WHERE r.cycle_id = :cycle AND r.account_id = a.account_id)
    ORDER BY a.account_id
    LIMIT :limit
""")


@dataclass(frozen=True, slots=True)
class Report:
    """One account's record in a cycle: what was decided, why, and the line it carries."""

    account_id: str
    country: str
    kind: str  # submitted, corrected or blocked
    status: str
    compliance_code: str
    reasons: Sequence[str]
    line: str | None


@dataclass(frozen=True, slots=True)
class BureauFile:
    file_id: str
    cycle_id: str
    country: str
    format: str
    path: str


async def start(session: AsyncSession, cycle: str, now: datetime) -> str:
    """The cycle's row, created on its first run; returns its status."""
    status: str = await session.scalar(
        text("""
            INSERT INTO cycle (cycle_id, started_at) VALUES (:c, :now)
            ON CONFLICT (cycle_id) DO UPDATE SET cycle_id = excluded.cycle_id
            RETURNING status
        """),
        {"c": cycle, "now": now},
    )
    return status


async def started(session: AsyncSession, now: datetime) -> list[tuple[str, datetime]]:
    """(cycle id, instant started) of every cycle started by ``now``, oldest first."""
    rows = await session.execute(
        text("SELECT cycle_id, started_at FROM cycle WHERE started_at <= :now ORDER BY started_at"),
        {"now": now},
    )
    return [(c, at) for c, at in rows]


async def facts(
    session: AsyncSession, cycle: str, after: str, limit: int, since: datetime, now: datetime
) -> list[dict[str, Any]]:
    """The next chunk of accounts in scope not yet decided in ``cycle``, after ``after``, with
    everything a record and its gates need. Rows as dicts: the account's own columns (about
    forty) are read whole."""
    rows = await session.execute(
        FACTS_SQL,
        {"cycle": cycle, "after": after, "limit": limit, "since": since, "now": now},
    )
    return [dict(r) for r in rows.mappings()]


async def record(
    session: AsyncSession,
    cycle: str,
    reports: Sequence[Report],
    looked: Sequence[tuple[str, str]],
    reported: Sequence[tuple[str, str]],
    month: str,
) -> None:
    """A chunk's records; each account's history profile value for ``month`` (``looked``); and
    what each account reported now (``reported``)."""
    if reports:
        await session.execute(
            text("""
                INSERT INTO report (cycle_id, account_id, country, kind, status,
                                    compliance_code, reasons, line)
                SELECT :cycle, a, country, kind, status, nullif(code, ''),
                       CASE WHEN reasons = '' THEN '{}'
                            ELSE string_to_array(reasons, chr(31)) END,
                       line
                FROM unnest(CAST(:a AS text[]), CAST(:country AS text[]),
                            CAST(:kind AS text[]), CAST(:status AS text[]),
                            CAST(:code AS text[]), CAST(:reasons AS text[]),
                            CAST(:line AS text[]))
                  AS t (a, country, kind, status, code, reasons, line)
                ON CONFLICT (cycle_id, account_id) DO NOTHING
            """),
            {
                "cycle": cycle,
                "a": [r.account_id for r in reports],
                "country": [r.country for r in reports],
                "kind": [r.kind for r in reports],
                "status": [r.status for r in reports],
                "code": [r.compliance_code for r in reports],
                "reasons": ["\x1f".join(r.reasons) for r in reports],
                "line": [r.line for r in reports],
            },
        )
    await session.execute(
        text("""
            UPDATE account a
            SET history = jsonb_set(a.history, ARRAY[CAST(:month AS text)], to_jsonb(u.value))
            FROM unnest(CAST(:ids AS text[]), CAST(:values AS text[])) AS u (id, value)
            WHERE a.account_id = u.id
        """),
        {"month": month, "ids": [a for a, _ in looked], "values": [v for _, v in looked]},
    )
    if reported:
        await session.execute(
            text("""
                UPDATE account a SET reported_status = u.status, reported_cycle = :cycle
                FROM unnest(CAST(:ids AS text[]), CAST(:statuses AS text[])) AS u (id, status)
                WHERE a.account_id = u.id
            """),
            {
                "cycle": cycle,
                "ids": [a for a, _ in reported],
                "statuses": [s for _, s in reported],
            },
        )


async def built(session: AsyncSession, cycle: str) -> None:
    await session.execute(
        text("UPDATE cycle SET status = 'built' WHERE cycle_id = :c"), {"c": cycle}
    )


async def has_file(session: AsyncSession, cycle: str, country: str) -> bool:
    found = await session.scalar(
        text("SELECT 1 FROM bureau_file WHERE cycle_id = :c AND country = :k"),
        {"c": cycle, "k": country},
    )
    return found is not None


async def lines(
    session: AsyncSession, cycle: str, country: str, chunk: int
) -> AsyncIterator[list[str]]:
    """The cycle's record lines for ``country``, by account, ``chunk`` at a time."""
    streamed = await session.stream(
        text("""
            SELECT line FROM report
            WHERE cycle_id = :c AND country = :k AND line IS NOT NULL
            ORDER BY account_id
        """),
        {"c": cycle, "k": country},
    )
    async for rows in streamed.partitions(chunk):
        yield [line for (line,) in rows]


async def add_file(
    session: AsyncSession,
    file: BureauFile,
    records: int,
    now: datetime,
) -> None:
    """An archived file, and the records it carries marked with it."""
    await session.execute(
        text("""
            INSERT INTO bureau_file (file_id, cycle_id, country, format, path, records,
                                     created_at)
            VALUES (:id, :c, :k, :f, :p, :n, :now) ON CONFLICT DO NOTHING
        """),
        {
            "id": file.file_id,
            "c": file.cycle_id,
            "k": file.country,
            "f": file.format,
            "p": file.path,
            "n": records,
            "now": now,
        },
    )
    await session.execute(
        text("""
            UPDATE report SET file_id = :id
            WHERE cycle_id = :c AND country = :k AND line IS NOT NULL
        """),
        {"id": file.file_id, "c": file.cycle_id, "k": file.country},
    )


async def unsubmitted(session: AsyncSession, cycle: str) -> list[BureauFile]:
    rows = await session.execute(
        text("""
            SELECT file_id, cycle_id, country, format, path FROM bureau_file
            WHERE cycle_id = :c AND submitted_at IS NULL
        """),
        {"c": cycle},
    )
    return [BureauFile(*r) for r in rows]


async def submitted(
    session: AsyncSession,
    file: BureauFile,
    how: str,
    acks: Mapping[str, str],
    now: datetime,
) -> None:
    """A file submitted, and the bureau's answer per record (``acks``). A rejected record is
    not sent again until something about it changes; what it last reported stands as before."""
    await session.execute(
        text("UPDATE bureau_file SET submitted_at = :now, submission = :how WHERE file_id = :id"),
        {"now": now, "how": how, "id": file.file_id},
    )
    if not acks:
        return
    await session.execute(
        text("""
            UPDATE report r SET ack = u.ack
            FROM unnest(CAST(:ids AS text[]), CAST(:acks AS text[])) AS u (id, ack)
            WHERE r.cycle_id = :c AND r.account_id = u.id
        """),
        {"c": file.cycle_id, "ids": list(acks), "acks": list(acks.values())},
    )
    await session.execute(
        text("""
            UPDATE account a
            SET rejected_at = :now,
                reported_status = (
                  SELECT r.status FROM report r
                  WHERE r.account_id = a.account_id AND r.cycle_id < :c
                    AND r.kind <> 'blocked' AND r.ack IS DISTINCT FROM 'rejected'
                  ORDER BY r.cycle_id DESC LIMIT 1)
            WHERE a.account_id = ANY(CAST(:ids AS text[]))
        """),
        {
            "now": now,
            "c": file.cycle_id,
            "ids": [a for a, ack in acks.items() if ack == "rejected"],
        },
    )


async def finished(session: AsyncSession, cycle: str, now: datetime) -> None:
    await session.execute(
        text("UPDATE cycle SET status = 'submitted', finished_at = :now WHERE cycle_id = :c"),
        {"c": cycle, "now": now},
    )


# --- read models for the API -------------------------------------------------------------------


async def cycles(session: AsyncSession) -> list[dict[str, Any]]:
    rows = await session.execute(
        text("SELECT * FROM cycle ORDER BY started_at DESC, cycle_id DESC")
    )
    return [dict(r) for r in rows.mappings()]


async def cycle_summary(session: AsyncSession, cycle_id: str) -> dict[str, Any] | None:
    """One cycle with its counts by kind and country, its blocks by reason and its files."""
    found = (
        (await session.execute(text("SELECT * FROM cycle WHERE cycle_id = :c"), {"c": cycle_id}))
        .mappings()
        .first()
    )
    if found is None:
        return None
    kinds = await session.execute(
        text("""
            SELECT kind, country, count(*) AS n FROM report WHERE cycle_id = :c
            GROUP BY kind, country ORDER BY kind, country
        """),
        {"c": cycle_id},
    )
    reasons = await session.execute(
        text("""
            SELECT reason, count(*) AS n
            FROM report, unnest(reasons) AS reason
            WHERE cycle_id = :c AND kind = 'blocked'
            GROUP BY reason ORDER BY reason
        """),
        {"c": cycle_id},
    )
    files = await session.execute(
        text("""
            SELECT file_id, country, format, records, created_at, submitted_at, submission
            FROM bureau_file WHERE cycle_id = :c ORDER BY country
        """),
        {"c": cycle_id},
    )
    return dict(found) | {
        "counts": [dict(r) for r in kinds.mappings()],
        "blocked_by_reason": {r.reason: r.n for r in reasons},
        "files": [dict(r) for r in files.mappings()],
    }


async def file_path(session: AsyncSession, cycle_id: str, country: str) -> str | None:
    found: str | None = await session.scalar(
        text("SELECT path FROM bureau_file WHERE cycle_id = :c AND country = :k"),
        {"c": cycle_id, "k": country},
    )
    return found


async def reports_of(session: AsyncSession, account_id: str) -> list[dict[str, Any]]:
    rows = await session.execute(
        text("""
            SELECT cycle_id, country, kind, status, compliance_code, reasons, file_id,
                   ack, line
            FROM report WHERE account_id = :a ORDER BY cycle_id
        """),
        {"a": account_id},
    )
    return [dict(r) for r in rows.mappings()]
