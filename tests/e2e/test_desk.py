"""The collector desk on a whole running system of its own (the desk takes China's calls and
visits), in a real headless browser (Debian's Chromium, driven by Playwright, JavaScript off,
every request outside the desk refused): a collector signs in, takes the next item, reads its
compliance state and logs a promise that reaches the ledger; a plan beyond the collector's
authority waits for a team lead's approval and, approved, reaches the ledger; the window closes
while an item is open; a field agent's day by district; the managers' figures; a training
session with a banned phrase scored with its rule id. Then the desk's security: no page
without a session, nobody opens another's item, CSRF refused, no personal data in the logs.
Screenshots go to ``ARREARS_SCREENSHOTS`` when it is set (``docs/desk``)."""

from __future__ import annotations

import copy
import os
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import pytest_asyncio
import yaml
from playwright.async_api import Browser, BrowserContext, Page, Route
from playwright.async_api import Request as PwRequest

from services.scheduler.strategies import FILES
from tests.e2e.driver import START, Driver, Person
from tests.e2e.support import RunningStack, running_stack, service_logs
from tools.simulator.system import System

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]
SHOTS = os.environ.get("ARREARS_SCREENSHOTS")
PASSWORDS = {
    "wang": "demo-collector-pass",
    "li": "demo-collector-pass",
    "lead": "demo-lead-pass",
    "manager": "demo-manager-pass",
    "trainee": "demo-trainee-pass",
    "trainer": "demo-trainer-pass",
    "field": "demo-field-pass",
}


@pytest.fixture(scope="module")
def desk_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    extra = {"BUREAU_CYCLE": "daily", "ARREARS_DESK_COUNTRIES": "CN"}
    with running_stack(tmp_path_factory.mktemp("desk") / "stack", 25000, extra) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def drive(desk_stack: RunningStack) -> AsyncIterator[Driver]:
    async with System(desk_stack.endpoints) as system:
        driver = Driver(system, START - timedelta(days=1))
        await driver.start()
        await driver.to(START)
        yield driver
        await driver.stop()


def desk_url(drive: Driver) -> str:
    return drive.system.endpoints.services["desk"]


async def signed_in(browser: Browser, drive: Driver, username: str) -> tuple[BrowserContext, Page]:
    """A fresh browser without JavaScript that may reach nothing but the desk, signed in."""
    context = await browser.new_context(
        java_script_enabled=False, viewport={"width": 1200, "height": 900}
    )
    page = await context.new_page()
    host = urlsplit(desk_url(drive)).netloc
    outside: list[str] = []

    async def only_the_desk(route: Route, request: PwRequest) -> None:
        if urlsplit(request.url).netloc == host:
            await route.continue_()
        else:
            outside.append(request.url)
            await route.abort()

    await page.route("**/*", only_the_desk)
    await page.goto(f"{desk_url(drive)}/login")
    await page.fill("input[name=username]", username)
    await page.fill("input[name=password]", PASSWORDS[username])
    await page.click("button[type=submit]")
    assert "/login" not in page.url, await page.content()
    assert not outside
    return context, page


async def shot(page: Page, name: str, tmp_path: Path) -> None:
    await page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)
    if SHOTS:
        os.makedirs(SHOTS, exist_ok=True)
        await page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)


async def publish_calls_for_late_accounts(drive: Driver) -> None:
    """A strategy version whose late treatments call at once with a plan offer (limits up to
    12 instalments) and send a field agent the same day."""
    shipped: dict[str, Any] = yaml.safe_load((FILES / "early-and-late.yaml").read_text())
    versions = await drive.api("scheduler", "/v1/strategies")
    latest = max(v["version"] for v in versions if v["strategy_id"] == shipped["id"])
    calling = copy.deepcopy(shipped) | {"version": latest + 1}
    for variant in calling["variants"]:
        for treatment in variant["treatments"]:
            if "90-119" in treatment.get("segment", {}).get("buckets", []):
                treatment["limits"] = {"max_installments": 12}
                treatment["steps"] = [
                    {
                        "day": 0,
                        "channel": "voice",
                        "template": "call_arrears",
                        "offer": {"kind": "installments", "installments": 6},
                    },
                    {"day": 0, "channel": "field_visit", "template": "field_visit"},
                ]
    await drive.api("scheduler", "/v1/strategies", json=calling)
    published = await drive.system.request(
        "POST",
        f"{drive.system.endpoints.services['scheduler']}/v1/strategies/{shipped['id']}"
        f"/versions/{latest + 1}/publish",
    )
    assert published.status_code == 200, published.text
    await drive.follow_strategy()


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def customers(drive: Driver) -> list[Person]:
    """Four customers of China, 100 days behind, whose calls and visits reach the desk at once
    (08:00 on a working day, in the customers' calendar)."""
    await publish_calls_for_late_accounts(drive)
    people = [drive.person("CN") for _ in range(4)]
    due = drive.now.date() - timedelta(days=100)
    for person in people:
        await drive.onboard(person, [due, due + timedelta(days=120)])
    await drive.to(drive.now + timedelta(minutes=5))
    return people


