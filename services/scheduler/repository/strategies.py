"""Strategy versions as stored: statements only, nothing committed here."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession


async def checksum_of(session: AsyncSession, strategy_id: str, version: int) -> str | None:
    found: str | None = await session.scalar(
        text("SELECT checksum FROM strategy_version WHERE strategy_id = :s AND version = :v"),
        {"s": strategy_id, "v": version},
    )
    return found


async def insert_draft(
    session: AsyncSession, strategy_id: str, version: int, body: str, digest: str, now: datetime
) -> None:
    await session.execute(
        text("""
            INSERT INTO strategy_version (strategy_id, version, status, body, checksum, created_at)
            VALUES (:s, :v, 'draft', CAST(:body AS jsonb), :digest, :now)
            ON CONFLICT (strategy_id, version) DO NOTHING  -- replicas seeding at once
        """),
        {"s": strategy_id, "v": version, "body": body, "digest": digest, "now": now},
    )


async def published_version(session: AsyncSession, strategy_id: str) -> int | None:
    found: int | None = await session.scalar(
        text("""
            SELECT version FROM strategy_version
            WHERE strategy_id = :s AND status = 'published'
        """),
        {"s": strategy_id},
    )
    return found


async def lock_status(session: AsyncSession, strategy_id: str, version: int) -> str | None:
    found: str | None = await session.scalar(
        text("""
            SELECT status FROM strategy_version WHERE strategy_id = :s AND version = :v
            FOR UPDATE
        """),
        {"s": strategy_id, "v": version},
    )
    return found


async def publish(session: AsyncSession, strategy_id: str, version: int, now: datetime) -> None:
    """This version becomes the published one; the one published before is retired."""
    await session.execute(
        text("""
            UPDATE strategy_version SET status = 'retired', retired_at = :now
            WHERE strategy_id = :s AND status = 'published'
        """),
        {"s": strategy_id, "now": now},
    )
    await session.execute(
        text("""
            UPDATE strategy_version SET status = 'published', published_at = :now,
                                        retired_at = NULL
            WHERE strategy_id = :s AND version = :v
        """),
        {"s": strategy_id, "v": version, "now": now},
    )


async def retire(session: AsyncSession, strategy_id: str, version: int, now: datetime) -> bool:
    """Whether the version existed (and is now retired)."""
    found = await session.execute(
        text("""
            UPDATE strategy_version SET status = 'retired', retired_at = :now
            WHERE strategy_id = :s AND version = :v RETURNING 1
        """),
        {"s": strategy_id, "v": version, "now": now},
    )
    return found.first() is not None


async def versions(session: AsyncSession) -> list[dict[str, Any]]:
    rows = await session.execute(
        text("""
            SELECT strategy_id, version, status, checksum, created_at, published_at, retired_at
            FROM strategy_version ORDER BY strategy_id, version
        """)
    )
    return [dict(r) for r in rows.mappings()]


async def body(session: AsyncSession, strategy_id: str, version: int) -> Any:
    """The stored JSON body, or None."""
    return await session.scalar(
        text("SELECT body FROM strategy_version WHERE strategy_id = :s AND version = :v"),
        {"s": strategy_id, "v": version},
    )


async def published(session: AsyncSession) -> list[tuple[str, int, Any]]:
    """(strategy id, version, body) of every published version, by strategy id."""
    rows = await session.execute(
        text("""
            SELECT strategy_id, version, body FROM strategy_version
            WHERE status = 'published' ORDER BY strategy_id
        """)
    )
    return [(s, v, b) for s, v, b in rows]
