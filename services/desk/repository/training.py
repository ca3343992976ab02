"""Training sessions: simulated customers only, in tables of their own."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession


async def start(
    session: AsyncSession,
    session_id: str,
    username: str,
    persona: str,
    locale: str,
    seed: int,
    local_time: str,
    state: dict[str, Any],
    now: datetime,
) -> None:
    await session.execute(
        text("""
            INSERT INTO training_session (session_id, username, persona, locale, seed,
                                          local_time, state, started_at)
            VALUES (:id, :u, :p, :l, :s, :t, CAST(:st AS jsonb), :now)
        """),
        {
            "id": session_id,
            "u": username,
            "p": persona,
            "l": locale,
            "s": seed,
            "t": local_time,
            "st": json.dumps(state, ensure_ascii=False),
            "now": now,
        },
    )


async def get(
    session: AsyncSession, session_id: str, *, lock: bool = False
) -> dict[str, Any] | None:
    r = (
        await session.execute(
            text(
                "SELECT * FROM training_session WHERE session_id = :id"
                + (" FOR UPDATE" if lock else "")
            ),
            {"id": session_id},
        )
    ).first()
    return dict(r._mapping) if r is not None else None


async def save(
    session: AsyncSession,
    session_id: str,
    state: dict[str, Any],
    ended: bool,
    outcome: str | None,
    score: int | None,
    deductions: list[dict[str, Any]] | None,
    now: datetime,
) -> None:
    await session.execute(
        text("""
            UPDATE training_session SET state = CAST(:st AS jsonb),
              status = CASE WHEN :ended THEN 'ended' ELSE 'open' END,
              outcome = :o, score = :sc, deductions = CAST(:d AS jsonb),
              ended_at = CASE WHEN :ended THEN CAST(:now AS timestamptz) END
            WHERE session_id = :id
        """),
        {
            "id": session_id,
            "st": json.dumps(state, ensure_ascii=False),
            "ended": ended,
            "o": outcome,
            "sc": score,
            "d": json.dumps(deductions, ensure_ascii=False) if deductions is not None else None,
            "now": now,
        },
    )


async def sessions(session: AsyncSession, username: str | None = None) -> list[dict[str, Any]]:
    rows = await session.execute(
        text("""
            SELECT session_id, username, persona, locale, status, outcome, score, deductions,
                   started_at, ended_at
            FROM training_session
            WHERE CAST(:u AS text) IS NULL OR username = :u
            ORDER BY started_at DESC, session_id LIMIT 200
        """),
        {"u": username},
    )
    return [dict(r._mapping) for r in rows]


async def progress(session: AsyncSession) -> list[dict[str, Any]]:
    """Per trainee: sessions ended, average and best score, and the latest score."""
    rows = await session.execute(
        text("""
            SELECT username, count(*) AS sessions, round(avg(score)) AS average,
                   max(score) AS best,
                   (array_agg(score ORDER BY ended_at DESC))[1] AS latest
            FROM training_session WHERE status = 'ended'
            GROUP BY username ORDER BY username
        """)
    )
    return [dict(r._mapping) for r in rows]
