"""Humane collection on the whole running system, through its public contract only (Kafka,
HTTP, partner webhooks) on the controlled clock: reminders before the due date, hardship,
callbacks, spacing after a holiday, offer limits, and a deliberately aggressive strategy that
must reach every cap and exceed none."""

from __future__ import annotations

import copy
import itertools
import json
import time
import uuid
from collections import Counter
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import holidays
import pytest
import yaml

from services.notifier.settings import DEV_PARTNER_SECRET
from services.scheduler.strategies import FILES
from shared.events import AccountFlagged
from shared.signing import HEADER, header_value
from tests.e2e.driver import Driver, Person

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
SHIPPED: dict[str, Any] = yaml.safe_load((FILES / "early-and-late.yaml").read_text())


def free_day(drive: Driver, country: str, after: date, before_too: int = 0) -> date:
    """A working day after ``after`` whose ``before_too`` days before are working days too."""
    day = drive.working_day(country, after)
    while any(
        drive.working_day(country, day - timedelta(days=k + 1)) != day - timedelta(days=k)
        for k in range(before_too)
    ):
        day = drive.working_day(country, day)
    return day


async def decisions(drive: Driver, person: Person) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = await drive.api(
        "scheduler", f"/v1/accounts/{person.account_id}/decisions"
    )
    return found


# --- before the due date -----------------------------------------------------------------------


async def test_a_reminder_three_days_before_the_due_date_and_none_after_payment(
    drive: Driver,
) -> None:
    reminded = drive.person("CN", variant="champion")
    paid_early = drive.person("CN", variant="champion")
    paid_at_dawn = drive.person("CN", variant="champion")
    control = drive.person("CN", variant="early-plan")  # the challenger sends no reminder
    remind_day = free_day(drive, "CN", drive.now.date() + timedelta(days=3))
    due = remind_day + timedelta(days=3)
    for person in (reminded, paid_early, paid_at_dawn, control):
        await drive.onboard(person, [due, due + timedelta(days=30)])
    await drive.to(reminded.at(remind_day - timedelta(days=1), 12))
    assert not drive.events("installment.due_soon", reminded.account_id)
    await drive.pay(paid_early, Decimal("800.00"))  # the instalment is paid before its day

    await drive.to(reminded.at(remind_day, 7))
    [soon] = drive.events("installment.due_soon", reminded.account_id)
    assert (soon.installment_no, soon.due_date, soon.days_until_due) == (1, due, 3)
    assert soon.amount == Decimal("800.00")
    assert not drive.events("installment.due_soon", paid_early.account_id)
    assert drive.events("installment.due_soon", control.account_id)  # told, but not reminded
    assert not await drive.messages(reminded), "a reminder before 08:00 local"
    await drive.pay(paid_at_dawn, Decimal("800.00"))  # after the event, before the message

    await drive.to(reminded.at(remind_day, 9))
    [email] = await drive.messages(reminded)
    assert email["channel"] == "email"
    assert due.isoformat() in email["body"]
    assert "/s/" in email["body"], "the reminder carries the self-service link"
    [request] = drive.events("contact.requested", reminded.account_id)
    assert (request.template, request.purpose) == ("due_soon_reminder", "reminder")
    assert request.offer is None
    assert not drive.events("payment.missed", reminded.account_id)
    assert not await drive.messages(paid_at_dawn), "reminded after paying"
    cancelled = [d for d in await decisions(drive, paid_at_dawn) if d["kind"] == "cancelled"]
    assert any("CN.settle.nothing-overdue" in d["reasons"] for d in cancelled)
    assert not await drive.messages(control)
    assert not drive.events("installment.due_soon", reminded.account_id)[1:], "twice"


# --- hardship ----------------------------------------------------------------------------------


