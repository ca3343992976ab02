"""Security of the running system: every route but health needs a key with its scope, and each
service's database role reaches its own database only."""

from __future__ import annotations

import re

import asyncpg
import httpx
import pytest

from scripts.stack import DEV_DB_PASSWORD, SERVICES
from shared.auth import DEV_KEY
from tests.e2e.conftest import NARROW_KEY
from tests.e2e.support import RunningStack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
OPEN = {"/healthz", "/readyz"}
# signing in to the desk is how a session begins: it needs none (it is rate-limited instead)
SIGN_IN = ("desk", "/v1/session", "post")
# Partners authenticate their webhooks with a signature instead of an API key; the desk's people
# with a session (a key is no session), and the notifier with the desk's partner key.
SIGNED = re.compile(r"^/v1/webhooks/")
SESSION = re.compile(r"^/v1/(session|work|approvals|figures|training|messages)\b")


async def test_every_route_but_health_needs_a_key_holding_its_scope(
    system_under_test: RunningStack,
) -> None:
    checked = 0
    async with httpx.AsyncClient(timeout=30) as http:
        for service, base in system_under_test.endpoints.services.items():
            document = (await http.get(f"{base}/openapi.json")).json()
            for path, operations in document["paths"].items():
                if path in OPEN:
                    continue
                # the dev partner's name, so a webhook is judged by its (missing) signature
                url = base + re.sub(r"\{[^}]+\}", "x", path.replace("{partner}", "standin"))
                for method in operations:
                    if (service, path, method) == SIGN_IN:
                        continue
                    anonymous = await http.request(method, url, json={})
                    narrow = await http.request(
                        method, url, json={}, headers={"Authorization": f"Bearer {NARROW_KEY}"}
                    )
                    where = f"{service} {method.upper()} {path}"
                    assert anonymous.status_code == 401, where
                    assert anonymous.headers["content-type"] == "application/problem+json", where
                    keyless = SIGNED.match(path) or (service == "desk" and SESSION.match(path))
                    assert narrow.status_code == (401 if keyless else 403), where
                    checked += 1
            health = await http.get(f"{base}/healthz")
            assert health.status_code == 200
    assert checked >= 30  # every service's API, not an empty document


async def test_each_service_role_reaches_its_own_database_only(
    system_under_test: RunningStack,
) -> None:
    port = int(system_under_test.env["ARREARS_PG_PORT"])
    for role in SERVICES:
        for database in SERVICES:
            dsn = (
                f"postgresql://arrears_{role}:{DEV_DB_PASSWORD}@127.0.0.1:{port}/arrears_{database}"
            )
            if role == database:
                conn = await asyncpg.connect(dsn)
                try:
                    assert await conn.fetchval("SELECT count(*) FROM outbox") >= 0
                finally:
                    await conn.close()
            else:
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await asyncpg.connect(dsn)


async def test_the_development_key_reads_what_it_is_given(
    system_under_test: RunningStack,
) -> None:
    base = system_under_test.endpoints.services["scheduler"]
    async with httpx.AsyncClient(timeout=30) as http:
        ok = await http.get(f"{base}/v1/packs", headers={"Authorization": f"Bearer {DEV_KEY}"})
    assert ok.status_code == 200
