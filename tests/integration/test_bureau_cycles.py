"""A reporting cycle that dies half way resumes without deciding or submitting any record twice."""

from __future__ import annotations

import asyncio
import socket
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from services.bureau import cycle as cycle_module
from services.bureau.bootstrap import build
from services.bureau.cycle import Cycles
from services.bureau.handlers import Bureau
from services.bureau.settings import BureauSettings
from shared.clock import ControlledClock
from shared.db import asyncpg_dsn, make_engine, uow_factory
from shared.events import CustomerUpserted
from tests.support.databases import migrated_database
from tests.support.infra import Infra

pytestmark = pytest.mark.asyncio(loop_scope="session")
NOW = datetime(2026, 12, 10, 12, tzinfo=UTC)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def seed(url: str, n: int) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await conn.copy_records_to_table(
            "customer",
            records=[
                (
                    f"C{i:05d}",
                    "Jane Q Public",
                    "123456789",
                    date(1980, 5, 17),
                    "12 Elm St, Springfield, IL 62701",
                    "US",
                    NOW,
                )
                for i in range(n)
            ],
            columns=[
                "customer_id",
                "full_name",
                "national_id",
                "birth_date",
                "postal_address",
                "country",
                "updated_at",
            ],
        )
        await conn.copy_records_to_table(
            "account",
            records=[
                (
                    f"A{i:05d}",
                    f"C{i:05d}",
                    "USD",
                    "30-59",
                    40,
                    500,
                    1500,
                    date(2026, 10, 31),
                    NOW - timedelta(days=20),
                    NOW,
                )
                for i in range(n)
            ],
            columns=[
                "account_id",
                "customer_id",
                "currency",
                "bucket",
                "days_past_due",
                "overdue",
                "balance",
                "first_delinquency",
                "conversation_at",
                "updated_at",
            ],
        )
    finally:
        await conn.close()


async def test_a_cycle_that_dies_half_way_resumes_and_reports_each_account_once(
    infra: Infra, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = await migrated_database(
        infra.admin_url, f"arrears_bureau_c{uuid.uuid4().hex[:6]}", "bureau"
    )
    await seed(url, 25)
    settings = BureauSettings(
        database_url=url,
        cycle="daily",
        archive_dir=tmp_path / "archive",
        drop_dir=tmp_path / "drop",
    )
    engine = make_engine(url)
    units = uow_factory(engine)
    bureau = Cycles(ControlledClock(NOW), settings)
    monkeypatch.setattr(cycle_module, "CHUNK", 10)
    calls = {"n": 0}
    real = Cycles._decide_chunk

    async def dies_on_the_third_chunk(self: Cycles, *args: Any, **kwargs: Any) -> str | None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("killed")
        return await real(self, *args, **kwargs)

    monkeypatch.setattr(Cycles, "_decide_chunk", dies_on_the_third_chunk)
    try:
        with pytest.raises(RuntimeError, match="killed"):
            await bureau.run_cycle(units)
        async with engine.connect() as conn:
            half = (await conn.exec_driver_sql("SELECT count(*) FROM report")).scalar_one()
        assert half == 20  # two chunks committed, the third lost with the crash

        assert await bureau.run_cycle(units) == "2026-12-10"  # resumed
        assert await bureau.run_cycle(units) is None  # already submitted: nothing again
        async with engine.connect() as conn:
            accounts = (
                await conn.exec_driver_sql("SELECT count(DISTINCT account_id) FROM report")
            ).scalar_one()
            most = (
                await conn.exec_driver_sql(
                    "SELECT max(n) FROM (SELECT count(*) AS n FROM report GROUP BY account_id) t"
                )
            ).scalar_one()
            outbox = (await conn.exec_driver_sql("SELECT count(*) FROM outbox")).scalar_one()
        assert (accounts, most) == (25, 1)
        assert outbox == 25  # one bureau.report_submitted per account
        (dropped,) = list((tmp_path / "drop").iterdir())
        lines = dropped.read_text().splitlines()
        assert len(lines) == 25 + 2  # header, 25 base segments, trailer
        assert len({line[42:72] for line in lines[1:-1]}) == 25
    finally:
        await engine.dispose()


async def test_a_rejected_record_is_held_until_its_data_changes(
    infra: Infra, tmp_path: Path
) -> None:
    url = await migrated_database(
        infra.admin_url, f"arrears_bureau_r{uuid.uuid4().hex[:6]}", "bureau"
    )
    await seed(url, 5)
    received: list[str] = []

    async def bureau_endpoint(request: Request) -> JSONResponse:
        assert request.headers["Idempotency-Key"]
        body = (await request.body()).decode().splitlines()
        accounts = [line[42:72].strip() for line in body[1:-1]]
        received.extend(accounts)
        return JSONResponse(
            {
                "records": [
                    {"account_id": a, "status": "rejected" if a == "A00003" else "accepted"}
                    for a in accounts
                ]
            }
        )

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            Starlette(routes=[Route("/files", bureau_endpoint, methods=["POST"])]),
            host="127.0.0.1",
            port=port,
            log_level="warning",
        )
    )
    serving = asyncio.create_task(server.serve())
    settings = BureauSettings(
        database_url=url,
        cycle="daily",
        archive_dir=tmp_path / "archive",
        drop_dir=None,
        endpoint=f"http://127.0.0.1:{port}/files",
    )
    engine = make_engine(url)
    units = uow_factory(engine)
    clock = ControlledClock(NOW)
    bureau = Cycles(clock, settings)
    try:
        async with httpx.AsyncClient() as http:
            while not server.started:
                await asyncio.sleep(0.02)
            await bureau.run_cycle(units, http)
            await clock.set(NOW + timedelta(days=1))
            await bureau.run_cycle(units, http)
            await clock.set(NOW + timedelta(days=2))
            async with units() as uow:  # the customer's data changes
                await Bureau(clock).upsert_customers(
                    uow,
                    [
                        CustomerUpserted(
                            customer_id="C00003",
                            full_name="Jane Q Public",
                            national_id="123456789",
                            birth_date=date(1980, 5, 17),
                            postal_address="14 Elm St, Springfield, IL 62701",
                            timezone="UTC",
                            locale="en-US",
                            country="US",
                        )
                    ],
                )
                await uow.commit()
            await clock.set(NOW + timedelta(days=2, hours=1))
            await bureau.run_cycle(units, http)
        async with engine.connect() as conn:
            found = await conn.exec_driver_sql(
                "SELECT cycle_id, kind, reasons, ack FROM report WHERE account_id = 'A00003' "
                "ORDER BY cycle_id"
            )
            history = [tuple(row) for row in found.all()]
        assert history == [
            ("2026-12-10", "submitted", [], "rejected"),
            ("2026-12-11", "blocked", ["US.bureau.rejected-unchanged"], None),
            ("2026-12-12", "submitted", [], "rejected"),
        ]
        assert received.count("A00001") == 3  # the others went every cycle
        assert received.count("A00003") == 2
    finally:
        server.should_exit = True
        await serving
        await engine.dispose()


