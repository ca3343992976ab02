"""What an operator and an integrator meet at the edges of every service's HTTP API: the docs
pages work in a real browser with no network beyond the service itself, and a body far over the
limit is refused before it is read, so the service's memory stays flat."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Request as PwRequest
from playwright.sync_api import Route

from shared.settings import ServiceSettings
from tests.e2e.driver import START
from tests.e2e.support import RunningStack
from tools.simulator.system import SERVICES, System

pytestmark = pytest.mark.e2e
CHROMIUM = os.environ.get("ARREARS_CHROMIUM", "/usr/bin/chromium")
LIMIT = ServiceSettings.model_fields["max_body_bytes"].default
HUGE = 300 * 1024 * 1024  # 300 MB, about 75 times the limit


def test_every_services_api_docs_render_offline_in_chromium(
    system_under_test: RunningStack, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    assert shutil.which(CHROMIUM) or Path(CHROMIUM).exists(), "Chromium is needed (.ci/run)"
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            pages = {
                f"Arrears {name}": system_under_test.endpoints.services[name] for name in SERVICES
            }
            pages["Arrears partner stand-in"] = system_under_test.endpoints.partners
            for title, base in pages.items():
                page = browser.new_page()
                outside: list[str] = []

                def only_the_service(
                    route: Route, request: PwRequest, base: str = base, outside: list[str] = outside
                ) -> None:
                    if urlsplit(request.url).netloc == urlsplit(base).netloc:
                        route.continue_()
                    else:  # as on an offline bank network
                        outside.append(request.url)
                        route.abort()

                page.route("**/*", only_the_service)
                page.goto(f"{base}/docs")
                page.wait_for_selector(".swagger-ui .info .title", timeout=20_000)
                page.wait_for_selector(".opblock", timeout=20_000)
                assert title in page.inner_text(".swagger-ui .info .title")
                assert page.locator(".opblock").count() >= 3  # the operations are listed
                assert not outside, outside
                page.screenshot(path=str(tmp_path / f"{title}.png"), full_page=False)
                page.close()
        finally:
            browser.close()


def peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def service_pid(stack: RunningStack, name: str) -> int:
    return int((stack.state_dir / "run" / f"{name}.pid").read_text().strip())


async def send_huge(url: str, path: str, *, chunked: bool) -> tuple[int, str, str]:
    """POST ``HUGE`` bytes, declared up front or chunked, as a careful client does
    (``Expect: 100-continue``), and read the answer. A declared body is sent only if the
    service asks for it; a chunked one pauses a little past the limit for the answer and goes
    on to the end if none comes (as it would to a service that reads everything)."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    length = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {HUGE}"
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer dev.arrears-dev-key\r\nExpect: 100-continue\r\n"
        f"{length}\r\n\r\n".encode()
    )
    await writer.drain()

    async def response() -> bytes:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 100"):
                break
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        return head + await reader.readexactly(length)

    answer = asyncio.create_task(response())
    block = b"[" + b" " * (64 * 1024 - 1)
    sent = 0
    paused = False
    while sent < HUGE and not answer.done():
        if not chunked and sent == 0:
            await asyncio.wait({answer}, timeout=2)  # a refusal comes before any body
            if answer.done():
                break
        writer.write(b"%x\r\n%s\r\n" % (len(block), block) if chunked else block)
        await writer.drain()
        sent += len(block)
        block = b" " * len(block)
        if chunked and not paused and sent > LIMIT + 1024 * 1024:
            paused = True
            await asyncio.wait({answer}, timeout=5)
    whole = (await asyncio.wait_for(answer, 30)).decode(errors="replace")
    writer.close()
    status = int(whole.split(" ", 2)[1])
    head, _, body = whole.partition("\r\n\r\n")
    assert sent < HUGE, "the whole body was read before the answer"
    return status, head, body


@pytest.mark.parametrize("chunked", [False, True], ids=["declared", "chunked"])
async def test_a_body_far_over_the_limit_is_refused_before_it_is_read(
    system_under_test: RunningStack, chunked: bool
) -> None:
    routes = {  # every route that takes a body (the bureau's API takes none)
        "ledger": "/v1/events",
        "scheduler": "/v1/strategies",
        "notifier": "/v1/webhooks/standin/status",
    }
    async with System(system_under_test.endpoints) as system:
        if await system.latest_clock() is None:  # before the first clock.set, writes get 503
            await system.set_clock(START)
            await system.wait_quiet(START, limit=60)
    for name, path in routes.items():
        pid = service_pid(system_under_test, name)
        before = peak_rss_kb(pid)
        status, head, body = await send_huge(
            system_under_test.endpoints.services[name], path, chunked=chunked
        )
        assert status == 413, (name, body)
        assert "application/problem+json" in head, (name, head)
        assert re.search(r"request body over the limit of \d+ bytes", body), (name, body)
        grown = peak_rss_kb(pid) - before
        # a body read whole would have raised the peak by 300 MB
        assert grown < 32 * 1024, f"{name}: peak memory grew {grown} kB"
