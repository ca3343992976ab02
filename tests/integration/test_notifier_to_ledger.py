"""Across services: a plan offer accepted by SMS reply reaches the ledger as a plan, through
the notifier's webhook, notifier.events and the ledger's consumer (both services running)."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

import pytest

from shared import topics
from shared.events import ContactOffer, CustomerUpserted
from tests.integration.test_ledger import Ledger, open_loan
from tests.integration.test_notifier import PHONE, World, ask, event, request
from tests.support.factories import caught_up, produce

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_an_accepted_plan_offer_reaches_the_ledger_as_an_active_plan(
    ledger: Ledger, world: World
) -> None:
    customer, account = f"X-{uuid.uuid4().hex[:8]}", f"XA-{uuid.uuid4().hex[:8]}"
    await ledger.send(*open_loan(ledger, customer, account))  # instalments due days 5, 35, 65
    await ledger.set_clock(12)
    await ledger.opened(account)
    overdue = Decimal((await ledger.account(account))["overdue"])
    assert overdue == Decimal("1000")
    contact_data = CustomerUpserted(
        customer_id=customer,
        full_name="Zhao Lei",
        national_id="X",
        phone=PHONE,
        timezone="Asia/Shanghai",
        locale="zh-CN",
        country="CN",
    )
    await produce(world.kafka, topics.CORE_BANKING, [event(contact_data, customer, world.now())])
    await caught_up(world.kafka, world.runtime)

    offer = ContactOffer(offer_id="o-2", kind="installments", installments=2)
    offered = request(
        world,
        customer,
        account_id=account,
        template="plan_offer",
        offer=offer,
        total_overdue=overdue,
    )
    await ask(world, offered)
    await world.until_status(account, {"sent", "delivered"})
    reply = {"event_id": f"r-{uuid.uuid4()}", "channel": "sms", "from": PHONE, "text": "YES"}
    assert (await world.signed("inbound", reply)).json()["status"] == "applied"

    async with asyncio.timeout(30):
        while not (plan := (await ledger.account(account)).get("plan")):
            await asyncio.sleep(0.3)
    assert plan["plan_id"] == f"plan-{offered.contact_id}"
    assert plan["status"] == "active"
    assert [Decimal(i["amount"]) for i in plan["installments"]] == [Decimal("500.00")] * 2
