"""One running system shared by the scenario and security modules (the campaign tests start
their own, fresh, to compare two runs)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta

import pytest
import pytest_asyncio
from playwright.async_api import Browser, async_playwright

from shared.auth import DEV_KEY, ApiKeySpec, digest
from tests.e2e.driver import START, Driver
from tests.e2e.support import RunningStack, running_stack
from tools.simulator.system import System

# a key that passes authentication but holds no scope the services use: every guarded route
# must answer it 403
NARROW_KEY = "narrow.e2e-narrow-secret"


@pytest.fixture(scope="session")
def system_under_test(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    keys = [
        ApiKeySpec(id=k.split(".")[0], sha256=digest(k.split(".", 1)[1]), scopes=scopes)
        for k, scopes in ((DEV_KEY, ["*"]), (NARROW_KEY, ["nothing:read"]))
    ]
    extra = {
        "BUREAU_CYCLE": "daily",
        # every call and visit to the partner stand-in, which the scenarios answer for; the
        # desk has a stack of its own (test_desk.py)
        "ARREARS_DESK_COUNTRIES": "",
        "ARREARS_API_KEYS": json.dumps([k.model_dump() for k in keys]),
    }
    with running_stack(tmp_path_factory.mktemp("scenarios") / "stack", 27000, extra) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def drive(system_under_test: RunningStack) -> AsyncIterator[Driver]:
    async with System(system_under_test.endpoints) as system:
        latest = await system.latest_clock()
        if latest is not None:
            # the last clock.set may be earlier than the services' time (a module replayed a
            # fixed record; time never goes back): go on from where the services are
            latest = max(
                [latest, *(datetime.fromisoformat(s["clock"]) for s in await system.progress())]
            )
        driver = Driver(system, latest or START - timedelta(days=1))
        await driver.start()
        if latest is None:
            await driver.to(START)
        yield driver
        await driver.stop()


CHROMIUM = os.environ.get("ARREARS_CHROMIUM", "/usr/bin/chromium")


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def browser() -> AsyncIterator[Browser]:
    """Debian's Chromium, headless, driven by Playwright (which never downloads its own)."""
    assert shutil.which(CHROMIUM), "Chromium is needed (.ci/run installs it)"
    async with async_playwright() as p:
        launched = await p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield launched
        await launched.close()
