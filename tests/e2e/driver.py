"""What a scenario does to a running system, through its public contract only: upstream events
on Kafka, the controlled clock, the partner stand-in (its record of sends; customers' replies and
call outcomes as signed webhooks) and the services' HTTP APIs."""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import holidays
import yaml

from services.scheduler.domain.strategy import Strategy, assign_variant
from services.scheduler.strategies import FILES
from shared import topics
from shared.envelope import CloudEvent
from shared.events import (
    CustomerUpserted,
    LoanOpened,
    PaymentPosted,
    ScheduledInstallment,
)
from tools.simulator.system import System

_ids = itertools.count(1)
# Where the scenarios' clock starts on a fresh system; each module goes on from where the clock
# is, bringing its own customers.
START = datetime(2027, 3, 1, tzinfo=UTC)
SHIPPED = Strategy.model_validate(yaml.safe_load((FILES / "early-and-late.yaml").read_text()))


@dataclass
class Person:
    customer_id: str
    account_id: str
    country: str
    timezone: str
    phone: str | None
    email: str | None
    postal_address: str | None
    currency: str

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def at(self, day: date, hour: int, minute: int = 0) -> datetime:
        """A local wall time of this customer, as an instant."""
        return datetime.combine(day, time(hour, minute), self.zone).astimezone(UTC)


