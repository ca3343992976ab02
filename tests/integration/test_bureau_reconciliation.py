"""Across services: the bureau reconciles each record with the ledger's own state (its public
API) at cycle time, and blocks a record whose amounts the ledger does not confirm."""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from services.bureau.cycle import Cycles
from services.bureau.handlers import Bureau
from services.bureau.settings import BureauSettings
from shared.auth import DEV_KEY
from shared.clock import ControlledClock
from shared.db import make_engine, uow_factory
from shared.events import CustomerUpserted, NoticeDelivered
from shared.service import create_app
from tests.integration.test_ledger import Ledger, open_loan
from tests.support.databases import migrated_database
from tests.support.infra import Infra

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_a_record_the_ledger_does_not_confirm_is_blocked(
    ledger: Ledger, infra: Infra, tmp_path: Path
) -> None:
    customer = f"R-{uuid.uuid4().hex[:8]}"
    right, stale = f"RA-{uuid.uuid4().hex[:8]}", f"RB-{uuid.uuid4().hex[:8]}"
    await ledger.send(*open_loan(ledger, customer, right), *open_loan(ledger, customer, stale)[1:])
    await ledger.set_clock(40)
    await ledger.opened(right)
    await ledger.opened(stale)
    truth = await ledger.account(right)
    assert truth["days_past_due"] >= 30

    url = await migrated_database(
        infra.admin_url, f"arrears_bureau_l{uuid.uuid4().hex[:6]}", "bureau"
    )
    settings = BureauSettings(
        database_url=url,
        cycle="daily",
        archive_dir=tmp_path / "archive",
        drop_dir=tmp_path / "drop",
        ledger_url="http://ledger",
        ledger_api_key=SecretStr(DEV_KEY),
        reconcile_wait_seconds=1,  # the stale account never agrees
    )
    engine = make_engine(url)
    units = uow_factory(engine)
    clock = ControlledClock(ledger.runtime.clock.now())
    bureau, reporting = Bureau(clock), Cycles(clock, settings)
    now = ledger.runtime.clock.now()
    async with units() as uow:
        await bureau.upsert_customers(
            uow,
            [
                CustomerUpserted(
                    customer_id=customer,
                    full_name="王芳",
                    national_id="110101198005170022",
                    birth_date=date(1980, 5, 17),
                    postal_address="北京市东城区1号",
                    timezone="Asia/Shanghai",
                    locale="zh-CN",
                    country="CN",
                )
            ],
        )
        for account, overdue in ((right, Decimal(truth["overdue"])), (stale, Decimal("1.00"))):
            await bureau.standing(
                uow,
                account,
                customer,
                "CNY",
                truth["bucket"],
                truth["days_past_due"],
                overdue,
                now.date() - timedelta(days=35),
                balance=Decimal(truth["outstanding"]),
            )
            await bureau.notice(
                uow,
                customer,
                NoticeDelivered(
                    account_id=account,
                    notice="bureau_pre_notice",
                    delivered_at=now - timedelta(days=20),
                ),
            )
        await uow.commit()

    app = create_app(ledger.runtime, manage_runtime=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as http:
        await reporting.run_cycle(units, http)
    async with engine.connect() as conn:
        found = await conn.exec_driver_sql(
            "SELECT account_id, kind, reasons FROM report ORDER BY account_id"
        )
        verdicts = {r["account_id"]: (r["kind"], r["reasons"]) for r in found.mappings()}
    await engine.dispose()
    assert verdicts[right] == ("submitted", [])
    assert verdicts[stale] == ("blocked", ["CN.bureau.reconciled"])
