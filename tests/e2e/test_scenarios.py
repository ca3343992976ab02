"""Collections scenarios on the whole running system, driven only through its public contract
(Kafka topics, HTTP APIs, partner webhooks) on the controlled clock. One system serves the
module; each scenario brings its own customers and moves the clock forward from where it is.
The bureau runs a cycle every day here, so reporting rules show within a scenario."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.scheduler.strategies import FILES
from tests.e2e.driver import Driver, Person
from tests.e2e.support import RunningStack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def local_hour(instant: datetime, person: Person) -> float:
    local = instant.astimezone(person.zone)
    return local.hour + local.minute / 60


async def test_a_cn_customer_who_misses_at_23_local_is_first_contacted_at_08_local(
    drive: Driver,
) -> None:
    # the challenger: it sends no reminder before the due date, so the first contact is the
    # collection SMS (test_humane.py has the reminders)
    person = drive.person("CN", variant="early-plan")
    due = drive.working_day("CN", drive.now.date() + timedelta(days=1))
    while drive.working_day("CN", due + timedelta(days=1)) != due + timedelta(days=2):
        due = drive.working_day("CN", due)  # the morning after the miss must be a working day
    await drive.onboard(person, [due, due + timedelta(days=30)], credit_score=780)
    await drive.to(person.at(due, 12))
    assert not drive.events("payment.missed", person.account_id)

    await drive.to(person.at(due + timedelta(days=1), 23))  # the miss is seen at 23:00 local
    [missed] = drive.events("payment.missed", person.account_id)
    assert missed.installment_no == 1
    assert not await drive.messages(person)

    await drive.to(person.at(due + timedelta(days=2), 7, 59))
    assert not await drive.messages(person), "contacted before 08:00 local"
    decisions = await drive.api("scheduler", f"/v1/accounts/{person.account_id}/decisions")
    deferred = [d for d in decisions if d["kind"] == "deferred"]
    assert any("CN.window.local-hours" in d["reasons"] for d in deferred)

    await drive.to(person.at(due + timedelta(days=2), 8))
    [first] = await drive.messages(person)
    assert first["channel"] == "sms"
    [requested] = drive.events("contact.requested", person.account_id)
    assert local_hour(requested.not_before, person) >= 8


async def test_stop_opts_out_one_address_and_the_others_stay_open(drive: Driver) -> None:
    # the challenger's early treatment: an SMS on day 0, a call on day 3, an SMS offer on day 7
    person = drive.person("CN", variant="early-plan")
    due = drive.now.date()
    await drive.onboard(person, [due, due + timedelta(days=30)])
    day = drive.working_day("CN", due)
    await drive.to(person.at(day, 10))
    [sms] = await drive.messages(person, "sms")
    await drive.reply(person, "sms", "STOP")
    [opted] = drive.events("customer.opted_out", person.customer_id)
    assert opted.channel == "sms"

    for days in range(1, 10):
        await drive.to(person.at(day + timedelta(days=days), 10, 30))
    assert [m["contact_id"] for m in await drive.messages(person, "sms")] == [sms["contact_id"]]
    assert await drive.messages(person, "voice"), "opting out of SMS leaves calls open"
    suppressed = drive.events("contact.suppressed", person.account_id)
    assert [s.channel for s in suppressed] == ["sms"]
    assert "CN.stop.opt-out" in suppressed[0].reasons


async def test_a_customer_with_no_usable_channel_is_suppressed_not_crashed(
    drive: Driver,
) -> None:
    person = drive.person("CN", phone=False, email=False, postal=False)
    due = drive.now.date()
    await drive.onboard(person, [due, due + timedelta(days=30)])
    for days in range(1, 4):
        await drive.to(person.at(due + timedelta(days=days), 10))
    suppressed = drive.events("contact.suppressed", person.account_id)
    assert suppressed
    assert all("CN.channel.usable" in s.reasons for s in suppressed)
    assert not await drive.messages(person)
    assert sum((await drive.system.dead_letters()).values()) == 0
    for url in drive.system.endpoints.services.values():
        ready = await drive.system.request("GET", f"{url}/readyz")
        assert ready.status_code == 200


async def test_an_agreed_plan_pauses_delinquency_and_contact_and_a_broken_plan_resumes_both(
    drive: Driver,
) -> None:
    person = drive.person("CN")
    due = drive.now.date() - timedelta(days=35)  # 30-59 days past due: the plan offer comes
    await drive.onboard(person, [due, due + timedelta(days=60)])
    await drive.to(drive.now + timedelta(hours=1))
    day = drive.working_day("CN", drive.now.astimezone(person.zone).date())
    for days in range(0, 4):
        await drive.to(person.at(day + timedelta(days=days), 10))
        if await drive.messages(person, "sms"):
            break
    [offer] = await drive.messages(person, "sms")
    await drive.reply(person, "sms", "YES")
    [activated] = drive.events("plan.activated", person.account_id)
    account = await drive.api("ledger", f"/v1/accounts/{person.account_id}")
    assert account["plan"]["status"] == "active"
    frozen = account["days_past_due"]
    sent_before = len(await drive.messages(person))

    # the first plan instalment falls due a week after the acceptance; kept until then
    for _ in range(6):
        await drive.to(drive.now + timedelta(days=1))
        paused = await drive.api("ledger", f"/v1/accounts/{person.account_id}")
        assert paused["days_past_due"] == frozen, "days past due move while the plan is kept"
    assert len(await drive.messages(person)) == sent_before, "contacted while a plan is kept"

    for _ in range(3):  # it passes unpaid
        await drive.to(drive.now + timedelta(days=1))
    [broken] = drive.events("plan.broken", person.account_id)
    assert broken.plan_id == activated.plan_id
    resumed = await drive.api("ledger", f"/v1/accounts/{person.account_id}")
    assert resumed["days_past_due"] > frozen
    for _ in range(3):
        await drive.to(drive.now + timedelta(days=1))
    assert len(await drive.messages(person)) > sent_before, "contact resumes after the break"
    assert offer["contact_id"]


async def test_the_bureau_waits_for_the_pre_notice_then_a_payment_cures_and_corrects(
    drive: Driver,
) -> None:
    person = drive.person("CN")
    due = drive.now.date() - timedelta(days=45)
    await drive.onboard(person, [due, due + timedelta(days=90)], amount=Decimal("1200.00"))
    for _ in range(22):  # the pre-notice letter goes out on day 1; 14 days must then pass
        await drive.to(drive.now + timedelta(days=1))
        if drive.events("bureau.report_submitted", person.account_id):
            break
    notices = drive.events("notice.delivered", person.account_id)
    delivered = notices[0]  # a later bucket restarts the treatment, and its notice, again
    assert delivered.notice == "bureau_pre_notice"
    [submitted] = drive.events("bureau.report_submitted", person.account_id)
    blocked = drive.events("bureau.report_blocked", person.account_id)
    assert blocked, "cycles ran before the notice had waited its fourteen days"
    assert all("CN.bureau.pre-notice" in b.reasons for b in blocked), [
        (b.cycle, b.reasons) for b in blocked if "CN.bureau.pre-notice" not in b.reasons
    ]
    assert all(b.cycle < submitted.cycle for b in blocked)
    assert submitted.cycle >= (delivered.delivered_at + timedelta(days=14)).date().isoformat()

    account = await drive.api("ledger", f"/v1/accounts/{person.account_id}")
    await drive.pay(person, Decimal(account["overdue"]))
    assert drive.events("account.cured", person.account_id)
    await drive.to(drive.now + timedelta(days=1))
    [corrected] = drive.events("bureau.report_corrected", person.account_id)
    assert corrected.cycle > submitted.cycle


async def test_a_dispute_stops_contact_and_is_reported_xb(drive: Driver) -> None:
    person = drive.person("US")
    due = drive.now.date() - timedelta(days=40)
    await drive.onboard(person, [due, due + timedelta(days=90)])
    await drive.to(drive.now + timedelta(hours=1))
    day = drive.working_day("US", drive.now.astimezone(person.zone).date())
    for days in range(0, 5):  # a call, the pre-notice letter and the plan offer by SMS
        await drive.to(person.at(day + timedelta(days=days), 11))
        if await drive.messages(person, "sms") and await drive.messages(person, "letter"):
            break
    assert await drive.messages(person, "letter")
    await drive.reply(person, "sms", "DISPUTE")
    [opened] = drive.events("dispute.opened", person.account_id)
    assert opened.account_id == person.account_id
    sent = len(await drive.messages(person))

    for _ in range(16):  # the US notice waits 14 days before any report
        await drive.to(drive.now + timedelta(days=1))
        if drive.events("bureau.report_submitted", person.account_id):
            break
    assert len(await drive.messages(person)) == sent, "contacted after the dispute"
    stopped = drive.events("contact.suppressed", person.account_id)
    assert stopped
    assert all("US.stop.dispute" in s.reasons for s in stopped)
    [submitted] = drive.events("bureau.report_submitted", person.account_id)
    assert submitted.compliance_code == "XB"


async def test_a_us_customers_eighth_call_in_seven_days_waits_with_its_rule_id(
    drive: Driver,
) -> None:
    """Last in the module: it publishes a strategy version that calls every day, and restores
    the shipped one afterwards."""
    shipped: dict[str, Any] = yaml.safe_load((FILES / "early-and-late.yaml").read_text())
    versions = await drive.api("scheduler", "/v1/strategies")
    latest = max(v["version"] for v in versions if v["strategy_id"] == shipped["id"])
    daily = copy.deepcopy(shipped) | {"version": latest + 1}
    for variant in daily["variants"]:
        for treatment in variant["treatments"]:
            if "90-119" in treatment.get("segment", {}).get("buckets", []):
                # two calls a day: the eighth comes on day 3, inside the first seven days
                treatment["steps"] = [
                    {"day": d // 2, "channel": "voice", "template": "call_arrears"}
                    for d in range(8)
                ]
    restored = copy.deepcopy(shipped) | {"version": latest + 2}
    await drive.api("scheduler", "/v1/strategies", json=daily)
    published = await drive.system.request(
        "POST",
        f"{drive.system.endpoints.services['scheduler']}/v1/strategies/{shipped['id']}"
        f"/versions/{latest + 1}/publish",
    )
    assert published.status_code == 200, published.text
    try:
        person = drive.person("US")
        due = drive.now.date() - timedelta(days=100)
        await drive.onboard(person, [due, due + timedelta(days=120)])
        await drive.to(drive.now + timedelta(hours=1))
        day = drive.now.astimezone(person.zone).date()
        for days in range(1, 6):  # twice a day: the spacing rule keeps calls two hours apart
            await drive.to(person.at(day + timedelta(days=days), 12))
            await drive.to(person.at(day + timedelta(days=days), 15))
        calls = await drive.messages(person, "voice")
        assert len(calls) == 7, [c["contact_id"] for c in calls]
        decisions = await drive.api("scheduler", f"/v1/accounts/{person.account_id}/decisions")
        held = [
            d
            for d in decisions
            if d["kind"] in ("deferred", "suppressed") and "US.voice.7-in-7" in d["reasons"]
        ]
        assert held, "the eighth call is held back by the 7-in-7 rule"
    finally:
        await drive.api("scheduler", "/v1/strategies", json=restored)
        await drive.system.request(
            "POST",
            f"{drive.system.endpoints.services['scheduler']}/v1/strategies/{shipped['id']}"
            f"/versions/{latest + 2}/publish",
        )
        await drive.follow_strategy()


def test_the_suite_left_no_dead_letters(system_under_test: RunningStack) -> None:
    logs = Path(system_under_test.state_dir) / "logs"
    assert "dead-lettered" not in "".join(p.read_text() for p in logs.glob("*.log"))
