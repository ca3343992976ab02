"""Every field of every bureau record agrees with the ledger's API as of its cycle.

A seeded book of instalment loans (monthly and biweekly, US and CN) lives through four monthly
cycles: some never pay, some pay half, some pay late, cure, pay off (in time or 90 days behind),
have payments reversed, agree a plan and break it. The ledger and the bureau run as they do in
production (Kafka, PostgreSQL, the bureau reconciling over the ledger's HTTP API). After each
cycle the files are read with the independent Go decoder (``tools/metro2check -json``, not the
Python writer) and each field is compared with what the ledger's public API says then, by the
CRRG's meanings (``../shared/domain-notes.md``); across cycles, status, first delinquency and
history profile must follow on from the month before."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import uvicorn
from pydantic import SecretStr

from services.bureau.bootstrap import build as build_bureau
from services.bureau.settings import BureauSettings
from shared import topics
from shared.auth import DEV_KEY
from shared.events import (
    ContactAttempted,
    CustomerUpserted,
    LoanOpened,
    NoticeDelivered,
    Payload,
    PaymentPosted,
    PaymentReversed,
    PlanAgreed,
    PlanInstallment,
    ScheduledInstallment,
)
from shared.service import ServiceRuntime, create_app
from tests.integration.test_ledger import Ledger, upstream
from tests.support.databases import migrated_database
from tests.support.factories import produce, skip_history
from tests.support.infra import Infra
from tools.simulator.bureau_fields import differences, expected, follows, rating

pytestmark = pytest.mark.asyncio(loop_scope="session")
AUTH = {"Authorization": f"Bearer {DEV_KEY}"}
ROOT = Path(__file__).resolve().parents[2]
SEED = 2026
BEHAVIOURS = ("never", "half", "late", "cure", "payoff", "payoff-late", "reversed", "plan")
DAYS = 128  # from the fixture's first day: through four month ends


@dataclass
class Loan:
    customer: str
    account: str
    country: str
    behaviour: str
    dues: list[date]
    amount: Decimal
    principal: Decimal
    frequency: str
    zone: ZoneInfo
    plan_dues: list[date] = field(default_factory=list)
    reversed_payment: str | None = None


def book(tag: str, start: date) -> list[Loan]:
    rng = random.Random(SEED)
    loans = []
    for i in range(32):
        country = "US" if i % 4 else "CN"
        behaviour = BEHAVIOURS[i % len(BEHAVIOURS)]
        n = rng.choice((3, 6, 12))
        amount = Decimal(rng.randrange(20_000, 90_000)) / 100
        first = start + timedelta(days=rng.randrange(1, 8))
        if i % 5 == 3:
            dues, frequency = [first + timedelta(days=14 * k) for k in range(n)], "B"
        else:
            dues = [date(first.year + (first.month - 1 + k) // 12, (first.month - 1 + k) % 12 + 1,
                         min(first.day, 28)) for k in range(n)]  # fmt: skip
            frequency = "M"
        loans.append(
            Loan(
                customer=f"MF-{tag}-{i:02d}-C",
                account=f"MF-{tag}-{i:02d}-A",
                country=country,
                behaviour=behaviour,
                dues=dues,
                amount=amount,
                principal=(amount * n * Decimal("0.9")).quantize(Decimal("0.01")),
                frequency=frequency if n > 1 else "P",
                zone=ZoneInfo("America/New_York" if country == "US" else "Asia/Shanghai"),
            )
        )
    return loans


@dataclass
class World:
    ledger: Ledger
    bureau: ServiceRuntime
    http: httpx.AsyncClient  # the bureau's API
    folder: Path

    async def send(self, topic: str, key: str, *data: Payload) -> None:
        now = self.ledger.runtime.clock.now()
        await produce(self.ledger.kafka, topic, [upstream(d, key, now) for d in data])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
async def world(ledger: Ledger, infra: Infra, tmp_path: Path) -> AsyncIterator[World]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(ledger.runtime, manage_runtime=False),
            host="127.0.0.1",
            port=port,
            log_level="warning",
        )
    )
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    url = await migrated_database(
        infra.admin_url, f"arrears_bureau_f{uuid.uuid4().hex[:6]}", "bureau"
    )
    settings = BureauSettings(
        KAFKA_BOOTSTRAP_SERVERS=ledger.kafka,
        ARREARS_CLOCK="controlled",
        database_url=url,
        cycle="monthly",
        archive_dir=tmp_path / "archive",
        drop_dir=None,
        ledger_url=f"http://127.0.0.1:{port}",
        ledger_api_key=SecretStr(DEV_KEY),
    )
    runtime = ServiceRuntime(settings, build_bureau)
    await skip_history(ledger.kafka, runtime)
    await runtime.start()
    app = create_app(runtime, manage_runtime=False)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://b"
        ) as client:
            yield World(ledger, runtime, client, tmp_path)
    finally:
        await runtime.stop()
        server.should_exit = True
        await serving


async def onboard(w: World, loans: list[Loan], day0: datetime) -> None:
    for loan in loans:
        us = loan.country == "US"
        await w.send(
            topics.CORE_BANKING,
            loan.customer,
            CustomerUpserted(
                customer_id=loan.customer,
                full_name="Jane Q Public" if us else "王芳",
                national_id="123456789" if us else "110101198005170022",
                birth_date=date(1980, 5, 17),
                postal_address="12 Elm St, Springfield, IL 62701" if us else "北京市东城区1号",
                timezone=str(loan.zone),
                locale="en-US" if us else "zh-CN",
                country=loan.country,
            ),
            LoanOpened(
                account_id=loan.account,
                customer_id=loan.customer,
                product="personal_loan",
                principal=loan.principal,
                currency="USD" if us else "CNY",
                opened_on=w.ledger.base - timedelta(days=40),
                schedule=[
                    ScheduledInstallment(installment_no=k + 1, due_date=d, amount=loan.amount)
                    for k, d in enumerate(loan.dues)
                ],
            ),
        )
        # The gates every record must pass: told in advance (CN), communicated with (US).
        told: Payload = (
            ContactAttempted(
                contact_id=f"K-{loan.account}",
                account_id=loan.account,
                channel="voice",
                outcome="right_party",
                attempted_at=day0,
                customer_id=loan.customer,
            )
            if us
            else NoticeDelivered(
                account_id=loan.account,
                notice="bureau_pre_notice",
                customer_id=loan.customer,
                delivered_at=day0,
            )
        )
        await w.send(topics.NOTIFIER, loan.customer, told)
    for loan in loans:
        await w.ledger.opened(loan.account)


async def act(w: World, loan: Loan, day: int) -> list[tuple[str, str]]:
    """What the customer (and the bank) do on ``day``; returns the ledger history entries
    (kind, ref) that follow."""
    sent: list[tuple[str, str]] = []
    today = w.ledger.at(day).astimezone(loan.zone).date()
    now = w.ledger.runtime.clock.now()
    currency = "USD" if loan.country == "US" else "CNY"

    async def pay(amount: Decimal) -> None:
        amount = amount.quantize(Decimal("0.01"))
        if amount <= 0:
            return
        sent.append(("payment", f"P-{loan.account}-{day}"))
        await w.send(
            topics.CORE_BANKING,
            loan.customer,
            PaymentPosted(
                account_id=loan.account,
                payment_id=f"P-{loan.account}-{day}",
                amount=amount,
                currency=currency,
                posted_at=now,
            ),
        )

    async def owed(key: str) -> Decimal:
        return Decimal((await w.ledger.account(loan.account))[key])

    b = loan.behaviour
    due_today = [d for d in loan.dues if d == today]
    if b == "half" and due_today:
        await pay((loan.amount / 2).quantize(Decimal("0.01")))
    elif b == "late" and any(d + timedelta(days=40) == today for d in loan.dues):
        await pay(loan.amount)
    elif b == "cure" and day == 70:
        await pay(await owed("overdue"))
    elif (b == "payoff" and day == 20) or (b == "payoff-late" and day == 104):
        await pay(await owed("outstanding"))
    elif b == "reversed":
        if day == 12:
            loan.reversed_payment = f"P-{loan.account}-{day}"
            await pay(await owed("overdue") + loan.amount)
        elif day == 50 and loan.reversed_payment:
            sent.append(("reversal", loan.reversed_payment))
            await w.send(
                topics.CORE_BANKING,
                loan.customer,
                PaymentReversed(
                    account_id=loan.account, payment_id=loan.reversed_payment, reason="NSF"
                ),
            )
    elif b == "plan":
        if day == 45:
            overdue = await owed("overdue")
            if overdue > 0:
                share = (overdue / 4).quantize(Decimal("0.01"))
                loan.plan_dues = [today + timedelta(days=5 + 30 * k) for k in range(4)]
                amounts = [share] * 3 + [overdue - 3 * share]
                sent.append(("plan_agreed", f"PL-{loan.account}"))
                await w.send(
                    topics.NOTIFIER,
                    loan.customer,
                    PlanAgreed(
                        plan_id=f"PL-{loan.account}",
                        account_id=loan.account,
                        kind="installments",
                        installments=[
                            PlanInstallment(due_date=d, amount=x)
                            for d, x in zip(loan.plan_dues, amounts, strict=True)
                        ],
                    ),
                )
        elif loan.plan_dues[:1] and today == loan.plan_dues[0]:
            await pay((await owed("overdue")) / 4)  # the first plan instalment, then no more
    return sent


async def truth(w: World, loan: Loan) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The ledger's public API on one account (as it stands at the cycle)."""
    history = await w.ledger.client.get(f"/v1/accounts/{loan.account}/history", headers=AUTH)
    assert history.status_code == 200
    return await w.ledger.account(loan.account), history.json()


