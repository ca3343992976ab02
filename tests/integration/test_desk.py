"""The desk's use cases on PostgreSQL (built through its migrations), without Kafka: taking
work under concurrency, holds that lapse, items that expire, approvals, the window closing
while an item is open, and training that touches nothing else."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import text

from services.desk.bootstrap import authorities
from services.desk.domain.people import Person, Role
from services.desk.domain.queues import DeskOutcome, Weights
from services.desk.domain.training import load_conduct, load_personas
from services.desk.handlers import Desk, OutcomeForm, Refused
from services.desk.repository import work
from services.desk.training import Training
from shared.clock import ControlledClock
from shared.db import UnitOfWorkFactory, make_engine, uow_factory
from shared.events import PromiseBroken
from tests.support.databases import migrated_database
from tests.support.infra import Infra

pytestmark = pytest.mark.asyncio(loop_scope="session")
START = datetime(2026, 12, 2, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
OFFER = {
    "offer_id": "offer-1",
    "kind": "installments",
    "installments": 6,
    "limits": {"max_installments": 12},
}


@dataclass
class World:
    desk: Desk
    clock: ControlledClock
    units: UnitOfWorkFactory

    def person(self, username: str, role: Role = Role.COLLECTOR, skill: str = "voice") -> Person:
        return self.desk.person(
            username, username, role, languages=["zh-CN"], countries=["CN"], skills=[skill]
        )

    async def send(self, customer: str, *, hours: float = 10, **case: Any) -> str:
        contact_id = f"C-{uuid.uuid4().hex[:10]}"
        body = {
            "contact_id": contact_id,
            "channel": "voice",
            "to": "+8613900000000",
            "script": "您好",
            "locale": "zh-CN",
            "not_after": (self.clock.now() + timedelta(hours=hours)).isoformat(),
            "case": {
                "account_id": f"A-{customer}",
                "customer_id": customer,
                "country": "CN",
                "timezone": "Asia/Shanghai",
                "not_before": self.clock.now().isoformat(),
                "total_overdue": "800.00",
                "currency": "CNY",
                "days_past_due": 12,
            }
            | case,
        }
        async with self.units() as uow:
            assert await self.desk.receive(uow, "voice", body)
            assert not await self.desk.receive(uow, "voice", body), "a resend is a repeat"
            await uow.commit()
        return contact_id

    async def take(self, person: Person) -> Any:
        async with self.units() as uow:
            found = await self.desk.take_next(uow, person)
            await uow.commit()
        return found

    async def log(self, person: Person, contact_id: str, form: OutcomeForm) -> Any:
        async with self.units() as uow:
            logged = await self.desk.log_outcome(uow, person, contact_id, form)
            await uow.commit()
        return logged

    async def move(self, by: timedelta) -> None:
        await self.clock.set(self.clock.now() + by)
        async with self.units() as uow:
            await self.desk.clock_moved(uow, self.clock.now())
            await uow.commit()

    async def webhooks(self) -> list[dict[str, Any]]:
        async with self.units() as uow:
            rows = await uow.session.execute(
                text("SELECT body FROM webhook_out ORDER BY created_at")
            )
            return [r.body for r in rows]


@pytest_asyncio.fixture(loop_scope="session")
async def world(infra: Infra) -> AsyncIterator[World]:
    url = await migrated_database(infra.admin_url, f"arrears_desk_t{uuid.uuid4().hex[:6]}", "desk")
    engine = make_engine(url)
    clock = ControlledClock(START)
    await clock.set(START)
    desk = Desk(clock, Weights.load(), authorities(), lock_minutes=20)
    yield World(desk, clock, uow_factory(engine))
    await engine.dispose()


async def test_many_collectors_taking_at_once_never_share_a_customer(world: World) -> None:
    tag = uuid.uuid4().hex[:6]
    customers = [f"{tag}-{n}" for n in range(8)]
    for customer in customers:  # three calls for each customer
        for _ in range(3):
            await world.send(customer)
    collectors = [world.person(f"c{tag}{n}") for n in range(12)]
    taken = await asyncio.gather(*(world.take(c) for c in collectors))
    held = [t for t in taken if t is not None]
    assert len(held) == len(customers), "every customer is worked, by one collector each"
    assert len({t.customer_id for t in held}) == len(held)
    assert len({t.holder for t in held}) == len(held)
    async with world.units() as uow:
        locks = await uow.session.execute(
            text("SELECT customer_id, holder FROM customer_lock WHERE customer_id LIKE :t"),
            {"t": f"{tag}-%"},
        )
        assert {r.customer_id: r.holder for r in locks} == {t.customer_id: t.holder for t in held}
    # a collector asking again gets the item they hold, not a second one
    again = await world.take(collectors[0])
    first = taken[0]
    assert first is not None
    assert again is not None
    assert again.contact_id == first.contact_id


async def test_a_lapsed_hold_returns_the_item_for_another_collector(world: World) -> None:
    tag = uuid.uuid4().hex[:6]
    contact_id = await world.send(f"{tag}-x", hours=5, days_past_due=400)
    first, second = world.person(f"a{tag}"), world.person(f"b{tag}")
    got = await world.take(first)
    assert got is not None
    assert got.contact_id == contact_id
    assert await world.take(second) is None, "the only item is held"
    await world.move(timedelta(minutes=21))
    taken = await world.take(second)
    assert taken is not None
    assert taken.contact_id == contact_id
    assert taken.holder == second.username
    with pytest.raises(Refused, match="not yours"):
        await world.log(first, contact_id, OutcomeForm(DeskOutcome.NO_ANSWER))


async def test_an_item_nobody_worked_expires_with_its_reason_and_is_reported(
    world: World,
) -> None:
    tag = uuid.uuid4().hex[:6]
    contact_id = await world.send(f"{tag}-y", hours=1)
    await world.move(timedelta(hours=1))
    async with world.units() as uow:
        item = await work.item(uow.session, contact_id)
    assert item is not None
    assert item.status == "expired"
    assert item.expired_reason == "not taken before not_after"
    [reported] = [w for w in await world.webhooks() if w["contact_id"] == contact_id]
    assert reported["status"] == "expired"


async def test_a_plan_beyond_the_collectors_authority_waits_for_a_team_leads_approval(
    world: World,
) -> None:
    tag = uuid.uuid4().hex[:6]
    contact_id = await world.send(f"{tag}-p", offer=OFFER, days_past_due=900)
    collector = world.person(f"p{tag}")
    taken = await world.take(collector)
    assert taken is not None
    assert taken.contact_id == contact_id
    with pytest.raises(Refused, match="the treatment's limit") as beyond:
        await world.log(
            collector,
            contact_id,
            OutcomeForm(DeskOutcome.PLAN, kind="installments", installments=18),
        )
    assert beyond.value.status == 422
    assert beyond.value.field == "installments"
    logged = await world.log(
        collector, contact_id, OutcomeForm(DeskOutcome.PLAN, kind="installments", installments=12)
    )
    assert logged.verdict == "approval"
    assert not [w for w in await world.webhooks() if w["contact_id"] == contact_id]
    with pytest.raises(Refused, match="team lead"):
        async with world.units() as uow:
            await world.desk.decide(uow, collector, logged.approval_id, True)
    lead = world.person(f"l{tag}", Role.TEAM_LEAD)
    async with world.units() as uow:
        assert await world.desk.decide(uow, lead, logged.approval_id, True) == "approved"
        await uow.commit()
    [reported] = [w for w in await world.webhooks() if w["contact_id"] == contact_id]
    assert reported["status"] == "plan_accepted"
    assert reported["installments"] == 12
    assert reported["offer_id"] == "offer-1"
    async with world.units() as uow:
        with pytest.raises(Refused, match="already approved"):
            await world.desk.decide(uow, lead, logged.approval_id, True)


async def test_a_promise_is_reported_with_its_amount_and_date(world: World) -> None:
    tag = uuid.uuid4().hex[:6]
    contact_id = await world.send(f"{tag}-q", days_past_due=950)
    collector = world.person(f"q{tag}")
    assert (await world.take(collector)).contact_id == contact_id
    with pytest.raises(Refused, match="promise_date"):
        await world.log(
            collector,
            contact_id,
            OutcomeForm(DeskOutcome.PROMISE, promise_amount=Decimal("800.00")),
        )
    day = (world.clock.now() + timedelta(days=3)).date()
    logged = await world.log(
        collector,
        contact_id,
        OutcomeForm(DeskOutcome.PROMISE, promise_amount=Decimal("800.00"), promise_date=day),
    )
    assert logged.verdict == "reported"
    [reported] = [w for w in await world.webhooks() if w["contact_id"] == contact_id]
    assert reported == reported | {
        "status": "promise_to_pay",
        "promise_amount": "800.00",
        "promise_date": day.isoformat(),
        "event_id": logged.event_id,
    }
    with pytest.raises(Refused, match="already logged"):
        await world.log(collector, contact_id, OutcomeForm(DeskOutcome.NO_ANSWER))


async def test_the_window_closing_while_an_item_is_open_refuses_its_outcome(world: World) -> None:
    tag = uuid.uuid4().hex[:6]
    contact_id = await world.send(f"{tag}-w", hours=2, days_past_due=990)
    collector = world.person(f"w{tag}")
    assert (await world.take(collector)).contact_id == contact_id
    await world.clock.set(world.clock.now() + timedelta(hours=2))  # the clock job has not run
    with pytest.raises(Refused, match="window closed at") as closed:
        await world.log(collector, contact_id, OutcomeForm(DeskOutcome.RIGHT_PARTY))
    assert closed.value.status == 409


async def test_a_training_session_writes_no_event_no_webhook_and_no_work(world: World) -> None:
    training = Training(world.clock, load_personas(), load_conduct())

    async def counts() -> list[int]:
        found = []
        async with world.units() as uow:
            for table in ("outbox", "webhook_out", "work_item", "outcome", "approval"):
                count = await uow.session.execute(text(f"SELECT count(*) FROM {table}"))
                found.append(int(count.scalar_one()))
        return found

    before = await counts()
    trainee = world.person(f"t{uuid.uuid4().hex[:6]}", Role.TRAINEE)
    async with world.units() as uow:
        session_id = await training.start(uow, trainee, "disputer", "zh-CN", seed=5)
        await uow.commit()
    for move in ("verify_identity", "name_debt", "note_dispute"):
        async with world.units() as uow:
            played = await training.play(uow, trainee, session_id, move)
            await uow.commit()
    assert played.session.ended
    assert played.session.outcome == "dispute"
    assert played.score is not None
    assert played.score.total == 100
    assert await counts() == before
    other = world.person("someone-else", Role.TRAINEE)
    async with world.units() as uow:
        with pytest.raises(Refused, match="not yours"):
            await training.view(uow, other, session_id)


async def test_a_broken_promise_and_a_low_propensity_put_an_accounts_call_first(
    world: World,
) -> None:
    tag = uuid.uuid4().hex[:6]
    async with world.units() as uow:
        broken = PromiseBroken(account_id=f"A-{tag}-broke", customer_id=f"{tag}-broke")
        await world.desk.promises(uow, [broken])
        await uow.commit()
    calm = await world.send(f"{tag}-calm", days_past_due=5000, propensity="0.8")
    unlikely = await world.send(f"{tag}-unlikely", days_past_due=5000, propensity="0.1")
    broke = await world.send(f"{tag}-broke", days_past_due=5000, propensity="0.8")
    items = {}
    async with world.units() as uow:
        for contact_id in (calm, unlikely, broke):
            found = await work.item(uow.session, contact_id)
            assert found is not None
            items[contact_id] = found
    assert items[broke].priority - items[calm].priority == Decimal(30)
    assert (items[broke].priority_why or {})["broken_promise"] == "30.00"
    assert items[unlikely].priority - items[calm].priority == Decimal(10)
    collector = world.person(f"o{tag}")
    order = []
    for _ in range(3):
        taken = await world.take(collector)
        assert taken is not None
        order.append(taken.contact_id)
        await world.log(collector, taken.contact_id, OutcomeForm(DeskOutcome.NO_ANSWER))
    assert order == [broke, unlikely, calm]


async def test_the_admin_command_adds_a_person_whose_password_is_hashed(infra: Infra) -> None:
    import subprocess
    import sys

    from services.desk import security
    from services.desk.repository import people

    url = await migrated_database(infra.admin_url, f"arrears_desk_a{uuid.uuid4().hex[:6]}", "desk")
    command = [sys.executable, "-m", "services.desk", "users", "add", "zhou", "--role"]
    command += ["field_agent", "--name", "Zhou Qiang", "--countries", "CN", "--skills"]
    command += ["field_visit", "--password-stdin"]
    env = {"DESK_DATABASE_URL": url, "ARREARS_ENV": "test", "PATH": "/usr/bin:/bin"}
    added = await asyncio.to_thread(
        subprocess.run,
        command,
        input="a long enough secret\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert added.returncode == 0, added.stderr
    assert "a long enough secret" not in added.stdout + added.stderr
    short = await asyncio.to_thread(
        subprocess.run,
        command,
        input="short\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert short.returncode == 2
    assert "at least 10 characters" in short.stderr
    engine = make_engine(url)
    try:
        async with uow_factory(engine)() as uow:
            found = await people.account(uow.session, "zhou")
    finally:
        await engine.dispose()
    assert found is not None
    assert found.person.role is Role.FIELD_AGENT
    assert found.person.skills == ("field_visit",)
    assert found.password_hash.startswith("$argon2id$")
    assert security.verify_password(found.password_hash, "a long enough secret")
    assert not security.verify_password(found.password_hash, "a wrong secret!")
