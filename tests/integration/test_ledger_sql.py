"""The ledger's SQL and its domain rules must agree; checked on the real database."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ledger.domain.delinquency import bucket_case_sql, bucket_of

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_sql_bucket_case_matches_the_domain_for_every_day_up_to_two_years(
    backbone_engine: AsyncEngine,
) -> None:
    async with backbone_engine.connect() as conn:
        rows = await conn.execute(
            text(f"SELECT c.dpd, {bucket_case_sql('c.dpd')} FROM generate_series(0, 730) c(dpd)")
        )
        from_sql: dict[int, str] = {int(dpd): str(bucket) for dpd, bucket in rows.all()}
    assert from_sql == {dpd: bucket_of(dpd) for dpd in range(731)}
