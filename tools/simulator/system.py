"""The simulator's view of a running Arrears system, through its public contract only: the Kafka
topics, each service's HTTP API (``/v1/ops/progress`` to know when the system is quiet) and the
partner stand-in's control API."""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from shared import topics
from shared.auth import DEV_KEY
from shared.envelope import CloudEvent, decode, encode, new_event
from shared.events import ClockSet, Payload
from shared.history import TopicReader

SERVICES = ("ledger", "scheduler", "notifier", "bureau", "desk")
log = logging.getLogger("simulator")
SOURCE = "/simulator/core-banking"
FORM_TOKEN = re.compile(r'name="form" value="([^"]+)"')


class Unavailable(Exception):
    """A service answered that it cannot serve now (restarting): try again."""


@dataclass(frozen=True)
class Endpoints:
    bootstrap: str = "127.0.0.1:9092"
    services: dict[str, str] = field(
        default_factory=lambda: {
            name: f"http://127.0.0.1:{port}"
            for name, port in zip(SERVICES, (8001, 8002, 8003, 8004, 8005), strict=True)
        }
    )
    partners: str = "http://127.0.0.1:8090"
    api_key: str = DEV_KEY

    @classmethod
    def from_env(cls) -> Endpoints:
        """The stack's own environment variables (scripts/stack.py), so both agree."""
        ports = {
            name: os.environ.get(f"ARREARS_{name.upper()}_PORT", str(default))
            for name, default in zip(SERVICES, (8001, 8002, 8003, 8004, 8005), strict=True)
        }
        return cls(
            bootstrap=os.environ.get(
                "KAFKA_BOOTSTRAP_SERVERS",
                f"127.0.0.1:{os.environ.get('ARREARS_KAFKA_PORT', '9092')}",
            ),
            services={name: f"http://127.0.0.1:{port}" for name, port in ports.items()},
            partners=f"http://127.0.0.1:{os.environ.get('ARREARS_PARTNERS_PORT', '8090')}",
            api_key=os.environ.get("ARREARS_API_KEY", DEV_KEY),
        )


class NotQuiet(RuntimeError):
    pass


