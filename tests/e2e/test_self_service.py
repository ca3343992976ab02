"""The customer's self-service page in a real headless browser (Debian's Chromium, driven by
Playwright), with JavaScript off and every request outside the notifier refused, as on a phone
with the page alone: the link from a real SMS, the identity check, offers within their limits,
a plan that reaches the ledger, the lock after five wrong answers, an expired link, both
locales. Screenshots go to ``ARREARS_SCREENSHOTS`` when it is set (``docs/self-service``)."""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.async_api import Browser, Page, Route
from playwright.async_api import Request as PwRequest

from tests.e2e.driver import Driver, Person

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
LINK = re.compile(r"https?://[^\s]+/s/[A-Za-z0-9_\-.]+")
SHOTS = os.environ.get("ARREARS_SCREENSHOTS")


async def open_page(browser: Browser, link: str, outside: list[str]) -> Page:
    """A fresh page without JavaScript that may reach nothing but the notifier."""
    context = await browser.new_context(java_script_enabled=False)
    page = await context.new_page()
    host = urlsplit(link).netloc

    async def only_the_notifier(route: Route, request: PwRequest) -> None:
        if urlsplit(request.url).netloc == host:
            await route.continue_()
        else:
            outside.append(request.url)
            await route.abort()

    await page.route("**/*", only_the_notifier)
    return page


async def shot(page: Page, name: str, tmp_path: Path) -> None:
    await page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)
    if SHOTS:
        os.makedirs(SHOTS, exist_ok=True)
        await page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)


async def sms_link(drive: Driver, person: Person, offer: bool) -> str:
    """The self-service link of the customer's latest SMS (one that carried an offer)."""
    day = drive.working_day(person.country, drive.now.astimezone(person.zone).date())
    for days in range(0, 8):
        await drive.to(person.at(day + timedelta(days=days), 12))
        offers = [
            r.contact_id
            for r in drive.events("contact.requested", person.account_id)
            if r.channel == "sms" and (r.offer is not None or not offer)
        ]
        sent = [m for m in await drive.messages(person, "sms") if m["contact_id"] in offers]
        if sent:
            found = LINK.search(sent[-1]["body"])
            assert found, sent[-1]["body"]
            link = found.group(0)
            assert person.customer_id not in link
            assert person.account_id not in link
            assert (person.phone or "-") not in link
            return link
    raise AssertionError("no SMS with a link")


async def test_a_customer_agrees_a_plan_on_the_page_within_its_limits_and_it_reaches_the_ledger(
    drive: Driver, browser: Browser, tmp_path: Path
) -> None:
    person = drive.person("US", variant="champion")
    due = drive.now.date() - timedelta(days=40)  # the mid treatment: an SMS offer of 6, up to 12
    await drive.onboard(person, [due, due + timedelta(days=60)])
    link = await sms_link(drive, person, offer=True)
    outside: list[str] = []
    page = await open_page(browser, link, outside)
    await page.goto(link)
    assert await page.locator("html").get_attribute("lang") == "en"
    assert "quick check" in await page.inner_text("#check")
    assert "overdue" not in (await page.inner_text("body")).lower(), "shown before the check"
    await shot(page, "1-identity-check-en", tmp_path)

    await page.fill("#answer", "1985-05-05")  # a wrong birth date
    await page.click("#continue")
    assert "4 tries left" in await page.inner_text("#message")
    await page.check("input[value=national_id_last4]")
    await page.fill("#answer", "6789")  # the last four of the US id number
    await page.click("#continue")
    overdue = await page.inner_text("#overdue")
    assert "is overdue on your account ending" in overdue
    assert "USD" in overdue
    await shot(page, "2-account-en", tmp_path)

    # a form posted from elsewhere (with the session cookie, without the form's token) does
    # nothing: it lands back on the page
    forged = await page.context.request.post(
        f"{link}/plan", form={"kind": "installments", "installments": "12"}, max_redirects=0
    )
    assert forged.status == 303
    await drive.settle()
    assert not drive.events("plan.agreed", person.account_id)

    await page.fill("#plan-installments #installments", "24")  # beyond the limit of 12
    await page.click("#plan-installments button")
    message = await page.inner_text("#message")
    assert "installments: 24 is more than this offer allows (12)" in message
    await shot(page, "3-offer-beyond-limits-en", tmp_path)
    await drive.settle()
    assert not drive.events("plan.agreed", person.account_id)

    await page.fill("#plan-installments #installments", "12")
    await page.click("#plan-installments button")
    assert "Your plan is agreed" in await page.inner_text("#message")
    await shot(page, "4-plan-agreed-en", tmp_path)
    # the same form sent again (a double click, a retry): nothing more happens
    form = await page.locator("#plan-installments input[name=form]").get_attribute("value")
    again = await page.context.request.post(
        f"{link}/plan", form={"form": form or "", "kind": "installments", "installments": "12"}
    )
    assert again.status == 200
    assert "We already have this" in await again.text()
    await drive.settle()
    [agreed] = drive.events("plan.agreed", person.account_id)
    assert (agreed.source, len(agreed.installments)) == ("self_service", 12)
    [activated] = drive.events("plan.activated", person.account_id)
    assert activated.plan_id == agreed.plan_id
    account = await drive.api("ledger", f"/v1/accounts/{person.account_id}")
    assert account["plan"]["source"] == "self_service"
    assert not outside, outside

    # The link expires: fourteen days after the message, the page says so.
    await drive.to(drive.now + timedelta(days=15))
    expired = await page.goto(link)
    assert expired is not None
    assert expired.status == 410
    assert "This link has expired" in await page.inner_text("#message")
    await page.context.close()