async def test_a_hardship_reply_pauses_contact_for_the_breather_then_offers_the_hardship_plan(
    drive: Driver,
) -> None:
    person = drive.person("CN", variant="champion")
    due = drive.now.date() - timedelta(days=3)
    await drive.onboard(person, [due, due + timedelta(days=30)], amount=Decimal("1200.00"))
    day = drive.working_day("CN", drive.now.astimezone(person.zone).date())
    await drive.to(person.at(day, 10))
    assert await drive.messages(person, "sms")
    await drive.reply(person, "sms", "我失业了，这个月真的还不上")
    [reported] = drive.events("hardship.reported", person.account_id)
    assert (reported.reason, reported.source) == ("unemployment", "sms")
    paused_at = drive.now
    sent = len(await drive.messages(person))
    sms_before = len(await drive.messages(person, "sms"))
    trail = await decisions(drive, person)
    assert any(d["kind"] == "hardship" and d["reasons"] == ["CN.pause.hardship"] for d in trail)
    assert any(d["kind"] == "cancelled" and d["reasons"] == ["CN.pause.hardship"] for d in trail), (
        "the pending collection steps are cancelled citing the pause"
    )

    for days in range(1, 14):  # the breather: fourteen days without any contact
        await drive.to(paused_at + timedelta(days=days))
    assert len(await drive.messages(person)) == sent, "contacted inside the hardship pause"
    offer = None
    for hours in range(1, 24 * 6, 6):
        await drive.to(paused_at + timedelta(days=14, hours=hours))
        offers = (await drive.messages(person, "sms"))[sms_before:]
        if offers:
            offer = offers[0]
            break
    assert offer is not None, "no hardship offer after the breather"
    [request] = [
        r for r in drive.events("contact.requested", person.account_id) if r.purpose == "hardship"
    ][:1]
    assert request.not_before >= paused_at + timedelta(days=14)
    assert request.template == "hardship_offer"
    assert request.offer is not None
    assert request.offer.hardship
    assert request.offer.limits is not None
    assert request.offer.limits.max_installments == 12

    await drive.reply(person, "sms", "同意")
    [agreed] = drive.events("plan.agreed", person.account_id)
    assert agreed.hardship
    assert len(agreed.installments) == 12
    [activated] = drive.events("plan.activated", person.account_id)
    assert activated.hardship
    account = await drive.api("ledger", f"/v1/accounts/{person.account_id}")
    assert account["plan"]["hardship"] is True
    history = await drive.api("ledger", f"/v1/accounts/{person.account_id}/history")
    assert any(
        h["kind"] == "plan_agreed" and "under hardship" in h.get("detail", "") for h in history
    )


async def test_account_flagged_hardship_counts_the_same_as_a_reply(drive: Driver) -> None:
    person = drive.person("US", variant="champion")
    due = drive.now.date() - timedelta(days=3)
    await drive.onboard(person, [due, due + timedelta(days=30)])
    await drive.system.publish(
        [
            drive.system.event(
                AccountFlagged(account_id=person.account_id, flag="hardship", active=True),
                person.customer_id,
                drive.now,
                person.account_id,
            )
        ]
    )
    await drive.settle()
    flagged_at = drive.now
    for days in range(1, 14):
        await drive.to(flagged_at + timedelta(days=days))
    trail = await decisions(drive, person)
    assert any(d["kind"] == "hardship" and d["reasons"] == ["US.pause.hardship"] for d in trail)
    fired = [
        r for r in drive.events("contact.requested", person.account_id) if r.not_before > flagged_at
    ]
    assert not fired, "contacted inside the hardship pause"


# --- callbacks ---------------------------------------------------------------------------------


async def test_a_callback_at_1930_is_planned_then_and_one_asked_for_2300_moves_to_0800(
    drive: Driver,
) -> None:
    person = drive.person("CN", variant="champion")
    due = drive.now.date() - timedelta(days=3)
    await drive.onboard(person, [due, due + timedelta(days=30)])
    day = free_day(drive, "CN", drive.now.astimezone(person.zone).date(), before_too=0)
    while drive.working_day("CN", day) != day + timedelta(days=1):
        day = drive.working_day("CN", day)  # the day after must be a working day too
    await drive.to(person.at(day, 9))
    [sms, *_] = await drive.messages(person, "sms")
    asked = person.at(day, 19, 30)
    await drive.report_status(sms["contact_id"], "callback", callback_at=asked.isoformat())
    [callback] = drive.events("callback.requested", person.account_id)
    assert callback.at == asked
    [planned] = [d for d in await decisions(drive, person) if d["kind"] == "callback"]
    assert datetime.fromisoformat(planned["inputs"]["planned"]) == asked
    assert planned["reasons"] == []

    await drive.reply(person, "sms", "请晚上11点给我打电话")
    late = drive.events("callback.requested", person.account_id)[1]
    assert late.at == person.at(day, 23)
    moved = [d for d in await decisions(drive, person) if d["kind"] == "callback"][1]
    assert datetime.fromisoformat(moved["inputs"]["planned"]) == person.at(
        day + timedelta(days=1), 8
    )
    assert "CN.window.local-hours" in moved["reasons"]

    await drive.to(person.at(day, 19, 29))
    before = [r for r in drive.events("contact.requested", person.account_id) if r.purpose]
    assert not [r for r in before if r.purpose == "callback"]
    await drive.to(person.at(day, 19, 30))
    await drive.to(person.at(day + timedelta(days=1), 8))
    calls = [
        r for r in drive.events("contact.requested", person.account_id) if r.purpose == "callback"
    ]
    assert [c.not_before for c in calls] == [asked, person.at(day + timedelta(days=1), 8)]
    assert all(c.channel == "voice" and c.template == "callback" for c in calls)


