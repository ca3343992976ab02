"""A stand-in for the partner gateways (SMS, email, dialer, print-and-mail house, field agency),
for tests and the demo. It accepts sends for every channel, records them by idempotency key
(a repeated key is answered with the first message id and sends nothing), and calls the
notifier's webhooks back with signed, configurable outcomes. Faults on demand: fail with a
status for a while, or stall.

    python -m tools.partners --port 8090 --notifier http://127.0.0.1:8003

Control API (no auth; loopback only): ``GET /control/sends``, ``POST /control`` (behaviour),
``POST /control/reply`` (a customer's reply, relayed to the notifier as a signed webhook).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
from fastapi import FastAPI, Header, Request
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline

from shared.signing import HEADER, header_value

DEFAULT_OUTCOME = {
    "sms": "delivered",
    "email": "delivered",
    "letter": "delivered",
    "voice": "no_answer",
    "field_visit": "right_party",
}


@dataclass
class Behaviour:
    fail_status: int = 503
    fail_until: float = 0.0  # monotonic time until which every send fails
    stall_until: float = 0.0  # monotonic time until which every send hangs, then fails
    # until then, a send is recorded but its answer comes too late (the caller times out)
    slow_answer_until: float = 0.0
    slow_answer_seconds: float = 3.0
    callback_delay: float = 0.05
    callbacks: bool = True
    outcomes: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_OUTCOME))
    # per contact: {"status": ..., "promise_amount": ..., "promise_date": ...}
    contact_outcomes: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class Send:
    message_id: str
    channel: str
    contact_id: str
    received_at: str
    requests: int = 1


@dataclass
class Standin:
    partner: str
    notifier_url: str
    secret: str
    api_key: str
    behaviour: Behaviour = field(default_factory=Behaviour)
    sends: dict[str, Send] = field(default_factory=dict)  # idempotency key -> send
    # every first send with what the partner was asked to deliver, in arrival order, for a
    # driver that plays the customers (the simulator) to read back
    messages: list[dict[str, Any]] = field(default_factory=list)
    requests: int = 0
    refused: int = 0
    callbacks_sent: int = 0
    callbacks_failed: int = 0
    _ids: itertools.count[int] = field(default_factory=itertools.count)
    # aiohttp for the callbacks: several times less CPU per request than httpx, and the
    # stand-in shares its machine with the system it plays against
    _http: aiohttp.ClientSession | None = None

    async def callback(self, path: str, body: dict[str, Any]) -> bool:
        raw = json.dumps(body).encode()
        url = f"{self.notifier_url.rstrip('/')}/v1/webhooks/{self.partner}/{path}"
        # A notifier restarting is back within seconds: keep trying for a minute and a half.
        deadline = time.monotonic() + 90
        for attempt in itertools.count():
            headers = {
                HEADER: header_value(self.secret, int(time.time()), raw),
                "content-type": "application/json",
            }
            if self._http is None:
                self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
            try:
                async with self._http.post(url, data=raw, headers=headers) as response:
                    await response.read()
                    if response.status < 500:
                        self.callbacks_sent += 1
                        return response.status < 400
            except (aiohttp.ClientError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(min(2.0, 0.2 * 2**attempt))
        self.callbacks_failed += 1
        return False


def create_app(standin: Standin) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if standin._http is not None:
            await standin._http.close()
            standin._http = None

    # its /docs page works offline too (make up prints it beside the services')
    app = FastAPIOffline(title="Arrears partner stand-in", lifespan=lifespan, redoc_url=None)
    app.state.standin = standin
    tasks: set[asyncio.Task[None]] = set()

    def later(coro: Any) -> None:
        task = asyncio.create_task(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    @app.post("/v1/messages/{channel}")
    async def send(
        channel: str,
        request: Request,
        idempotency_key: str | None = Header(None),
        authorization: str | None = Header(None),
    ) -> JSONResponse:
        standin.requests += 1
        if authorization != f"Bearer {standin.api_key}":
            standin.refused += 1
            return JSONResponse({"error": "unauthorised"}, status_code=401)
        if not idempotency_key:
            return JSONResponse({"error": "Idempotency-Key required"}, status_code=400)
        now, b = time.monotonic(), standin.behaviour
        if now < b.stall_until:
            await asyncio.sleep(b.stall_until - now)
            return JSONResponse({"error": "stalled"}, status_code=504)
        if now < b.fail_until:
            return JSONResponse({"error": "unavailable"}, status_code=b.fail_status)
        body = await request.json()
        seen = standin.sends.get(idempotency_key)
        if seen is not None:
            seen.requests += 1
            return JSONResponse({"message_id": seen.message_id, "duplicate": True})
        message_id = f"m-{next(standin._ids)}"
        contact_id = str(body.get("contact_id") or idempotency_key)
        standin.sends[idempotency_key] = Send(
            message_id, channel, contact_id, datetime.now(UTC).isoformat()
        )
        standin.messages.append(
            {"message_id": message_id, "channel": channel, "contact_id": contact_id}
            | {k: body[k] for k in ("to", "postal_address", "locale", "body") if k in body}
        )
        if b.callbacks:
            outcome = dict(b.contact_outcomes.get(contact_id) or {})
            status = outcome.pop("status", None) or b.outcomes.get(channel, "delivered")
            report = {
                "event_id": str(uuid.uuid4()),
                "contact_id": contact_id,
                "message_id": message_id,
                "status": status,
                **outcome,
            }

            async def report_back() -> None:
                await asyncio.sleep(b.callback_delay)
                await standin.callback("status", report)

            later(report_back())
        if now < b.slow_answer_until:
            await asyncio.sleep(b.slow_answer_seconds)
        return JSONResponse({"message_id": message_id}, status_code=202)

    @app.get("/control/count")
    async def count() -> dict[str, int]:
        return {"sends": len(standin.sends), "requests": standin.requests}

    @app.get("/control/sends")
    async def sends() -> dict[str, Any]:
        return {
            "requests": standin.requests,
            "refused": standin.refused,
            "sends": {
                key: {"channel": s.channel, "requests": s.requests, "message_id": s.message_id}
                for key, s in standin.sends.items()
            },
            "callbacks_sent": standin.callbacks_sent,
            "callbacks_failed": standin.callbacks_failed,
        }

    @app.get("/control/messages")
    async def messages(since: int = 0) -> dict[str, Any]:
        """Messages from position ``since`` on; ``next`` is where to read from next time."""
        return {"messages": standin.messages[since:], "next": len(standin.messages)}

    @app.post("/control/status")
    async def status_report(request: Request) -> dict[str, Any]:
        """Report a status for a message now (signed, as the partner's webhook), and wait for
        the notifier's answer; for a driver that decides outcomes itself."""
        body = await request.json()
        report = {"event_id": body.get("event_id") or str(uuid.uuid4())} | body
        delivered = await standin.callback("status", report)
        return {"ok": delivered, "event_id": report["event_id"]}

    @app.post("/control/relay")
    async def relay(request: Request) -> dict[str, Any]:
        """Many webhooks at once: ``sequences`` is a list of lists of ``{"kind": "status" |
        "inbound", "body": {...}}``; each list goes in its order (one customer's answers), the
        lists side by side. For a driver that plays many customers per step."""
        body = await request.json()
        gate = asyncio.Semaphore(int(body.get("concurrency", 16)))
        failed = 0

        async def run(sequence: list[dict[str, Any]]) -> None:
            nonlocal failed
            async with gate:
                for item in sequence:
                    webhook = {"event_id": str(uuid.uuid4())} | item["body"]
                    if not await standin.callback(item["kind"], webhook):
                        failed += 1

        sequences = body.get("sequences", [])
        await asyncio.gather(*(run(s) for s in sequences))
        return {"sent": sum(len(s) for s in sequences) - failed, "failed": failed}

    @app.post("/control")
    async def control(request: Request) -> dict[str, Any]:
        changes = await request.json()
        b, now = standin.behaviour, time.monotonic()
        if "fail_for_seconds" in changes:
            b.fail_until = now + float(changes["fail_for_seconds"])
        if "fail_status" in changes:
            b.fail_status = int(changes["fail_status"])
        if "slow_answer_for_seconds" in changes:
            b.slow_answer_until = now + float(changes["slow_answer_for_seconds"])
        if "stall_for_seconds" in changes:
            b.stall_until = now + float(changes["stall_for_seconds"])
        for name in ("callback_delay", "callbacks"):
            if name in changes:
                setattr(b, name, changes[name])
        b.outcomes.update(changes.get("outcomes", {}))
        b.contact_outcomes.update(changes.get("contact_outcomes", {}))
        return {"ok": True}

    @app.post("/control/reply")
    async def reply(request: Request) -> dict[str, Any]:
        body = await request.json()
        event = {
            "event_id": body.get("event_id") or str(uuid.uuid4()),
            "channel": body["channel"],
            "from": body["from"],
            "text": body["text"],
        }
        delivered = await standin.callback("inbound", event)
        return {"ok": delivered, "event_id": event["event_id"]}

    return app