class System:
    """Connections to a running system; ``async with System(endpoints) as system``."""

    def __init__(self, endpoints: Endpoints) -> None:
        self.endpoints = endpoints
        self.http = httpx.AsyncClient(
            headers={"Authorization": f"Bearer {endpoints.api_key}"},
            timeout=30,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
        )
        self._producer = AIOKafkaProducer(
            bootstrap_servers=endpoints.bootstrap,
            acks="all",
            linger_ms=5,
            enable_idempotence=True,
            max_batch_size=1 << 20,
        )
        self._admin = AIOKafkaAdminClient(bootstrap_servers=endpoints.bootstrap)
        self._offsets = AIOKafkaConsumer(
            bootstrap_servers=endpoints.bootstrap, group_id=None, isolation_level="read_committed"
        )
        self._partitions: dict[str, list[TopicPartition]] = {}
        self.quiet_checks = 0
        self.patience = 180.0  # seconds a component may be away (restarting) before giving up
        self._groups: dict[str, Sequence[str]] | None = None

    async def __aenter__(self) -> System:
        await self._producer.start()
        await self._admin.start()
        await self._offsets.start()
        for topic in (*topics.DOMAIN_TOPICS, topics.CLOCK):
            parts = self._offsets.partitions_for_topic(topic)
            if not parts:
                await self._offsets._client.force_metadata_update()
                parts = self._offsets.partitions_for_topic(topic) or {0}
            self._partitions[topic] = [TopicPartition(topic, p) for p in sorted(parts)]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._producer.stop()
        await self._admin.close()
        await self._offsets.stop()
        await self.http.aclose()

    # --- writing -------------------------------------------------------------------------------

    async def publish(self, events: Iterable[CloudEvent]) -> int:
        futures = []
        for event in events:
            key, value, headers = encode(event)
            futures.append(
                await self._producer.send(event.topic, value=value, key=key, headers=headers)
            )
        await asyncio.gather(*futures)
        return len(futures)

    @staticmethod
    def event(data: Payload, key: str, at: datetime, subject: str | None = None) -> CloudEvent:
        return new_event(data, source=SOURCE, key=key, time=at, subject=subject)

    async def set_clock(self, now: datetime) -> None:
        await self.publish(
            [new_event(ClockSet(now=now), source="/simulator", key="clock", time=now)]
        )

    async def latest_clock(self) -> datetime | None:
        part = TopicPartition(topics.CLOCK, 0)
        consumer = AIOKafkaConsumer(bootstrap_servers=self.endpoints.bootstrap, group_id=None)
        await consumer.start()
        try:
            consumer.assign([part])
            end = (await consumer.end_offsets([part]))[part]
            if end == 0:
                return None
            consumer.seek(part, end - 1)
            batch = await consumer.getmany(part, timeout_ms=5000)
            for record in batch.get(part, []):
                event = decode(record.key, record.value, record.headers)
                if isinstance(event.data, ClockSet):
                    return event.data.now
            return None
        finally:
            await consumer.stop()

    # --- quiet ---------------------------------------------------------------------------------

    async def progress(
        self, wait: float = 0, clock: datetime | None = None
    ) -> list[dict[str, Any]]:
        """Each service's progress; with ``wait``, each answers once idle (at ``clock``)."""
        params: dict[str, Any] = {"wait": wait} if wait else {}
        if clock is not None and wait:
            params["clock"] = clock.isoformat()

        async def one(name: str) -> dict[str, Any]:
            response = await self.request(
                "GET", f"{self.endpoints.services[name]}/v1/ops/progress", params=params
            )
            response.raise_for_status()
            return dict(response.json())

        return list(await asyncio.gather(*(one(n) for n in SERVICES)))

    async def end_offsets(self) -> dict[TopicPartition, int]:
        parts = [tp for t in topics.DOMAIN_TOPICS for tp in self._partitions[t]]
        return dict(await self._offsets.end_offsets(parts))

    async def lag(self, groups: dict[str, Sequence[str]], ends: dict[TopicPartition, int]) -> int:
        async def one(group: str, wanted: Sequence[str]) -> int:
            committed = await self._admin.list_consumer_group_offsets(group)
            behind = 0
            for topic in wanted:
                for tp in self._partitions.get(topic, []):
                    meta = committed.get(tp)
                    done = meta.offset if meta is not None and meta.offset >= 0 else 0
                    behind += max(0, ends.get(tp, 0) - done)
            return behind

        return sum(await asyncio.gather(*(one(g, t) for g, t in groups.items())))

    async def wait_quiet(self, clock: datetime | None, limit: float = 300.0) -> None:
        """Until every service has applied ``clock`` (if given), read everything published,
        emptied its outbox and finished its work.

        One check reads, in this order: the topics' end offsets; every consumer group's lag
        against them (a group commits its offsets only after its database transaction, so zero
        lag means those records' effects, outbox rows included, are committed); each service's
        progress (outbox, unfinished work, clock); the end offsets again. If nothing was
        published between the first and the last read, nothing is in flight.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        if self._groups is None:
            self._groups = {
                g: t for s in await self.progress() for g, t in s["consumer_groups"].items()
            }
        pause = 0.005
        states: list[dict[str, Any]] = []
        while True:
            self.quiet_checks += 1
            try:
                # The services' own word first (each answers once it is idle); the Kafka
                # offsets only once all say so.
                states = await self.progress(wait=5, clock=clock)
                if self._settled(states, clock):
                    before = await self.end_offsets()
                    if (
                        await self.lag(self._groups, before) == 0
                        and self._settled(await self.progress(), clock)
                        and await self.end_offsets() == before
                    ):
                        return
            except (KafkaError, httpx.HTTPError) as exc:
                # a broker or a service restarting: look again once it is back
                log.info("not quiet yet: %s", type(exc).__name__)
                await asyncio.sleep(0.5)
            if loop.time() > deadline:
                raise NotQuiet(f"the system did not settle in {limit:.0f}s: {states}")
            # Polling costs the machine the system runs on: back off while it works.
            await asyncio.sleep(pause)
            pause = min(0.02, pause * 1.5)

    @staticmethod
    def _settled(states: Sequence[Mapping[str, Any]], clock: datetime | None) -> bool:
        return all(
            not s["clock_busy"]
            and s["outbox_pending"] == 0
            and s["work_pending"] == 0
            and s.get("replicas_behind", 0) == 0
            and (clock is None or datetime.fromisoformat(s["clock"]) == clock)
            for s in states
        )

    async def dead_letters(self) -> dict[str, int]:
        """Records in each dead-letter topic (a healthy campaign has none)."""
        out = {}
        await self._offsets.topics()  # refreshes the metadata of every topic
        for topic in topics.ALL_TOPICS:
            parts = self._offsets.partitions_for_topic(topics.dlq(topic)) or set()
            tps = [TopicPartition(topics.dlq(topic), p) for p in parts]
            ends = await self._offsets.end_offsets(tps) if tps else {}
            out[topics.dlq(topic)] = sum(ends.values())
        return out

    async def dead_letter_reasons(self) -> list[str]:
        """Each dead letter as its topic, consumer, event type, kind and reason: the headers
        the runner wrote (never the payload, which may name a customer)."""
        names = [t for t, n in (await self.dead_letters()).items() if n]
        parts = [
            TopicPartition(t, p) for t in names for p in self._offsets.partitions_for_topic(t) or ()
        ]
        if not parts:
            return []
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.endpoints.bootstrap,
            group_id=None,
            enable_auto_commit=False,
        )
        await consumer.start()
        out = []
        try:
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            ends = await consumer.end_offsets(parts)
            while [tp for tp in parts if await consumer.position(tp) < ends[tp]]:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    for r in records:
                        h = {k: v.decode(errors="replace") for k, v in r.headers or ()}
                        out.append(
                            f"{r.topic} {h.get('dlq_consumer')} {h.get('ce_type')} "
                            f"{h.get('dlq_kind')}: {h.get('dlq_reason')}"
                        )
        finally:
            await consumer.stop()
        return out

    # --- reading topics ------------------------------------------------------------------------

    def reader(self, *names: str) -> TopicReader:
        return TopicReader(
            self.endpoints.bootstrap, [tp for n in names for tp in self._partitions[n]]
        )

    # --- partner stand-in ----------------------------------------------------------------------

    async def self_service_plan(self, link: str, birth_date: str, kind: str, term: str) -> bool:
        """Agree a plan on the self-service page as a browser without JavaScript would: open
        the link, answer the identity check with the birth date, post the plan form. True when
        the page says it is agreed."""
        fields = {"installments": "installments", "extension": "extension_days"}
        fields["settlement"] = "settlement_percent"
        # Each step may be sent again (the page does a plan once per link): a notifier
        # restarting is waited for, as for any request.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.patience
        while True:
            try:
                return await self._self_service_plan(link, birth_date, kind, term, fields)
            except (httpx.TransportError, Unavailable):
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.5)

    async def _self_service_plan(
        self, link: str, birth_date: str, kind: str, term: str, fields: dict[str, str]
    ) -> bool:
        async with httpx.AsyncClient(follow_redirects=True, timeout=30) as browser:

            async def sent(response: httpx.Response) -> httpx.Response:
                if response.status_code in (502, 503, 504):
                    raise Unavailable(response.status_code)
                return response

            page = await sent(await browser.get(link))
            token = FORM_TOKEN.search(page.text)
            if page.status_code != 200 or token is None:
                return False
            checked = await sent(
                await browser.post(
                    f"{link}/check",
                    data={"form": token.group(1), "method": "birth_date", "answer": birth_date},
                )
            )
            token = FORM_TOKEN.search(checked.text)
            if checked.status_code != 200 or token is None:
                return False
            agreed = await sent(
                await browser.post(
                    f"{link}/plan", data={"form": token.group(1), "kind": kind, fields[kind]: term}
                )
            )
            return agreed.status_code == 200 and 'class="done"' in agreed.text

    async def partner(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self.request(method, f"{self.endpoints.partners}{path}", **kwargs)
        response.raise_for_status()
        return response.json()

    async def request(
        self, method: str, url: str, *, client: httpx.AsyncClient | None = None, **kwargs: Any
    ) -> httpx.Response:
        """One request (on ``client``, else the system's), tried again while the connection
        drops or the server answers 502-504 (a server closing idle keep-alive connections; a
        service restarting, for up to ``patience`` seconds). Every request the simulator repeats
        is idempotent: webhooks carry the simulator's own event ids, which the notifier
        deduplicates; the desk answers a repeated outcome 409 and a repeated take with the item
        already held."""
        http = client or self.http
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.patience
        pause = 0.1
        while True:
            try:
                response = await http.request(method, url, **kwargs)
                if response.status_code not in (502, 503, 504) or loop.time() > deadline:
                    return response
            except httpx.TransportError:
                if loop.time() > deadline:
                    raise
            await asyncio.sleep(pause)
            pause = min(1.0, pause * 2)


class DeskSession:
    """One person signed in at the desk (a simulated collector, a team lead): their own cookie
    jar and CSRF token, requests retried like any other while the desk restarts."""

    def __init__(self, system: System, username: str, password: str) -> None:
        self._system = system
        self.username = username
        self._password = password
        self._http = httpx.AsyncClient(timeout=30)  # a cookie jar of its own
        self._csrf = ""

    async def __aenter__(self) -> DeskSession:
        await self.sign_in()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._http.aclose()

    async def sign_in(self) -> None:
        response = await self._retry(
            "POST",
            "/v1/session",
            json={"username": self.username, "password": self._password},
            signing_in=True,
        )
        response.raise_for_status()
        self._csrf = response.json()["csrf"]

    async def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = await self._retry(method, path, **kwargs)
        if response.status_code == 401:  # the session lapsed: sign in again, once
            await self.sign_in()
            response = await self._retry(method, path, **kwargs)
        return response

    async def _retry(
        self, method: str, path: str, *, signing_in: bool = False, **kwargs: Any
    ) -> httpx.Response:
        headers = {} if signing_in else {"X-CSRF-Token": self._csrf}
        url = f"{self._system.endpoints.services['desk']}{path}"
        return await self._system.request(method, url, client=self._http, headers=headers, **kwargs)