# --- offer limits ------------------------------------------------------------------------------


async def test_an_offer_beyond_its_limits_is_refused_and_one_within_them_is_agreed(
    drive: Driver,
) -> None:
    person = drive.person("US", variant="champion")
    due = drive.now.date() - timedelta(days=40)  # the mid treatment's plan offer: 6, at most 12
    await drive.onboard(person, [due, due + timedelta(days=60)])
    day = drive.working_day("US", drive.now.astimezone(person.zone).date())
    offer = None
    for days in range(0, 6):
        await drive.to(person.at(day + timedelta(days=days), 12))
        offers = [
            r for r in drive.events("contact.requested", person.account_id) if r.offer is not None
        ]
        if offers and await drive.messages(person, "sms"):
            offer = offers[0]
            break
    assert offer is not None
    assert offer.offer is not None
    assert offer.offer.limits is not None
    assert offer.offer.limits.max_installments == 12

    async def accept(terms: dict[str, Any]) -> Any:
        body = {
            "event_id": str(uuid.uuid4()),
            "contact_id": offer.contact_id,
            "status": "plan_accepted",
        } | terms
        raw = json.dumps(body).encode()
        return await drive.system.request(
            "POST",
            f"{drive.system.endpoints.services['notifier']}/v1/webhooks/standin/status",
            content=raw,
            headers={
                HEADER: header_value(DEV_PARTNER_SECRET, int(time.time()), raw),
                "content-type": "application/json",
            },
        )

    refused = await accept({"kind": "installments", "installments": 24})
    assert refused.status_code == 422
    assert refused.headers["content-type"] == "application/problem+json"
    [error] = refused.json()["errors"]
    assert error["field"] == "body.installments"
    assert "24 is more than this offer allows (12)" in error["message"]
    other = await accept({"kind": "settlement", "settlement_percent": "40"})
    assert other.status_code == 422
    assert [e["field"] for e in other.json()["errors"]] == ["body.kind"]  # not this offer's
    await drive.settle()
    assert not drive.events("plan.agreed", person.account_id)

    agreed = await accept({"kind": "installments", "installments": 12})
    assert agreed.status_code == 200, agreed.text
    await drive.settle()
    [plan] = drive.events("plan.agreed", person.account_id)
    assert len(plan.installments) == 12
    assert not plan.hardship


# --- spacing after a holiday, and an aggressive strategy ----------------------------------------


@pytest.fixture
def aggressive() -> dict[str, Any]:
    """A strategy as a bank's strategist might write it: four calls, an SMS and an email
    every day, all at one instant."""
    daily = copy.deepcopy(SHIPPED)
    for variant in daily["variants"]:
        for treatment in variant["treatments"]:
            if treatment.get("trigger", "missed") != "missed":
                continue
            treatment["steps"] = [
                {"day": d, "channel": channel, "template": template}
                for d in range(6)
                for channel, template in (
                    ("voice", "call_arrears"),
                    ("voice", "call_arrears"),
                    ("voice", "call_arrears"),
                    ("voice", "call_arrears"),
                    ("sms", "reminder_soft"),
                    ("email", "reminder_soft"),
                )
            ]
    return daily


