"""One Alembic migration tree per service (``services/<name>/migrations``), driven from code so
that the launcher, the tests and ``python -m services.<name> migrate`` all use the same path."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, pool, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

SERVICES_DIR = Path(__file__).resolve().parent.parent / "services"


def config(service: str, url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(SERVICES_DIR / service / "migrations"))
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(service: str, url: str, revision: str = "head") -> None:
    """Blocking; call it outside a running event loop (or through ``asyncio.to_thread``)."""
    command.upgrade(config(service, url), revision)


def head(service: str) -> str:
    heads = ScriptDirectory.from_config(config(service)).get_heads()
    if len(heads) != 1:
        raise RuntimeError(f"{service} has {len(heads)} migration heads; merge them")
    return heads[0]


async def current(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        exists = (
            await conn.execute(text("SELECT to_regclass('alembic_version') IS NOT NULL"))
        ).scalar_one()
        if not exists:
            return None
        return (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()


def run_env(target_metadata: MetaData | None = None) -> None:
    """The body of every service's ``env.py``: online migrations over an async engine."""
    from alembic import context

    cfg = context.config

    def migrate(connection: Connection) -> None:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()

    async def run() -> None:
        url = cfg.get_main_option("sqlalchemy.url")
        if not url:
            raise RuntimeError("no database url given to the migration")
        engine = create_async_engine(url, poolclass=pool.NullPool)
        try:
            async with engine.connect() as connection:
                await connection.run_sync(migrate)
        finally:
            await engine.dispose()

    if context.is_offline_mode():
        context.configure(url=cfg.get_main_option("sqlalchemy.url"), literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
    else:
        asyncio.run(run())