@dataclass
class Driver:
    system: System
    now: datetime
    seen: list[CloudEvent] = field(default_factory=list)
    _reader: Any = None
    # the shipped strategy as published now: assignment hashes the version, and a module may
    # have published the same content again under a later one
    strategy: Strategy = SHIPPED

    async def start(self) -> None:
        self._reader = self.system.reader(
            topics.LEDGER, topics.SCHEDULER, topics.NOTIFIER, topics.BUREAU
        )
        await self._reader.__aenter__()
        await self.follow_strategy()

    async def follow_strategy(self) -> None:
        """Assign scenario customers to variants by the version published now."""
        versions = await self.api("scheduler", "/v1/strategies")
        published = [
            v["version"]
            for v in versions
            if v["strategy_id"] == SHIPPED.id and v["status"] == "published"
        ]
        self.strategy = SHIPPED.model_copy(
            update={"version": max(published, default=SHIPPED.version)}
        )

    async def stop(self) -> None:
        await self._reader.__aexit__(None, None, None)

    # --- time ----------------------------------------------------------------------------------

    async def to(self, instant: datetime) -> None:
        """Move the clock (never back) and wait until the system has done what it brings."""
        assert instant > self.now, f"{instant} is not after {self.now}"
        await self.system.set_clock(instant)
        self.now = instant
        await self.settle()

    async def settle(self) -> None:
        await self.system.wait_quiet(self.now, limit=120)
        self.seen += await self._reader.drain()

    def working_day(self, country: str, after: date) -> date:
        """The first day after ``after`` that is no public holiday (nor a weekend) there."""
        calendar = holidays.country_holidays(country, years=range(after.year, after.year + 2))
        day = after + timedelta(days=1)
        while day in calendar or day.weekday() >= 5:
            day += timedelta(days=1)
        return day

    # --- upstream ------------------------------------------------------------------------------

    def person(
        self,
        country: str = "CN",
        *,
        phone: bool = True,
        email: bool = True,
        postal: bool = True,
        variant: str | None = None,
    ) -> Person:
        """A new customer; ``variant`` picks an account id the shipped strategy assigns to that
        variant (assignment is a published hash of the id), so a scenario knows its steps."""
        n = next(_ids)
        tag = uuid.uuid4().hex[:6]
        while variant is not None and assign_variant(self.strategy, f"E2E-{tag}-A").name != variant:
            tag = uuid.uuid4().hex[:6]
        zone = "Asia/Shanghai" if country == "CN" else "America/New_York"
        number = (
            f"+86139{n:04d}{int(tag, 16) % 10000:04d}"
            if country == "CN"
            else (f"+1212{int(tag, 16) % 10_000_000:07d}")
        )
        return Person(
            customer_id=f"E2E-{tag}-C",
            account_id=f"E2E-{tag}-A",
            country=country,
            timezone=zone,
            phone=number if phone else None,
            email=f"e2e-{tag}@example.com" if email else None,
            postal_address=f"{n} Scenario Street, Springfield, IL 62701" if postal else None,
            currency="CNY" if country == "CN" else "USD",
        )

    async def onboard(
        self,
        person: Person,
        dues: list[date],
        amount: Decimal = Decimal("800.00"),
        credit_score: int = 650,
    ) -> None:
        """The customer and one loan with an instalment of ``amount`` on each date in ``dues``."""
        events = [
            self.system.event(
                CustomerUpserted(
                    customer_id=person.customer_id,
                    full_name="Scenario Person",
                    national_id="110101199001011234" if person.country == "CN" else "123456789",
                    birth_date=date(1990, 1, 1),
                    phone=person.phone,
                    email=person.email,
                    postal_address=person.postal_address,
                    timezone=person.timezone,
                    locale="zh-CN" if person.country == "CN" else "en-US",
                    country=person.country,
                    credit_score=credit_score,
                ),
                person.customer_id,
                self.now,
                person.customer_id,
            ),
            self.system.event(
                LoanOpened(
                    account_id=person.account_id,
                    customer_id=person.customer_id,
                    product="personal-loan",
                    principal=amount * len(dues),
                    currency=person.currency,
                    opened_on=dues[0] - timedelta(days=30),
                    schedule=[
                        ScheduledInstallment(installment_no=i, due_date=d, amount=amount)
                        for i, d in enumerate(dues, 1)
                    ],
                ),
                person.customer_id,
                self.now,
                person.account_id,
            ),
        ]
        await self.system.publish(events)
        await self.settle()

    async def pay(self, person: Person, amount: Decimal) -> None:
        await self.system.publish(
            [
                self.system.event(
                    PaymentPosted(
                        account_id=person.account_id,
                        payment_id=f"{person.account_id}-{uuid.uuid4().hex[:8]}",
                        amount=amount,
                        currency=person.currency,
                        posted_at=self.now,
                    ),
                    person.customer_id,
                    self.now,
                    person.account_id,
                )
            ]
        )
        await self.settle()

    # --- what came out -------------------------------------------------------------------------

    def events(self, kind: str, account_id: str) -> list[Any]:
        """Payloads of one type about one account (or customer), oldest first."""
        return [
            e.data
            for e in self.seen
            if e.type == kind
            and account_id
            in (getattr(e.data, "account_id", None), getattr(e.data, "customer_id", None))
        ]

    async def messages(self, person: Person, channel: str | None = None) -> list[dict[str, Any]]:
        """What the partner was asked to deliver to this customer."""
        page = await self.system.partner("GET", "/control/messages")
        addresses = {person.phone, person.email, person.postal_address} - {None}
        return [
            m
            for m in page["messages"]
            if (m.get("to") in addresses or m.get("postal_address") in addresses)
            and (channel is None or m["channel"] == channel)
        ]

    async def reply(self, person: Person, channel: str, text: str) -> None:
        sender = person.phone if channel == "sms" else person.email
        body = {"event_id": str(uuid.uuid4()), "channel": channel, "from": sender, "text": text}
        assert (await self.system.partner("POST", "/control/reply", json=body))["ok"]
        await self.settle()

    async def report_status(self, contact_id: str, status: str, **extra: Any) -> None:
        body = {"contact_id": contact_id, "status": status, **extra}
        assert (await self.system.partner("POST", "/control/status", json=body))["ok"]
        await self.settle()

    async def api(self, service: str, path: str, **kwargs: Any) -> Any:
        method = "POST" if "json" in kwargs else "GET"
        response = await self.system.request(
            method, f"{self.system.endpoints.services[service]}{path}", **kwargs
        )
        assert response.status_code < 300, response.text
        return response.json()
