"""A bureau reporting cycle over N accounts (default 1,000,000), beside the raw cost of reading
the same rows, in one run.

The accounts (half US, half CN, all at least 30 days past due; about one in ten fails a gate)
are loaded with COPY; the cycle (decide every account, write its Metro 2 or JSON Lines record,
build and archive the two files, drop them for the bureau) runs in a process of its own, whose
peak resident memory is reported. Baseline (issue 19): one asyncpg cursor reading the same
accounts joined with their customers, writing as many bytes as the cycle's files hold to a file
of its own as it goes, synced at the end. CPU seconds per record of the cycle's process and of
PostgreSQL, and of the baseline.

    python -m bench.bureau [--accounts 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg

from bench.cost import Meter, infra_pids
from bench.ledger import in_own_process
from bench.report import report
from services.bureau.cycle import Cycles
from services.bureau.settings import BureauSettings
from shared.clock import ControlledClock
from shared.db import asyncpg_dsn, make_engine, uow_factory
from tests.support.databases import migrated_database
from tests.support.infra import provide

NOW = datetime(2026, 12, 31, 12, tzinfo=UTC)


async def load(dsn: str, n: int, chunk: int = 100_000) -> None:
    rng = random.Random(3)
    conn = await asyncpg.connect(dsn)
    try:
        for first in range(0, n, chunk):
            customers, accounts = [], []
            for i in range(first, min(n, first + chunk)):
                us = i % 2 == 0
                customers.append(
                    (
                        f"C{i:07d}",
                        "Jane Q Public" if us else "王芳",
                        "123456789" if us else "110101198005170022",
                        date(1980, 5, 17),
                        "12 Elm St, Springfield, IL 62701" if us else "北京市东城区1号",
                        "US" if us else "CN",
                        NOW,
                    )
                )
                dpd = rng.randrange(30, 400)
                bucket = ["30-59", "60-89", "90-119", "120-149", "150-179", "180+"][
                    min(5, (dpd - 30) // 30)
                ]
                passes = rng.random() < 0.9
                overdue = rng.randrange(100, 5000)
                accounts.append(
                    (
                        f"A{i:07d}",
                        f"C{i:07d}",
                        "USD" if us else "CNY",
                        bucket,
                        dpd,
                        overdue,
                        overdue * 3,  # the whole balance, instalments not yet due included
                        Decimal(overdue * 3),
                        [NOW.date() - timedelta(days=dpd - 30 * k) for k in range(6)],
                        [Decimal(overdue * 3) / 6] * 6,
                        NOW.date() - timedelta(days=dpd),
                        date(2025, 1, 1),
                        NOW - timedelta(days=20) if passes and us else None,
                        NOW - timedelta(days=20) if passes and not us else None,
                        NOW,
                    )
                )
            await conn.copy_records_to_table(
                "customer",
                records=customers,
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
                records=accounts,
                columns=[
                    "account_id",
                    "customer_id",
                    "currency",
                    "bucket",
                    "days_past_due",
                    "overdue",
                    "balance",
                    "principal",
                    "schedule_dues",
                    "schedule_amounts",
                    "first_delinquency",
                    "opened_on",
                    "conversation_at",
                    "pre_notice_delivered_at",
                    "updated_at",
                ],
            )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


async def raw_read(dsn: str, n: int, size: int, out: Path) -> tuple[int, float]:
    """Rows per second of a cursor over the cycle's rows that writes ``size`` bytes in all
    (an even share per row) as it reads."""
    conn = await asyncpg.connect(dsn)
    line = b"x" * max(1, size // max(1, n) - 1) + b"\n"
    try:
        started, rows = time.perf_counter(), 0
        with out.open("wb") as sink:
            async with conn.transaction():
                async for _ in conn.cursor(
                    "SELECT a.*, c.full_name, c.national_id, c.birth_date, c.postal_address, "
                    "c.country FROM account a LEFT JOIN customer c USING (customer_id) "
                    "WHERE a.days_past_due >= 30 OR a.reported_status IS NOT NULL "
                    "ORDER BY a.account_id",
                    prefetch=5000,
                ):
                    sink.write(line)
                    rows += 1
            sink.flush()
            os.fsync(sink.fileno())
        return rows, rows / (time.perf_counter() - started)
    finally:
        await conn.close()


async def cycle(url: str, folder: str) -> dict[str, Any]:
    settings = BureauSettings(
        database_url=url,
        cycle="monthly",
        archive_dir=Path(folder) / "archive",
        drop_dir=Path(folder) / "drop",
    )
    engine = make_engine(url)
    started, cpu = time.perf_counter(), time.process_time()
    cycle_id = await Cycles(ControlledClock(NOW), settings).run_cycle(uow_factory(engine))
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu
    async with engine.connect() as conn:
        found = await conn.exec_driver_sql("SELECT kind, count(*) FROM report GROUP BY kind")
        kinds: dict[str, int] = {str(row[0]): int(row[-1]) for row in found.all()}
    await engine.dispose()
    files = {p.name: p.stat().st_size for p in (Path(folder) / "drop").iterdir()}
    return {
        "cycle": cycle_id,
        "cycle_seconds": round(elapsed, 1),
        "reports": kinds,
        "files": files,
        "cpu_s": cpu,
    }


async def main(n: int) -> dict[str, Any]:
    result: dict[str, Any] = {"cores": os.cpu_count(), "accounts": n}
    with provide("bench", 12000) as infra, tempfile.TemporaryDirectory() as folder:
        url = await migrated_database(infra.admin_url, "arrears_bench_bureau", "bureau")
        started = time.perf_counter()
        await load(asyncpg_dsn(url), n)
        result["load_seconds"] = round(time.perf_counter() - started, 1)
        # PostgreSQL only: the cycle publishes nothing here (its outbox is not relayed)
        pids = {k: v for k, v in infra_pids(infra.stack).items() if k == "postgres"}
        meter = Meter(pids).start()
        measured = in_own_process(cycle, url, folder)
        meter.stop()
        meter.spent["bureau"] = measured.pop("cpu_s")  # the cycle's process, timed inside it
        cost = meter.per_event_ms(n)
        result |= {k: v for k, v in measured.items() if k != "peak_rss_mb"}
        result["cycle_records_per_s"] = round(n / measured["cycle_seconds"])
        result["cycle_cpu_ms_per_record"] = cost
        result["cycle_peak_rss_mb"] = measured["peak_rss_mb"]
        # the baseline after the cycle, whose files say how many bytes to write
        size = sum(measured["files"].values())
        meter = Meter(pids, include_self="cursor").start()
        rows, raw = await raw_read(asyncpg_dsn(url), n, size, Path(folder) / "raw.out")
        meter.stop()
        result["raw_read_rows"] = rows
        result["raw_bytes_written"] = size
        result["raw_read_rows_per_s"] = round(raw)
        result["raw_cpu_ms_per_record"] = meter.per_event_ms(rows)
        result["ratio_to_raw_read"] = round(result["cycle_records_per_s"] / raw, 3)
    result["machine"] = f"{platform.machine()} python {platform.python_version()}"
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=1_000_000)
    args = parser.parse_args()
    report("bureau", asyncio.run(main(args.accounts)))
