from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from shared.kafka import ensure_topics
from tests.support.databases import migrated_database
from tests.support.infra import Infra, provide

EFFECTS_DDL = """
CREATE TABLE IF NOT EXISTS effects (
  id bigserial PRIMARY KEY,
  ce_id text NOT NULL,          -- deliberately not unique: a double application must show
  customer_id text NOT NULL,
  applied_at timestamptz NOT NULL DEFAULT now()
)
"""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The folder a test lives in is its kind; markers then select with -m.
    for item in items:
        for kind in ("unit", "integration", "e2e", "faults"):
            if f"/tests/{kind}/" in str(item.path):
                item.add_marker(getattr(pytest.mark, kind))


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    with provide() as provided:
        yield provided


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def kafka(infra: Infra) -> str:
    await ensure_topics(infra.bootstrap, 6)
    return infra.bootstrap


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def backbone_db(infra: Infra) -> str:
    """A database with the delivery-guarantee tables (through a service's migrations) plus an
    ``effects`` table that test handlers write to."""
    url = await migrated_database(infra.admin_url, "arrears_backbone_test", "ledger")
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.execute(text(EFFECTS_DDL))
    await engine.dispose()
    return url


@pytest_asyncio.fixture(loop_scope="session")
async def backbone_engine(backbone_db: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(backbone_db)
    async with engine.begin() as conn:
        await conn.execute(text("TRUNCATE effects, inbox, outbox"))
    yield engine
    await engine.dispose()