def whose(drive: Driver, customers: list[Person], contact_id: str) -> Person:
    """The customer a work item is about, by the contact requests seen."""
    [person] = [
        p
        for p in customers
        if contact_id in {r.contact_id for r in drive.events("contact.requested", p.account_id)}
    ]
    return person


async def promise_on_ledger(drive: Driver, person: Person) -> dict[str, Any] | None:
    account = await drive.api("ledger", f"/v1/accounts/{person.account_id}")
    found: dict[str, Any] | None = account.get("promise")
    return found


async def test_a_collector_takes_the_next_item_reads_its_compliance_and_logs_a_promise(
    drive: Driver, customers: list[Person], browser: Browser, tmp_path: Path
) -> None:
    login = await browser.new_page(java_script_enabled=False)
    await login.goto(f"{desk_url(drive)}/login")
    await shot(login, "login", tmp_path)
    await login.close()
    context, page = await signed_in(browser, drive, "wang")
    await shot(page, "queue", tmp_path)
    assert int(await page.inner_text("#waiting")) >= 1
    await page.click("#take-next")
    assert "/items/" in page.url
    lines = await page.inner_text("#compliance-lines")
    assert "0 of 3 connected calls to this customer used today" in lines
    assert "CN.voice.connected-per-day" in lines
    assert "window open; closes 22:00 local" in lines
    assert "contact the debtor only" in lines
    assert "A voice is allowed now" in await page.inner_text("#allowed")
    assert await page.inner_text("#customer-name") == "Scenario Person"  # the holder sees it
    assert "1234" in await page.inner_text("#national-id")
    assert "110101" not in await page.content(), "the national id is masked"
    await shot(page, "item", tmp_path)
    contact_id = page.url.rsplit("/", 1)[-1]
    person = whose(drive, customers, contact_id)
    day = drive.now.astimezone(person.zone).date() + timedelta(days=3)
    await page.check("input[name=outcome][value=promise]")
    await page.fill("input[name=promise_amount]", "800.00")
    await page.fill("input[name=promise_date]", day.isoformat())
    await page.click("#log-outcome")
    assert "Logged and reported" in await page.inner_text("#done")
    await drive.settle()
    [made] = drive.events("promise.made", person.account_id)
    assert made.amount == Decimal("800.00")
    assert made.due_date == day
    assert made.promise_id.startswith("desk:")
    promise = await promise_on_ledger(drive, person)
    assert promise is not None
    assert Decimal(promise["amount"]) == Decimal("800.00")
    await context.close()


async def test_a_plan_beyond_authority_waits_for_approval_and_approved_reaches_the_ledger(
    drive: Driver, customers: list[Person], browser: Browser, tmp_path: Path
) -> None:
    context, page = await signed_in(browser, drive, "li")
    await page.click("#take-next")
    contact_id = page.url.rsplit("/", 1)[-1]
    person = whose(drive, customers, contact_id)
    offers = await page.inner_text("#offers")
    assert "You may agree\t6" in offers
    assert "With approval, up to\t12" in offers
    await page.check("input[name=outcome][value=plan]")
    await page.select_option("select[name=kind]", "installments")
    await page.fill("input[name=installments]", "24")
    await page.click("#log-outcome")
    assert "installments: 24 is more than 12 (the treatment's limit)" in await page.inner_text(
        "#error"
    )
    await page.check("input[name=outcome][value=plan]")
    await page.select_option("select[name=kind]", "installments")
    await page.fill("input[name=installments]", "12")
    await page.click("#log-outcome")
    assert "waits for a team lead's approval" in await page.inner_text("#done")
    await drive.settle()
    assert not drive.events("plan.agreed", person.account_id)

    lead_context, lead = await signed_in(browser, drive, "lead")
    await lead.goto(f"{desk_url(drive)}/approvals")
    await shot(lead, "approvals", tmp_path)
    assert "12 instalments" in await lead.inner_text("main")
    await lead.click("button[value=approve]")
    assert "Nothing waits for approval" in await lead.inner_text("main")
    await drive.settle()
    [agreed] = drive.events("plan.agreed", person.account_id)
    assert len(agreed.installments) == 12
    assert agreed.source == "voice"
    account = await drive.api("ledger", f"/v1/accounts/{person.account_id}")
    assert account["plan"] is not None
    assert account["plan"]["status"] == "active"
    assert len(account["plan"]["installments"]) == 12
    await lead_context.close()
    await context.close()


