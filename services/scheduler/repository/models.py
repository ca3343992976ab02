"""Propensity model versions as stored: statements only, nothing committed here."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession


async def checksum_of(session: AsyncSession, version: int) -> str | None:
    found: str | None = await session.scalar(
        text("SELECT checksum FROM model_version WHERE version = :v"), {"v": version}
    )
    return found


async def insert_draft(
    session: AsyncSession, version: int, kind: str, body: str, digest: str, now: datetime
) -> None:
    await session.execute(
        text("""
            INSERT INTO model_version (version, kind, status, body, checksum, created_at)
            VALUES (:v, :kind, 'draft', CAST(:body AS jsonb), :digest, :now)
            ON CONFLICT (version) DO NOTHING  -- replicas seeding at once
        """),
        {"v": version, "kind": kind, "body": body, "digest": digest, "now": now},
    )


async def lock_status(session: AsyncSession, version: int) -> str | None:
    found: str | None = await session.scalar(
        text("SELECT status FROM model_version WHERE version = :v FOR UPDATE"), {"v": version}
    )
    return found


async def set_status(session: AsyncSession, version: int, status: str, now: datetime) -> None:
    column = {"published": "published_at", "retired": "retired_at"}[status]
    await session.execute(
        text(
            f"UPDATE model_version SET status = :status, {column} = :now"  # noqa: S608
            " WHERE version = :v"
        ),
        {"v": version, "status": status, "now": now},
    )


async def versions(session: AsyncSession) -> list[dict[str, Any]]:
    rows = await session.execute(
        text("""
            SELECT version, kind, status, checksum, created_at, published_at, retired_at,
                   body->'training' AS training, body->'metrics'->'held_out' AS held_out
            FROM model_version ORDER BY version
        """)
    )
    return [dict(r) for r in rows.mappings()]


async def body(session: AsyncSession, version: int) -> Any:
    return await session.scalar(
        text("SELECT body FROM model_version WHERE version = :v"), {"v": version}
    )


async def published(session: AsyncSession) -> list[tuple[int, Any]]:
    rows = await session.execute(
        text("SELECT version, body FROM model_version WHERE status = 'published' ORDER BY version")
    )
    return [(v, b) for v, b in rows]


async def latest_version(session: AsyncSession) -> int:
    found: int | None = await session.scalar(text("SELECT max(version) FROM model_version"))
    return found or 0