async def cycle_done(w: World, cycle: str) -> dict[str, Any]:
    async with asyncio.timeout(60):
        while True:
            response = await w.http.get(f"/v1/cycles/{cycle}", headers=AUTH)
            if response.status_code == 200 and response.json()["status"] == "submitted":
                body: dict[str, Any] = response.json()
                return body
            await asyncio.sleep(0.2)


async def decoded_file(w: World, cycle: str, country: str) -> list[Any]:
    response = await w.http.get(f"/v1/cycles/{cycle}/file?country={country}", headers=AUTH)
    if response.status_code == 404:
        return []
    assert response.status_code == 200
    if country == "CN":
        return [json.loads(line) for line in response.text.splitlines()]
    path = w.folder / f"{cycle}.txt"
    path.write_bytes(response.content)
    check = await asyncio.to_thread(
        subprocess.run,
        ["go", "run", ".", "-json", str(path)],
        cwd=ROOT / "tools" / "metro2check",
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stderr  # the file passes the independent checker
    records: list[Any] = json.loads(check.stdout)
    return [r for r in records if "ConsumerAccountNumber" in r]  # the base segments


async def applied(w: World, loan: Loan, refs: list[tuple[str, str]]) -> None:
    """Waits until the ledger's history shows what was sent (payments, reversals, plans)."""
    async with asyncio.timeout(30):
        while refs:
            history = (
                await w.ledger.client.get(f"/v1/accounts/{loan.account}/history", headers=AUTH)
            ).json()
            if set(refs) <= {(h["kind"], h["ref"]) for h in history}:
                return
            await asyncio.sleep(0.1)


async def test_every_field_of_every_record_agrees_with_the_ledger_cycle_after_cycle(
    world: World,
) -> None:
    w = world
    tag = uuid.uuid4().hex[:6]
    loans = book(tag, w.ledger.base)
    await onboard(w, loans, w.ledger.at(0))
    seen: dict[str, dict[str, str]] = {}  # cycle month -> account -> rating at that cycle
    reported: dict[str, dict[str, dict[str, Any]]] = {}  # cycle -> account -> record
    checked = 0
    problems: list[str] = []
    await w.ledger.set_clock(1)
    month = w.ledger.runtime.clock.now().astimezone(UTC).strftime("%Y-%m")
    # the bureau's first cycle, on the first clock move it saw: nothing is overdue yet
    last_cycle_at = datetime.fromisoformat((await cycle_done(w, month))["started_at"])
    seen[month] = {loan.account: "0" for loan in loans}
    for day in range(2, DAYS):
        await w.ledger.set_clock(day)
        now = w.ledger.runtime.clock.now()
        this = now.astimezone(UTC).strftime("%Y-%m")
        if this != month:
            month = this
            body = await cycle_done(w, this)
            cycles = (await w.http.get("/v1/cycles", headers=AUTH)).json()
            cycle_days: dict[str, date] = {}
            for c in sorted(cycles, key=lambda c: c["started_at"]):
                at = datetime.fromisoformat(c["started_at"]).astimezone(UTC)
                cycle_days.setdefault(at.strftime("%Y-%m"), at.date())
            since = last_cycle_at
            truths = {loan.account: await truth(w, loan) for loan in loans}
            files = {
                "US": {r["ConsumerAccountNumber"]: r for r in await decoded_file(w, this, "US")},
                "CN": {r["account_id"]: r for r in await decoded_file(w, this, "CN")},
            }
            reported[this] = {}
            for loan in loans:
                account, history = truths[loan.account]
                e = expected(account, history, loan.zone, now, since, seen, cycle_days)
                assert e["frequency"] == loan.frequency
                # Metro 2 alpha fields are upper case
                number = loan.account.upper() if loan.country == "US" else loan.account
                record = files[loan.country].get(number)
                reports = (
                    await w.http.get(f"/v1/accounts/{loan.account}/reports", headers=AUTH)
                ).json()
                mine = [r for r in reports if r["cycle_id"] == this]
                if e["dpd"] >= 30:
                    assert mine, f"{this}/{loan.account}: {e['dpd']} days past due, no report"
                    assert mine[0]["kind"] == "submitted", (this, loan.account, mine[0]["reasons"])
                if record is None:
                    continue
                reported[this][loan.account] = record
                checked += 1
                diff = differences(record, e, w.ledger.at(0).astimezone(UTC).date())
                if diff:
                    problems.append(f"{this} {loan.account} {loan.behaviour}: {diff}")
            seen[this] = {
                loan.account: rating(int(truths[loan.account][0]["days_past_due"]))
                for loan in loans
            }
            last_cycle_at = datetime.fromisoformat(body["started_at"])
        for loan in loans:
            await applied(w, loan, await act(w, loan, day))
    assert not problems, "\n".join(problems)
    assert len(reported) >= 4, sorted(reported)
    # Month to month: a record that follows one of last month carries that month's status
    # first in its profile, then last month's profile; its first delinquency does not move
    # while it stays delinquent.
    months = sorted(reported)
    followed = 0
    for before, after in pairwise(months):
        for key, later in reported[after].items():
            earlier = reported[before].get(key)
            if earlier is None or "PaymentHistoryProfile" not in later:
                continue
            followed += 1
            assert not follows(earlier, later), (before, after, key, follows(earlier, later))
    statuses = {
        (r.get("AccountStatus") or r.get("status")) for c in reported.values() for r in c.values()
    }
    # the book reached what it was written for: delinquency deepening, a payoff, a cure
    assert {"71", "78", "13", "11"} <= statuses, statuses
    assert checked >= 40, checked
    assert followed >= 10, followed