async def test_a_field_agent_sees_the_day_by_district_and_logs_not_at_home(
    drive: Driver, customers: list[Person], browser: Browser, tmp_path: Path
) -> None:
    context, page = await signed_in(browser, drive, "field")
    assert "/field" in page.url
    assert await page.inner_text("h2.district") == "Springfield"
    assert "08:05–22:00" in await page.inner_text("main")
    await shot(page, "field-day", tmp_path)
    await page.click("form[action$='/take'] button")
    assert "/items/" in page.url
    contact_id = page.url.rsplit("/", 1)[-1]
    assert "Springfield" in await page.inner_text("#customer-address")
    await page.check("input[name=outcome][value=not_at_home]")
    await page.click("#log-outcome")
    assert "Logged and reported" in await page.inner_text("#done")
    await drive.settle()
    attempts = [
        a
        for p in customers
        for a in drive.events("contact.attempted", p.account_id)
        if a.contact_id == contact_id
    ]
    assert [a.outcome for a in attempts if a.outcome != "sent"] == ["no_answer"]
    await context.close()


async def test_the_window_closes_while_an_item_is_open(
    drive: Driver, customers: list[Person], browser: Browser, tmp_path: Path
) -> None:
    context, page = await signed_in(browser, drive, "wang")
    await page.click("#take-next")
    contact_id = page.url.rsplit("/", 1)[-1]
    assert await page.is_visible("#log-outcome")
    person = customers[0]
    day = drive.now.astimezone(person.zone).date()
    await drive.to(person.at(day, 22, 1))
    await page.reload()
    closed = await page.inner_text("#window-closed")
    assert "The contact window closed at 22:00 local time" in closed
    assert not await page.is_visible("#log-outcome")
    await shot(page, "window-closed", tmp_path)
    # the form sent anyway (an old tab) is refused
    csrf = await page.get_attribute("input[name=csrf]", "value")
    cookies = {c["name"]: c["value"] for c in await context.cookies()}
    async with httpx.AsyncClient(base_url=desk_url(drive), cookies=cookies) as http:
        refused = await http.post(
            f"/v1/work/{contact_id}/outcome",
            json={"outcome": "right_party"},
            headers={"X-CSRF-Token": csrf or ""},
        )
    assert refused.status_code == 409, refused.text
    assert "window closed" in refused.json()["detail"] or "expired" in refused.json()["detail"]
    attempts = [
        a.outcome
        for p in customers
        for a in drive.events("contact.attempted", p.account_id)
        if a.contact_id == contact_id
    ]
    assert "expired" in attempts
    await context.close()


async def test_managers_see_queues_and_each_collectors_results(
    drive: Driver, customers: list[Person], browser: Browser, tmp_path: Path
) -> None:
    context, page = await signed_in(browser, drive, "manager")
    await page.goto(f"{desk_url(drive)}/manager")
    collectors = await page.inner_text("#collectors")
    assert "wang" in collectors
    assert "li" in collectors
    assert "field" in collectors
    queues = await page.inner_text("#queues")
    assert "voice" in queues
    assert "field_visit" in queues
    await shot(page, "manager", tmp_path)
    await context.close()


async def test_a_training_session_with_a_banned_phrase_is_scored_with_its_rule_id(
    drive: Driver, browser: Browser, tmp_path: Path
) -> None:
    context, page = await signed_in(browser, drive, "trainee")
    await page.select_option("#persona", "willing_payer")
    await page.click("#start-training")
    for move, text in (
        ("verify_identity", ""),
        ("free_text", "Pay today or we will sue you"),
        ("name_debt", ""),
        ("ask_promise", ""),
    ):
        if text:
            await page.fill("#say", text)
        await page.click(f"button[value={move}]")
    assert "we will sue you" in await page.inner_text("#transcript")
    deductions = await page.inner_text("#deductions")
    assert "TR.threat" in deductions
    assert "−25" in deductions
    assert await page.inner_text("#outcome") == "promise"
    assert await page.inner_text("#total") == "75"
    await shot(page, "training", tmp_path)
    trainer_context, trainer = await signed_in(browser, drive, "trainer")
    assert "/trainer" in trainer.url
    assert "TR.threat" in await trainer.inner_text("#sessions")
    assert "trainee" in await trainer.inner_text("#progress")
    await shot(trainer, "trainer", tmp_path)
    await trainer_context.close()
    await context.close()