async def publish(drive: Driver, document: dict[str, Any]) -> None:
    await drive.api("scheduler", "/v1/strategies", json=document)
    published = await drive.system.request(
        "POST",
        f"{drive.system.endpoints.services['scheduler']}/v1/strategies/{document['id']}"
        f"/versions/{document['version']}/publish",
    )
    assert published.status_code == 200, published.text


async def test_an_aggressive_strategy_reaches_every_cap_exceeds_none_and_spaces_contacts(
    drive: Driver, aggressive: dict[str, Any]
) -> None:
    """Last in the module: it publishes the aggressive version and restores the shipped one."""
    versions = await drive.api("scheduler", "/v1/strategies")
    latest = max(v["version"] for v in versions if v["strategy_id"] == SHIPPED["id"])
    await publish(drive, aggressive | {"version": latest + 1})
    try:
        # A household of three CN customers sharing one phone, missing their payments the day
        # before a public holiday, their treatments starting at 21:59 (the window's last
        # minute); and a US customer.
        calendar = holidays.country_holidays("CN", years=range(drive.now.year, drive.now.year + 2))
        holiday = min(d for d in calendar if d > drive.now.date() + timedelta(days=3))
        eve = holiday - timedelta(days=1)
        shared_phone = "+8613900001234"
        household = [drive.person("CN") for _ in range(3)]
        for person in household:
            person.phone = shared_phone
        us = drive.person("US")
        everyone = [*household, us]
        for person in everyone:
            await drive.onboard(person, [eve - timedelta(days=1), eve + timedelta(days=30)])
        first = household[0]
        start = first.at(eve, 21, 59)
        await drive.to(start)  # the misses are seen now: day 0's steps fall due at once
        instant = start
        after_holiday = drive.working_day("CN", holiday)
        # through the first days after the holiday, within a week (one 7-day US window)
        end = min(first.at(after_holiday + timedelta(days=2), 23), start + timedelta(days=6))
        while instant < end:
            instant += timedelta(hours=1)
            await drive.to(instant)
    finally:
        await publish(drive, copy.deepcopy(SHIPPED) | {"version": latest + 2})
        await drive.follow_strategy()

    requests = {p.account_id: drive.events("contact.requested", p.account_id) for p in everyone}
    for person in everyone:
        mine = requests[person.account_id]
        assert mine, person.account_id
        for kind, gap in (({"voice"}, 120), ({"sms", "email"}, 60)):
            times = sorted(r.not_before for r in mine if r.channel in kind)
            assert all(b - a >= timedelta(minutes=gap) for a, b in itertools.pairwise(times)), (
                person.country,
                kind,
                times,
            )
        for r in mine:
            local = r.not_before.astimezone(person.zone)
            assert local.date() not in holidays.country_holidays(person.country, years=local.year)
            window_end = 22 if person.country == "CN" else 21
            assert 8 <= local.hour < window_end, local
    # the household's number: every attempt counts, whoever it was for: six a day, no more
    per_day: Counter[date] = Counter()
    for person in household:
        for r in requests[person.account_id]:
            if r.channel == "voice":
                per_day[r.not_before.astimezone(first.zone).date()] += 1
    assert per_day, "no calls at all"
    assert max(per_day.values()) == 6, per_day  # reached, never exceeded
    # the US account: at most 7 calls in any 7 consecutive days, reached
    us_days = sorted(
        r.not_before.astimezone(us.zone).date()
        for r in requests[us.account_id]
        if r.channel == "voice"
    )
    in_week = [sum(1 for d in us_days if day - timedelta(days=6) <= d <= day) for day in us_days]
    assert max(in_week) == 7, us_days
    decisions_us = await decisions(drive, us)
    assert any("US.voice.7-in-7" in d["reasons"] for d in decisions_us)
    household_decisions = [d for p in household for d in await decisions(drive, p)]
    assert any("CN.voice.attempts-per-number-per-day" in d["reasons"] for d in household_decisions)
    assert any("CN.spacing.calls" in d["reasons"] for d in household_decisions)
    assert any("CN.holiday" in d["reasons"] for d in household_decisions)
    # piled up, never dropped: every step is fired or still waiting, none given up
    assert not [
        d for d in household_decisions if d["kind"] == "suppressed" and "horizon" in d["reasons"]
    ]
