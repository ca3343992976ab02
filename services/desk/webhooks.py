"""The loop that reports the desk's outcomes to the notifier: signed webhooks, exactly as any
partner sends them, retried with back-off until the notifier accepts them. A row is claimed
with SKIP LOCKED, so two desk processes never send one twice at once; the notifier's event id
deduplication makes a resend after a crash harmless. One customer's webhooks go one at a time,
in the order they were logged (the notifier and the ledger see a promise, then a plan, as the
collector logged them); different customers' go at once."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta

import httpx

from services.desk.repository import work
from shared import signing
from shared.clock import wall_now
from shared.db import UnitOfWorkFactory

log = logging.getLogger(__name__)


def sender(
    url: str, partner: str, secret: str, concurrency: int, wake: asyncio.Event
) -> Callable[[UnitOfWorkFactory, asyncio.Event], Awaitable[None]]:
    endpoint = f"{url.rstrip('/')}/v1/webhooks/{partner}/status"

    async def post(http: httpx.AsyncClient, body: dict[str, object]) -> tuple[str, str]:
        raw = json.dumps(body, separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            # wall time: the signature guards the transport, not business time
            signing.HEADER: signing.header_value(secret, int(time.time()), raw),
        }
        try:
            response = await http.post(endpoint, content=raw, headers=headers, timeout=10)
        except httpx.HTTPError as exc:
            return "retry", f"notifier unreachable ({type(exc).__name__})"
        if response.status_code < 300:
            return "sent", ""
        if response.status_code >= 500 or response.status_code in (401, 404, 429):
            # 401/404: a secret or partner being rotated in; worth another try
            return "retry", f"notifier answered {response.status_code}"
        return "refused", f"notifier refused ({response.status_code})"

    async def run(units: UnitOfWorkFactory, stop: asyncio.Event) -> None:
        async with httpx.AsyncClient() as http:
            while not stop.is_set():
                wake.clear()
                busy = 0
                try:
                    async with units() as uow:
                        due = await work.due_webhooks(uow.session, wall_now(), concurrency)
                        results = await asyncio.gather(*(post(http, w.body) for w in due))
                        for hook, (verdict, error) in zip(due, results, strict=True):
                            if verdict == "sent":
                                await work.webhook_sent(uow.session, hook.event_id, wall_now())
                            elif verdict == "refused":
                                # not retried: a refusal does not heal; kept for the ops view
                                log.warning("webhook %s refused: %s", hook.event_id, error)
                                await work.webhook_sent(uow.session, hook.event_id, wall_now())
                                await work.webhook_failed(
                                    uow.session, hook.event_id, error, wall_now()
                                )
                            else:
                                back_off = min(60.0, 0.5 * 2 ** min(hook.attempts, 8))
                                at = wall_now() + timedelta(
                                    seconds=back_off * (0.5 + random.random())
                                )
                                await work.webhook_failed(uow.session, hook.event_id, error, at)
                        await uow.commit()
                        busy = len(due)
                except Exception:
                    log.exception("webhook round failed; retrying")
                if not busy:
                    waiters = [
                        asyncio.ensure_future(wake.wait()),
                        asyncio.ensure_future(stop.wait()),
                    ]
                    await asyncio.wait(waiters, timeout=0.2, return_when="FIRST_COMPLETED")
                    for waiter in waiters:
                        waiter.cancel()

    return run