async def test_a_cycle_that_fails_resumes_at_the_same_instant_without_waiting_for_a_move(
    infra: Infra, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = await migrated_database(
        infra.admin_url, f"arrears_bureau_r{uuid.uuid4().hex[:6]}", "bureau"
    )
    await seed(url, 5)
    settings = BureauSettings(
        database_url=url,
        cycle="daily",
        archive_dir=tmp_path / "archive",
        drop_dir=tmp_path / "drop",
    )
    definition = build(settings, ControlledClock(NOW))
    assert definition.pending is not None
    engine = make_engine(url)
    units = uow_factory(engine)
    failures = {"n": 0}
    real = Cycles._decide_chunk

    async def database_restarts_once(self: Cycles, *args: Any, **kwargs: Any) -> str | None:
        if failures["n"] == 0:
            failures["n"] += 1
            raise ConnectionResetError("the database went away")
        return await real(self, *args, **kwargs)

    monkeypatch.setattr(Cycles, "_decide_chunk", database_restarts_once)
    stop = asyncio.Event()
    worker = asyncio.ensure_future(definition.workers[0](units, stop))
    try:
        async with units() as uow:
            await definition.clock_jobs[0](uow, NOW)  # the one move of this test
        pending = []
        for _ in range(100):
            async with units() as uow:
                pending.append(await definition.pending(uow, NOW))
            if pending[-1] == 0:
                break
            await asyncio.sleep(0.1)
        # busy (so a driver of the clock waits) until the cycle is through, then idle
        assert failures["n"] == 1
        assert pending[0] == 1
        assert pending[-1] == 0
        async with engine.connect() as conn:
            status = (
                await conn.exec_driver_sql("SELECT status FROM cycle WHERE cycle_id = '2026-12-10'")
            ).scalar_one()
            reports = (await conn.exec_driver_sql("SELECT count(*) FROM report")).scalar_one()
        assert (status, reports) == ("submitted", 5)
    finally:
        stop.set()
        await worker
        await engine.dispose()
