"""Databases for tests: created through an admin connection, built through the migrations."""

from __future__ import annotations

import asyncio

import asyncpg
from sqlalchemy.engine import make_url

from shared import migrations

PASSWORD = "arrears-test"


async def create_database(admin_url: str, name: str) -> str:
    """A database and a role of the same name owning it; returns its asyncpg-driver URL."""
    conn = await asyncpg.connect(admin_url)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", name):
            await conn.execute(f"CREATE ROLE {name} LOGIN PASSWORD '{PASSWORD}'")
        if await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f"DROP DATABASE {name} WITH (FORCE)")
        await conn.execute(f"CREATE DATABASE {name} OWNER {name}")
        await conn.execute(f"REVOKE ALL ON DATABASE {name} FROM PUBLIC")
    finally:
        await conn.close()
    url = make_url(admin_url).set(
        drivername="postgresql+asyncpg", username=name, password=PASSWORD, database=name
    )
    return url.render_as_string(hide_password=False)


async def migrated_database(admin_url: str, name: str, service: str) -> str:
    url = await create_database(admin_url, name)
    await asyncio.to_thread(migrations.upgrade, service, url)
    return url