async def a_chinese_customer_on_the_page(
    drive: Driver, browser: Browser
) -> tuple[Person, str, Page, list[str]]:
    """A CN customer a few days behind, their first SMS's link open in the browser."""
    person = drive.person("CN", variant="champion")
    due = drive.now.date() - timedelta(days=3)
    await drive.onboard(person, [due, due + timedelta(days=30)])
    link = await sms_link(drive, person, offer=False)
    outside: list[str] = []
    page = await open_page(browser, link, outside)
    await page.goto(link)
    return person, link, page, outside


async def test_five_wrong_answers_lock_the_page_and_a_chinese_customer_reads_it_in_chinese(
    drive: Driver, browser: Browser, tmp_path: Path
) -> None:
    person, link, page, outside = await a_chinese_customer_on_the_page(drive, browser)
    assert await page.locator("html").get_attribute("lang") == "zh"
    assert "请先简单核实身份" in await page.inner_text("#check")
    await shot(page, "5-identity-check-zh", tmp_path)
    for wrong in range(1, 5):
        await page.fill("#answer", f"2000-01-0{wrong}")
        await page.click("#continue")
        assert f"还可尝试{5 - wrong}次" in await page.inner_text("#message")
    await page.fill("#answer", "2000-01-09")
    await page.click("#continue")
    assert "此页面已锁定" in await page.inner_text("#message")
    await shot(page, "6-locked-zh", tmp_path)
    await page.goto(link)
    await page.fill("#answer", "1990-01-01")  # right, but the page is locked
    await page.click("#continue")
    assert "此页面已锁定" in await page.inner_text("#message")
    assert not drive.events("plan.agreed", person.account_id)
    assert not outside, outside
    await page.context.close()


async def test_a_chinese_customer_reports_hardship_on_the_page_and_collection_pauses(
    drive: Driver, browser: Browser, tmp_path: Path
) -> None:
    person, _link, page, outside = await a_chinese_customer_on_the_page(drive, browser)
    await page.fill("#answer", "1990-01-01")
    await page.click("#continue")
    assert "逾期" in await page.inner_text("#overdue")
    await shot(page, "7-account-zh", tmp_path)
    await page.select_option("#reason", "illness")
    await page.click("#hardship button")
    assert "感谢您告诉我们" in await page.inner_text("#message")
    await drive.settle()
    [reported] = drive.events("hardship.reported", person.account_id)
    assert (reported.reason, reported.source) == ("illness", "self_service")
    trail = await drive.api("scheduler", f"/v1/accounts/{person.account_id}/decisions")
    assert any(d["kind"] == "hardship" and d["reasons"] == ["CN.pause.hardship"] for d in trail)

    await page.fill("#amount", "100.00")
    await page.fill("#due_date", (drive.now.date() + timedelta(days=90)).isoformat())
    await page.click("#promise button")
    assert "due_date" in await page.inner_text("#message")  # too far ahead: refused
    assert not drive.events("promise.made", person.account_id)
    assert not outside, outside
    await page.context.close()


async def test_a_forged_link_is_refused_and_says_nothing(drive: Driver, browser: Browser) -> None:
    base = drive.system.endpoints.services["notifier"]
    forged = await drive.system.request("GET", f"{base}/s/bm90LWEtbGluaw.AAAAAAAAAAAAAAAAAAAAAAAA")
    assert forged.status_code == 404
    assert "not valid" in forged.text
    posted = await drive.system.request(
        "POST", f"{base}/s/bm90LWEtbGluaw.AAAAAAAAAAAAAAAAAAAAAAAA/plan", data={"kind": "x"}
    )
    assert posted.status_code == 404
    assert browser.is_connected()
