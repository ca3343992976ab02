"""The campaign: publish the book, then walk the controlled clock step by step, playing the
customers between steps.

Each step: (1) what customers do by then (payments, answers to last step's contacts) is sent and
the system settles; (2) the clock moves and the system settles again; (3) what was sent to
customers at the partner is read back and each customer's reaction drawn. Because the system is
quiet at every clock move and every draw is keyed by what it decides, the same seed gives the
same campaign.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import logging
import re
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from decimal import Decimal
from pathlib import Path
from typing import Any

from shared import topics
from shared.envelope import CloudEvent
from shared.events import (
    AccountCured,
    ContactRequested,
    CustomerUpserted,
    DelinquencyChanged,
    LoanOpened,
    PaymentMissed,
    PaymentPosted,
    PaymentReceived,
    PlanAgreed,
    ReportBlocked,
    ReportCorrected,
    ReportSubmitted,
    ScheduledInstallment,
)
from tools.simulator import models
from tools.simulator.model import (
    Customer,
    Params,
    Reaction,
    accepts_hardship_offer,
    answers_callback,
    book,
    callback_request,
    hardship_text,
    keeps_plan_installment,
    midnight_moves,
    misses_again,
    on_time_payment_at,
    react,
    rescued_by_reminder,
    unpaid_at_start,
    uses_the_page,
)
from tools.simulator.system import DeskSession, System

log = logging.getLogger("simulator")
EVENTS = uuid.UUID("3d0c2b9e-7a51-4f0e-8a7c-5e2f1b9d4c61")  # the simulator's webhook event ids
BOOK_BATCH = 5000
NOTICES = {"bureau_pre_notice", "validation_notice"}
LINK = re.compile(r"https?://\S+/s/[A-Za-z0-9_\-.]+")


@dataclass(order=True)
class Action:
    at: datetime
    seq: int
    customer_id: str = field(compare=False)
    kind: str = field(compare=False)  # pay | status | reply
    body: dict[str, Any] = field(compare=False, default_factory=dict)


@dataclass
class AccountView:
    """What the customer knows of their account: the bank's last statement of what is overdue
    (from the ledger's events), and their plan."""

    overdue: Decimal = Decimal(0)
    delinquent: bool = False
    plan_broken: bool = False


@dataclass
class Stats:
    steps: int = 0
    clock_moves: int = 0
    payments: int = 0
    webhooks: int = 0
    replies: int = 0
    pages: int = 0
    sends_seen: int = 0
    desk_items: int = 0
    started: float = field(default_factory=time.monotonic)
    # wall seconds spent by phase
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def timed(self, phase: str, since: float) -> float:
        now = time.monotonic()
        self.seconds[phase] += now - since
        return now


class Campaign:
    def __init__(
        self,
        system: System,
        params: Params,
        *,
        seed: int,
        customers: int,
        days: int | None = None,
        out: Path,
    ) -> None:
        self.system = system
        self.params = params.model_copy(update={"days": days}) if days else params
        self.seed = seed
        self.out = out
        # which send the simulator saw at which step: to compare two runs of one seed
        self._sends_log: list[dict[str, str]] = []
        self.book = book(self.params, seed, customers)
        self.by_customer = {c.customer_id: c for c in self.book}
        self.by_account = {c.account_id: c for c in self.book}
        self.views = {c.account_id: AccountView() for c in self.book}
        self.requests: dict[str, ContactRequested] = {}
        self.actions: list[Action] = []
        self._seq = itertools.count()
        self._payments = itertools.count(1)
        self.stats = Stats()
        self.cycle_snapshots: dict[str, str] = {}
        self._messages_next = 0
        self._reader: Any = None
        self.clock: datetime | None = None  # the last clock.set; none until the first move
        self._cycles_seen: set[str] = set()
        self._in_bureau_scope: set[str] = set()  # accounts the bureau has reported or blocked
        self._told_hardship: set[str] = set()
        self._asked_callback: set[str] = set()
        self._collectors: list[DeskSession] = []
        self._lead: DeskSession | None = None
        self._desk_contacts: set[str] = set()
        self.fitted: dict[str, Any] | None = None  # the model fitted mid-campaign

    # --- set-up --------------------------------------------------------------------------------

    async def publish_book(self) -> None:
        """Customers and their loans with what is still owed, with the clock at the campaign's
        first instant (so they are judged as the first step would judge them)."""
        start = self.params.start.date()
        customers: list[CloudEvent] = []
        loans: list[CloudEvent] = []
        opened = datetime.combine(start, dtime(0), UTC) - timedelta(days=1)
        for c in self.book:
            customers.append(
                self.system.event(
                    CustomerUpserted(
                        customer_id=c.customer_id,
                        full_name=c.full_name,
                        national_id=c.national_id,
                        birth_date=c.birth_date,
                        phone=c.phone,
                        email=c.email,
                        postal_address=c.postal_address,
                        timezone=c.timezone,
                        locale=c.locale,
                        country=c.country,
                        credit_score=c.score,
                    ),
                    c.customer_id,
                    opened,
                    c.customer_id,
                )
            )
            loans.append(
                self.system.event(
                    LoanOpened(
                        account_id=c.account_id,
                        customer_id=c.customer_id,
                        product=c.product,
                        principal=c.principal,
                        currency=c.currency,
                        opened_on=c.opened_on,
                        # what is still owed, as a book moved onto a collections system arrives:
                        # the instalments not yet paid, numbered from 1
                        schedule=[
                            ScheduledInstallment(
                                installment_no=n, due_date=i.due_date, amount=i.amount
                            )
                            for n, i in enumerate(unpaid_at_start(c, start), start=1)
                        ],
                    ),
                    c.customer_id,
                    opened,
                    c.account_id,
                )
            )
        # The customers first, settled everywhere, then their loans: a loan whose instalment is
        # due within days is announced by the ledger at once, and the scheduler reads that on
        # ledger.events and the customer (country, addresses) on core-banking.events, two
        # topics with no order between them. A fault run with two replicas decided five
        # first-day reminders before the customer arrived (suppressed, no usable channel).
        for events in (customers, loans):
            for at in range(0, len(events), BOOK_BATCH):
                await self.system.publish(events[at : at + BOOK_BATCH])
            await self.system.wait_quiet(None, limit=600)

    def _payment_event(self, c: Customer, amount: Decimal, at: datetime, why: str) -> CloudEvent:
        self.stats.payments += 1
        return self.system.event(
            PaymentPosted(
                account_id=c.account_id,
                payment_id=f"P{c.n:07d}-{next(self._payments):07d}-{why}",
                amount=amount,
                currency=c.currency,
                posted_at=at,
            ),
            c.customer_id,
            at,
            c.account_id,
        )

    def schedule_regular_payments(self) -> None:
        start = self.params.start.date()
        end = start + timedelta(days=self.params.days + 1)
        for c in self.book:
            for inst in c.schedule:
                if start <= inst.due_date <= end:
                    at = on_time_payment_at(c, inst, self.seed)
                    self._add(at, c.customer_id, "pay", {"installment": inst.no})

    def _add(self, at: datetime, customer_id: str, kind: str, body: dict[str, Any]) -> None:
        heapq.heappush(self.actions, Action(at, next(self._seq), customer_id, kind, body))

    # --- the run -------------------------------------------------------------------------------

    async def run(self) -> Stats:
        steps = self.params.steps()
        async with self.system.reader(
            topics.LEDGER, topics.SCHEDULER, topics.NOTIFIER, topics.BUREAU
        ) as reader:
            self._reader = reader
            await self.system.partner("POST", "/control", json={"callbacks": False})
            try:
                self._messages_next = (
                    await self.system.partner("GET", "/control/messages?since=1000000000")
                )["next"]
                t = time.monotonic()
                # The clock first: until its first clock.set a service consumes nothing (it
                # would stamp its events with a placeholder time); at the campaign's first
                # instant the book is judged as the first step would judge it.
                await self.system.set_clock(steps[0])
                self.clock = steps[0]
                await self._sign_in_at_the_desk()  # the desk takes writes once it has a clock
                await self.publish_book()
                await self._learn()
                self.stats.timed("book", t)
                self.schedule_regular_payments()
                fit_at = steps[0] + timedelta(days=self.params.models.fit_after_days)
                zones = {c.timezone for c in self.book}
                for before, at in zip([steps[0], *steps], steps, strict=False):
                    for instant in midnight_moves(zones, before, at):
                        await self.move(instant)
                    await self.step(at)
                    if self.stats.steps == 1:
                        await self._snapshot("standing-start.json")
                    if self.fitted is None and at >= fit_at and self.params.models.weight:
                        await self._fit_challenger(at)
                # last answers, then the system at rest
                await self._act(steps[-1] + timedelta(minutes=1))
                await self._desk_figures()
            finally:
                await self.system.partner("POST", "/control", json={"callbacks": True})
                (self.out / "sends-seen.json").write_text(json.dumps(self._sends_log))
                for session in [*self._collectors, *([self._lead] if self._lead else [])]:
                    await session.__aexit__(None, None, None)
        return self.stats

    async def step(self, at: datetime) -> None:
        self.stats.steps += 1
        t = time.monotonic()
        await self._act(at)
        t = self.stats.timed("act", t)
        await self.system.set_clock(at)
        self.clock = at
        self.stats.clock_moves += 1
        await self.system.wait_quiet(at)
        t = self.stats.timed("clock", t)
        await self._learn()
        t = self.stats.timed("learn", t)
        await self._read_sends(at)
        self.stats.timed("sends", t)
        if self.stats.steps % 30 == 0:
            log.info(
                "%s: %d steps, %d payments, %d sends, %d webhooks (%.0fs)",
                at.isoformat(),
                self.stats.steps,
                self.stats.payments,
                self.stats.sends_seen,
                self.stats.webhooks,
                time.monotonic() - self.stats.started,
            )

    async def move(self, at: datetime) -> None:
        """A move between steps, to a zone's day end: customers act up to it, the system
        settles at it and the simulator learns what changed; sends are read at the next step."""
        t = time.monotonic()
        await self._act(at)
        await self.system.set_clock(at)
        self.clock = at
        self.stats.clock_moves += 1
        await self.system.wait_quiet(at)
        await self._learn()
        self.stats.timed("midnight", t)

    async def _act(self, until: datetime) -> None:
        """Everything customers do up to ``until``; one customer's answers go in their order,
        and a customer who answers a contact now pays at the next step."""
        due: list[Action] = []
        while self.actions and self.actions[0].at <= until:
            due.append(heapq.heappop(self.actions))
        if not due:
            return
        answering = {a.customer_id for a in due if a.kind in ("status", "reply")}
        payments: list[CloudEvent] = []
        webhooks: dict[str, list[Action]] = defaultdict(list)
        pages: list[Action] = []
        for action in due:
            c = self.by_customer[action.customer_id]
            if action.kind == "page":
                pages.append(action)
            elif action.kind == "pay":
                if c.customer_id in answering:
                    self._add(until + timedelta(seconds=1), c.customer_id, "pay", action.body)
                    continue
                event = self._payment(c, action)
                if event is not None:
                    payments.append(event)
            else:
                webhooks[c.customer_id].append(action)
        t = time.monotonic()
        await asyncio.gather(
            self.system.publish(payments), self._send_webhooks(webhooks), self._use_pages(pages)
        )
        t = self.stats.timed("act:send", t)
        await self.system.wait_quiet(self.clock)
        self.stats.timed("act:quiet", t)

    def _payment(self, c: Customer, action: Action) -> CloudEvent | None:
        view = self.views[c.account_id]
        body = action.body
        if "installment" in body:
            no = body["installment"]
            inst = next(i for i in c.schedule if i.no == no)
            if no in c.misses or view.delinquent:
                return None
            return self._payment_event(c, inst.amount, action.at, f"due{no}")
        if "plan" in body:
            if view.plan_broken:
                return None
            if not keeps_plan_installment(self.params, self.seed, c, body["plan"], body["no"]):
                view.plan_broken = True
                return None
            return self._payment_event(c, Decimal(body["amount"]), action.at, "plan")
        amount = Decimal(body["amount"]) if "amount" in body else view.overdue
        if amount <= 0:
            return None
        return self._payment_event(c, amount, action.at, body.get("why", "contact"))

    async def _send_webhooks(self, by_customer: dict[str, list[Action]]) -> None:
        """Through the partner stand-in in one request: each customer's answers in order."""
        sequences = []
        for actions in by_customer.values():
            sequence = []
            for a in actions:
                if a.kind == "status":
                    self.stats.webhooks += 1
                    sequence.append({"kind": "status", "body": a.body})
                else:
                    self.stats.replies += 1
                    sequence.append({"kind": "inbound", "body": a.body})
            sequences.append(sequence)
        if sequences:
            result = await self.system.partner(
                "POST", "/control/relay", json={"sequences": sequences, "concurrency": 16}
            )
            if result["failed"]:
                raise RuntimeError(f"{result['failed']} webhooks were not accepted")

    async def _use_pages(self, actions: list[Action]) -> None:
        """Customers who agree their plan on the self-service page, as a browser would: open
        the link, answer the identity check, choose the most instalments the offer allows."""
        gate = asyncio.Semaphore(8)

        async def one(action: Action) -> None:
            c = self.by_customer[action.customer_id]
            offer = action.body["offer"]
            limits = offer.limits
            kind, term = (
                offer.kind,
                {
                    "installments": offer.installments,
                    "extension": offer.extension_days,
                    "settlement": offer.settlement_percent,
                }[offer.kind],
            )
            if kind == "installments" and limits is not None and limits.max_installments:
                term = limits.max_installments
            async with gate:
                self.stats.pages += 1
                if not await self.system.self_service_plan(
                    action.body["link"], c.birth_date.isoformat(), kind, str(term)
                ):
                    raise RuntimeError("the self-service page refused a plan within its limits")

        await asyncio.gather(*(one(a) for a in actions))

    async def _fit_challenger(self, at: datetime) -> None:
        t = time.monotonic()
        self.fitted = await models.fit_challenger(self.system, self.params.models, at)
        await asyncio.to_thread(
            (self.out / "models.json").write_text, json.dumps(self.fitted, indent=1, default=str)
        )
        log.info(
            "%s: fitted model %s on %s decision points in %.1fs; challenger %s in strategy v%s",
            at.isoformat(),
            self.fitted.get("model_version"),
            self.fitted.get("decisions"),
            time.monotonic() - t,
            self.fitted.get("challenger"),
            self.fitted.get("strategy_version"),
        )
        self.stats.timed("fit", t)

    async def _learn(self) -> None:
        """What the system said since the last step: contact requests (to know what a message
        at the partner offers), plans agreed, each account's overdue amount, and reporting
        cycles (the ledger's standing is kept as each cycle ran, for the reconciliation)."""
        cycles = set(self._cycles_seen)
        await self._learn_events()
        for cycle in sorted(self._cycles_seen - cycles):
            await self._snapshot(f"ledger-at-cycle-{cycle}.json", detail=True)

    async def _snapshot(self, name: str, *, detail: bool = False) -> None:
        """Every account's standing (its bucket only, without ``detail``). With ``detail``, as a
        cycle ran: also, for every account the bureau may have reported then (30 days behind,
        or reported before), the ledger's account view and history, so that the
        reconciliation can check each field of each record against the ledger as it stood."""
        ids = [c.account_id for c in self.book]
        rows: dict[str, Any] = {}
        ledger = self.system.endpoints.services["ledger"]
        for i in range(0, len(ids), 10_000):
            response = await self.system.request(
                "POST", f"{ledger}/v1/accounts/standing", json={"account_ids": ids[i : i + 10_000]}
            )
            response.raise_for_status()
            for row in response.json():
                rows[row["account_id"]] = row if detail else row["bucket"]
        if not detail:
            await asyncio.to_thread((self.out / name).write_text, json.dumps(rows))
            return
        wanted = sorted(
            {a for a, r in rows.items() if r["days_past_due"] >= 30} | self._in_bureau_scope
        )
        gate = asyncio.Semaphore(16)

        async def view(account_id: str) -> tuple[str, dict[str, Any]]:
            async with gate:
                found = {}
                for key, path in (("account", ""), ("history", "/history")):
                    response = await self.system.request(
                        "GET", f"{ledger}/v1/accounts/{account_id}{path}"
                    )
                    response.raise_for_status()
                    found[key] = response.json()
                found["timezone"] = self.by_account[account_id].timezone
                return account_id, found

        views = dict(await asyncio.gather(*(view(a) for a in wanted)))
        payload = {"standing": rows, "detail": views}
        await asyncio.to_thread((self.out / name).write_text, json.dumps(payload))

    async def _learn_events(self) -> None:
        for event in await self._reader.drain():
            data = event.data
            if isinstance(data, ContactRequested):
                self.requests[data.contact_id] = data
            elif isinstance(data, PlanAgreed):
                self._plan_agreed(data)
            elif isinstance(data, PaymentMissed | DelinquencyChanged | PaymentReceived):
                view = self.views.get(data.account_id)
                if view is not None:
                    view.overdue = Decimal(data.total_overdue)
                    view.delinquent = view.overdue > 0
            elif isinstance(data, ReportSubmitted | ReportBlocked | ReportCorrected):
                self._cycles_seen.add(data.cycle)
                self._in_bureau_scope.add(data.account_id)
            elif isinstance(data, AccountCured):
                view = self.views.get(data.account_id)
                if view is not None:
                    self._cured(self.by_account[data.account_id], view, event.time)

    def _cured(self, c: Customer, view: AccountView, at: datetime) -> None:
        view.overdue, view.delinquent = Decimal(0), False
        upcoming = [i for i in c.schedule if i.due_date > c.local(at).date()]
        if upcoming and misses_again(self.params, self.seed, c, upcoming[0].no):
            c.misses.add(upcoming[0].no)

    def _plan_agreed(self, plan: PlanAgreed) -> None:
        c = self.by_account.get(plan.account_id)
        if c is None:
            return
        self.views[c.account_id].plan_broken = False
        for no, inst in enumerate(plan.installments, start=1):
            at = datetime.combine(inst.due_date, dtime(11), c.zone).astimezone(UTC)
            self._add(
                at,
                c.customer_id,
                "pay",
                {"plan": plan.plan_id, "no": no, "amount": str(inst.amount)},
            )

    async def _read_sends(self, at: datetime) -> None:
        page = await self.system.partner("GET", f"/control/messages?since={self._messages_next}")
        self._messages_next = page["next"]
        for message in page["messages"]:
            self.stats.sends_seen += 1
            request = self.requests.get(message["contact_id"])
            if request is None:
                log.warning("a message at the partner with no contact request seen")
                continue
            c = self.by_account.get(request.account_id)
            if c is None:
                continue
            self._sends_log.append(
                {
                    "contact_id": request.contact_id,
                    "account_id": request.account_id,
                    "template": request.template,
                    "channel": request.channel,
                    "not_before": request.not_before.isoformat(),
                    "seen_at_step": at.isoformat(),
                }
            )
            self._react(c, request, at, message.get("body"))
        await self._work_the_desk(at)
        # what the desk's collectors logged (its webhooks, the promises and plans they bring)
        # is in everywhere before customers act at the next step: otherwise a promise taken now
        # and a payment sent next would reach the scheduler on two topics in either order
        await self.system.wait_quiet(self.clock)

    # --- the desk: simulated collectors ------------------------------------------------------

    async def _sign_in_at_the_desk(self) -> None:
        people = self.params.desk
        for username, password in people.collectors:
            self._collectors.append(await DeskSession(self.system, username, password).__aenter__())
        if people.lead is not None:
            self._lead = await DeskSession(self.system, *people.lead).__aenter__()

    async def _work_the_desk(self, at: datetime) -> None:
        """Each collector in turn takes the next item they may work and logs what the customer
        did (the same draw as for a partner's call), until no one has anything left; then the
        team lead approves what waits for approval."""
        active = list(self._collectors)
        while active:
            still = []
            for session in active:
                taken = await session.call("POST", "/v1/work/next")
                if taken.status_code == 204:
                    continue
                taken.raise_for_status()
                await self._work_item(session, taken.json(), at)
                still.append(session)
            active = still
        if self._lead is not None:
            waiting = await self._lead.call("GET", "/v1/approvals")
            waiting.raise_for_status()
            for approval in waiting.json():
                decided = await self._lead.call(
                    "POST", f"/v1/approvals/{approval['approval_id']}", json={"approve": True}
                )
                if decided.status_code not in (200, 409):  # 409: decided before a restart
                    raise RuntimeError(f"approval answered {decided.status_code}")

    async def _work_item(self, session: DeskSession, item: dict[str, Any], at: datetime) -> None:
        self.stats.desk_items += 1
        self._desk_contacts.add(item["contact_id"])
        request = self.requests.get(item["contact_id"])
        c = self.by_account.get(request.account_id) if request else None
        reported: list[dict[str, Any]] = []
        if request is not None and c is not None:
            self._react(c, request, at, item.get("script"), report=reported.append)
        body = desk_outcome(reported[0] if reported else {"status": "no_answer"}, request)
        path = f"/v1/work/{item['contact_id']}/outcome"
        logged = await session.call("POST", path, json=body)
        if logged.status_code == 422:  # terms the desk will not take: the call still happened
            logged = await session.call("POST", path, json={"outcome": "right_party"})
        if logged.status_code not in (200, 409):  # 409: logged before the desk restarted
            raise RuntimeError(f"the desk answered {logged.status_code}: {logged.text[:300]}")

    async def _desk_figures(self) -> None:
        """Each collector's results as the desk counts them, for the report."""
        if self._lead is None:
            return
        found = await self._lead.call("GET", "/v1/figures")
        found.raise_for_status()
        figures = found.json() | {"contacts": sorted(self._desk_contacts)}
        (self.out / "desk.json").write_text(json.dumps(figures, indent=1))

    def _humane(
        self, c: Customer, request: ContactRequested, at: datetime, body: str | None
    ) -> Reaction | None:
        """How a customer answers what humane collection sends: a reminder (one about to miss
        may pay on time after all), a first collection message to a customer in hardship (who
        says so), a hardship offer, a callback they asked for; or None: react as to any
        contact."""
        key = f"{request.template}|{request.channel}|{at.isoformat()}"
        if request.purpose == "reminder":
            if request.due_date is not None and rescued_by_reminder(
                self.params, self.seed, c, request.due_date
            ):
                for inst in c.schedule:
                    if inst.due_date == request.due_date:
                        c.misses.discard(inst.no)
            return Reaction("delivered")
        if request.purpose == "callback":
            return answers_callback(self.params, self.seed, c, key)
        if request.channel not in ("sms", "email"):
            return None
        sender = c.phone if request.channel == "sms" else c.email
        if request.purpose == "hardship" and request.offer is not None:
            if accepts_hardship_offer(self.params, self.seed, c, key):
                self._accept(c, request, at, body, sender, key)
            return Reaction("delivered")
        if c.hardship and c.customer_id not in self._told_hardship and sender:
            self._told_hardship.add(c.customer_id)
            self._reply(c, request, at, sender, hardship_text(self.seed, c))
            return Reaction("delivered")
        if c.customer_id not in self._asked_callback and sender:
            text = callback_request(self.params, self.seed, c, key)
            if text is not None:
                self._asked_callback.add(c.customer_id)
                self._reply(c, request, at, sender, text)
                return Reaction("delivered")
        return None

    def _reply(
        self, c: Customer, request: ContactRequested, at: datetime, sender: str, text: str
    ) -> None:
        self._add(
            at,
            c.customer_id,
            "reply",
            {
                "event_id": str(uuid.uuid5(EVENTS, f"{self.seed}|reply|{request.contact_id}")),
                "channel": request.channel,
                "from": sender,
                "text": text,
            },
        )

    def _accept(
        self,
        c: Customer,
        request: ContactRequested,
        at: datetime,
        body: str | None,
        sender: str | None,
        key: str,
    ) -> None:
        """Accept the offer: on the self-service page (choosing the most instalments its
        limits allow) or by replying YES."""
        link = LINK.search(body or "")
        if link is not None and uses_the_page(self.params, self.seed, c, key):
            self._add(at, c.customer_id, "page", {"link": link.group(0), "offer": request.offer})
        elif sender:
            self._reply(c, request, at, sender, "YES")

    def _react(
        self,
        c: Customer,
        request: ContactRequested,
        at: datetime,
        body: str | None = None,
        report: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        """How the customer answers; the status goes to the partner stand-in (as its webhook)
        or, for a call the desk works, to ``report`` (the collector logs it)."""
        humane = self._humane(c, request, at, body)
        reaction = humane or react(
            self.params,
            self.seed,
            c,
            contact_key=f"{request.template}|{request.channel}|{at.isoformat()}",
            channel=request.channel,
            offer=request.offer is not None,
            at=at,
        )
        status: dict[str, Any] = {
            "event_id": str(uuid.uuid5(EVENTS, f"{self.seed}|status|{request.contact_id}")),
            "contact_id": request.contact_id,
            "status": reaction.status,
        }
        view = self.views[c.account_id]
        local_today = c.local(at).date()
        if reaction.promise_days is not None and view.overdue > 0:
            due = local_today + timedelta(days=reaction.promise_days)
            status |= {"promise_amount": str(view.overdue), "promise_date": due.isoformat()}
            if reaction.keeps_promise:
                pay_at = datetime.combine(due, dtime(10), c.zone).astimezone(UTC)
                self._add(
                    pay_at, c.customer_id, "pay", {"amount": str(view.overdue), "why": "promise"}
                )
        elif reaction.status == "promise_to_pay":
            status["status"] = "right_party"
        # Like most SMS and email gateways on a standard plan, the stand-in reports only
        # failures for those channels; delivery of a notice is always confirmed.
        quiet = (
            request.channel in ("sms", "email")
            and status["status"] == "delivered"
            and request.template not in NOTICES
        )
        if report is not None:
            report(status)
        elif not quiet:
            self._add(at, c.customer_id, "status", status)
        if reaction.reply == "YES" and request.channel in ("sms", "email"):
            sender = c.phone if request.channel == "sms" else c.email
            self._accept(c, request, at, body, sender, f"{request.contact_id}|accept")
        elif reaction.reply is not None and request.channel in ("sms", "email"):
            sender = c.phone if request.channel == "sms" else c.email
            if sender:
                self._add(
                    at,
                    c.customer_id,
                    "reply",
                    {
                        "event_id": str(
                            uuid.uuid5(EVENTS, f"{self.seed}|reply|{request.contact_id}")
                        ),
                        "channel": request.channel,
                        "from": sender,
                        "text": reaction.reply,
                    },
                )
        if reaction.pay_after_days is not None:
            pay_day = local_today + timedelta(days=reaction.pay_after_days)
            pay_at = max(
                at + timedelta(hours=2),
                datetime.combine(pay_day, dtime(12), c.zone).astimezone(UTC),
            )
            self._add(pay_at, c.customer_id, "pay", {"why": "contact"})


# what a collector logs for what the customer did (a partner's status)
DESK_OUTCOMES = {
    "no_answer": "no_answer",
    "right_party": "right_party",
    "wrong_party": "wrong_party",
    "refused": "refusal",
    "promise_to_pay": "promise",
    "dispute": "dispute",
    "plan_accepted": "plan",
    "hardship": "hardship",
    "callback": "callback",
    "delivered": "right_party",
}


def desk_outcome(status: dict[str, Any], request: ContactRequested | None) -> dict[str, Any]:
    body: dict[str, Any] = {"outcome": DESK_OUTCOMES.get(str(status["status"]), "right_party")}
    if body["outcome"] == "promise":
        body |= {"promise_amount": status["promise_amount"], "promise_date": status["promise_date"]}
    elif body["outcome"] == "plan":
        offer = request.offer if request is not None else None
        if offer is None:
            return {"outcome": "right_party"}
        body |= {
            "kind": offer.kind,
            "installments": offer.installments,
            "extension_days": offer.extension_days,
            "settlement_percent": (
                str(offer.settlement_percent) if offer.settlement_percent is not None else None
            ),
        }
    elif body["outcome"] == "callback":
        if not status.get("callback_at"):
            return {"outcome": "right_party"}
        body["callback_at"] = status["callback_at"]
    elif body["outcome"] == "hardship":
        body["hardship_reason"] = status.get("hardship_reason") or "other"
    return {k: v for k, v in body.items() if v is not None}


def write_book_index(campaign: Campaign, path: Path) -> None:
    """Ids and segments of the book (no personal data), for the report."""
    rows = [
        {
            "account_id": c.account_id,
            "customer_id": c.customer_id,
            "country": c.country,
            "currency": c.currency,
            "segment": c.segment,
            "product": c.product,
            "behind_at_start": c.behind,
        }
        for c in campaign.book
    ]
    path.write_text(json.dumps(rows))