# --- security ----------------------------------------------------------------------------------


async def test_no_page_without_a_session_and_no_item_for_another_collector(
    drive: Driver, customers: list[Person]
) -> None:
    base = desk_url(drive)
    fresh = drive.person("CN")  # a call for the next morning (today's window has closed)
    due = drive.now.date() - timedelta(days=100)
    await drive.onboard(fresh, [due, due + timedelta(days=120)])
    day = drive.working_day("CN", drive.now.astimezone(fresh.zone).date())
    await drive.to(fresh.at(day, 8, 5))
    async with httpx.AsyncClient(base_url=base, follow_redirects=False) as anonymous:
        for path in ("/queue", "/manager", "/approvals", "/training", "/items/x", "/field"):
            found = await anonymous.get(path)
            assert found.status_code == 303, path
            assert found.headers["location"] == "/login", path
        assert (await anonymous.post("/v1/work/next")).status_code == 401
    async with httpx.AsyncClient(base_url=base) as wang, httpx.AsyncClient(base_url=base) as li:
        csrf = {}
        for name, http in (("wang", wang), ("li", li)):
            signed = await http.post(
                "/v1/session", json={"username": name, "password": PASSWORDS[name]}
            )
            assert signed.status_code == 200
            assert "HttpOnly" in signed.headers["set-cookie"]
            assert "SameSite=strict" in signed.headers["set-cookie"]
            csrf[name] = signed.json()["csrf"]
        taken = await wang.post("/v1/work/next", headers={"X-CSRF-Token": csrf["wang"]})
        assert taken.status_code == 200, taken.text
        contact_id = taken.json()["contact_id"]
        assert taken.json()["name"] == "Scenario Person"
        assert (await li.get(f"/v1/work/{contact_id}")).status_code == 403
        assert (await li.get(f"/items/{contact_id}")).status_code == 403
        stolen = await li.post(
            f"/v1/work/{contact_id}/outcome",
            json={"outcome": "no_answer"},
            headers={"X-CSRF-Token": csrf["li"]},
        )
        assert stolen.status_code == 403
        # CSRF: the right session without its token, or with another session's, is refused
        for token in ("", csrf["li"]):
            forged = await wang.post(
                f"/v1/work/{contact_id}/outcome",
                json={"outcome": "no_answer"},
                headers={"X-CSRF-Token": token},
            )
            assert forged.status_code == 403, forged.text
        page_form = await wang.post(f"/items/{contact_id}/outcome", data={"outcome": "no_answer"})
        assert page_form.status_code == 403
        released = await wang.post(
            f"/v1/work/{contact_id}/release", headers={"X-CSRF-Token": csrf["wang"]}
        )
        assert released.status_code == 200


async def test_sign_in_is_rate_limited_and_refuses_alike(drive: Driver) -> None:
    async with httpx.AsyncClient(base_url=desk_url(drive)) as http:
        unknown = await http.post("/v1/session", json={"username": "nobody", "password": "x" * 12})
        wrong = await http.post("/v1/session", json={"username": "zhao", "password": "x" * 12})
        assert unknown.status_code == wrong.status_code == 401
        assert unknown.json()["detail"] == wrong.json()["detail"]
        statuses = [
            (
                await http.post("/v1/session", json={"username": "zhao", "password": "y" * 12})
            ).status_code
            for _ in range(5)
        ]
        assert statuses[-1] == 429, statuses
        locked = await http.post(
            "/v1/session", json={"username": "zhao", "password": "demo-collector-pass"}
        )
        assert locked.status_code == 429, "the right password waits out the lock too"


async def test_the_partner_api_needs_the_notifiers_key(drive: Driver) -> None:
    async with httpx.AsyncClient(base_url=desk_url(drive)) as http:
        body = {"contact_id": "x", "channel": "voice", "not_after": "2030-01-01T00:00:00Z"}
        refused = await http.post("/v1/messages/voice", json=body, headers={"Idempotency-Key": "x"})
        assert refused.status_code == 401


def test_no_personal_data_in_the_desks_logs(desk_stack: RunningStack) -> None:
    logs = service_logs(desk_stack.state_dir)
    assert "desk" in logs
    for secret in ("Scenario Person", "+86139", "110101199001011234", "Scenario Street"):
        assert secret not in logs, secret
    assert "demo-collector-pass" not in logs
