"""The scheduler's event handlers: keep what it knows of customers and accounts up to date, and
start, hold, resume or end an account's treatment as the second-tier policies
(``domain/policies.py``) say. Thin: load, decide, persist; each takes the unit of work it runs
in and never commits. A handler that may leave steps due now returns the accounts as touched;
:meth:`Scheduler.settle` fires them before the transaction commits."""

from __future__ import annotations

from collections.abc import Sequence

from services.scheduler.domain import policies
from services.scheduler.repository import accounts, timers
from services.scheduler.repository.accounts import AccountState, CustomerRow, Received
from services.scheduler.treatments import Treatments
from shared.clock import Clock
from shared.consumer import Handlers, Touched
from shared.db import UnitOfWork
from shared.envelope import CloudEvent
from shared.events import (
    AccountCured,
    AccountFlagged,
    ContactAttempted,
    CustomerCeaseRequested,
    CustomerOptedOut,
    CustomerUpserted,
    DelinquencyChanged,
    DisputeOpened,
    DisputeResolved,
    PaymentMissed,
    PaymentReceived,
    PlanActivated,
    PlanBroken,
    PlanCompleted,
    PromiseBroken,
    PromiseKept,
    PromiseMade,
)
from shared.fingerprint import fingerprint


def _state(e: PaymentMissed | DelinquencyChanged) -> AccountState:
    return AccountState(
        e.account_id,
        e.customer_id,
        e.currency,
        e.bucket,
        e.days_past_due,
        e.total_overdue,
        e.product,
        e.next_due_date,
        e.next_due_amount,
    )


class Scheduler:
    def __init__(self, clock: Clock, treatments: Treatments, fingerprint_key: str) -> None:
        self._clock = clock
        self.treatments = treatments
        self._key = fingerprint_key

    # --- state from core-banking.events ------------------------------------------------------

    async def upsert_customers(
        self, uow: UnitOfWork, customers: Sequence[CustomerUpserted]
    ) -> None:
        latest = list({c.customer_id: c for c in customers}.values())
        rows = [
            CustomerRow(
                c.customer_id,
                c.country,
                c.timezone,
                c.locale,
                c.credit_score,
                fingerprint("phone", c.phone, self._key),
                fingerprint("email", c.email, self._key),
                fingerprint("postal", c.postal_address, self._key),
            )
            for c in latest
        ]
        await accounts.upsert_customers(uow.session, rows, self._clock.now())

    async def flag(self, uow: UnitOfWork, data: AccountFlagged, customer_id: str) -> None:
        """``customer_id``: the event's key (every event is keyed by its customer), so a flag
        counts even when it arrives before anything else about the account."""
        await accounts.set_flag(
            uow.session, customer_id, data.account_id, data.flag, data.active, self._clock.now()
        )

    # --- state and treatments from ledger.events ---------------------------------------------

    async def payments_missed(self, uow: UnitOfWork, events: Sequence[PaymentMissed]) -> Touched:
        """Record where each account stands, and start a treatment for an account not in one."""
        latest = list({e.account_id: e for e in events}.values())
        await accounts.upsert_accounts(uow.session, [_state(e) for e in latest], self._clock.now())
        busy = await timers.in_treatment(uow.session, [e.account_id for e in latest])
        starting = [e.account_id for e in latest if e.account_id not in busy]
        return await self.treatments.start(uow, starting, trigger="payment.missed")

    async def delinquency_changed(
        self, uow: UnitOfWork, data: DelinquencyChanged
    ) -> Touched | None:
        await accounts.upsert_accounts(uow.session, [_state(data)], self._clock.now())
        intent = policies.after_bucket_change(
            data.bucket,
            await timers.treatment_bucket(uow.session, data.account_id),
            await timers.pending_steps(uow.session, data.account_id),
        )
        if isinstance(intent, policies.Cancel):
            await self.treatments.cancel(
                uow, [data.account_id], "nothing_overdue", "delinquency.changed"
            )
        elif isinstance(intent, policies.Restart):
            return await self.treatments.start(
                uow, [data.account_id], trigger="delinquency.changed"
            )
        return None

    async def payments_received(self, uow: UnitOfWork, payments: Sequence[PaymentReceived]) -> None:
        """A run of payments at once, with the effect of one after the other: a payment that
        clears the arrears cancels the account's pending steps (those are gathered and cancelled
        in one statement), one that leaves something overdue defers them."""
        now = self._clock.now()
        last = {p.account_id: p for p in payments}
        await accounts.record_payments(
            uow.session,
            [(p.account_id, p.payment_id) for p in payments],
            [
                Received(a, p.total_overdue, p.days_past_due, p.next_due_date, p.next_due_amount)
                for a, p in last.items()
            ],
            now,
        )
        rules = await self.treatments.settle_rules(uow, sorted(last), "part_payment")
        cleared: list[str] = []
        for payment in payments:
            intent = policies.after_payment(payment.total_overdue, rules[payment.account_id], now)
            if isinstance(intent, policies.Cancel):
                cleared.append(payment.account_id)
                continue
            if cleared:
                await self.treatments.cancel(uow, cleared, "nothing_overdue", "payment.received")
                cleared = []
            await self.treatments.hold(uow, payment.account_id, intent, "payment.received")
            await self.treatments.rescore(uow, [payment.account_id])
        if cleared:
            await self.treatments.cancel(uow, cleared, "nothing_overdue", "payment.received")

    async def contacts_attempted(
        self, uow: UnitOfWork, attempts: Sequence[ContactAttempted]
    ) -> None:
        """A run of attempts in one statement: for a contact reported more than once in the
        run, its last outcome stands and the latest address it names is kept, as one by one."""
        latest: dict[str, ContactAttempted] = {}
        refs: dict[str, str | None] = {}
        for attempt in attempts:
            latest[attempt.contact_id] = attempt
            refs[attempt.contact_id] = attempt.address_ref or refs.get(attempt.contact_id)
        rows = list(latest.values())
        await accounts.record_attempts(uow.session, rows, refs)
        await self.treatments.rescore(uow, sorted({r.account_id for r in rows}))

    async def account_cured(self, uow: UnitOfWork, data: AccountCured) -> None:
        await self.treatments.cancel(uow, [data.account_id], "nothing_overdue", "account.cured")

    async def plan_activated(self, uow: UnitOfWork, data: PlanActivated) -> None:
        await accounts.change_account(uow.session, data.account_id, "plan_kept", self._clock.now())
        await self.treatments.cancel(uow, [data.account_id], "plan_kept", "plan.activated")

    async def plan_broken(self, uow: UnitOfWork, data: PlanBroken) -> Touched:
        await accounts.change_account(uow.session, data.account_id, "plan_ended", self._clock.now())
        await self.treatments.rescore(uow, [data.account_id])
        return await self.treatments.start(uow, [data.account_id], trigger="plan.broken")

    async def plan_completed(self, uow: UnitOfWork, data: PlanCompleted) -> None:
        await accounts.change_account(uow.session, data.account_id, "plan_ended", self._clock.now())
        await self.treatments.cancel(uow, [data.account_id], "nothing_overdue", "plan.completed")

    async def promise_made(self, uow: UnitOfWork, data: PromiseMade) -> None:
        await accounts.promise_due(uow.session, data.account_id, data.due_date)
        rule = await self.treatments.pause_rule(uow, data.account_id, "promise_pending")
        hold = policies.promise_hold(data.due_date, rule)
        await self.treatments.hold(uow, data.account_id, hold, "promise.made")

    async def promise_kept(self, uow: UnitOfWork, data: PromiseKept) -> None:
        await accounts.change_account(
            uow.session, data.account_id, "promise_kept", self._clock.now()
        )
        await self.treatments.rescore(uow, [data.account_id])

    async def promise_broken(self, uow: UnitOfWork, data: PromiseBroken) -> Touched:
        now = self._clock.now()
        await accounts.change_account(uow.session, data.account_id, "promise_broken", now)
        await self.treatments.rescore(uow, [data.account_id])
        resumed = await timers.resume(uow.session, data.account_id, now)
        if isinstance(policies.after_broken_promise(len(resumed)), policies.Restart):
            return await self.treatments.start(uow, [data.account_id], trigger="promise.broken")
        return Touched.of([data.account_id])  # the resumed steps fire in the settle step

    # --- state from notifier.events ----------------------------------------------------------

    async def opted_out(self, uow: UnitOfWork, data: CustomerOptedOut) -> None:
        await accounts.opt_out(
            uow.session, data.customer_id, data.channel, data.address_ref, self._clock.now()
        )

    async def cease_requested(self, uow: UnitOfWork, data: CustomerCeaseRequested) -> None:
        await accounts.cease(uow.session, data.customer_id, self._clock.now())

    async def dispute(self, uow: UnitOfWork, account_id: str, is_open: bool) -> None:
        change = "dispute_opened" if is_open else "dispute_resolved"
        await accounts.change_account(uow.session, account_id, change, self._clock.now())

    # --- the settle step ---------------------------------------------------------------------

    async def settle(self, uow: UnitOfWork, touched: Touched) -> None:
        """After a transaction's handlers: fire what is already due for the accounts they
        touched, in one pass (a day-0 step goes out with the event that started it)."""
        await self.treatments.fire_due(uow, list(touched.accounts))


def handlers(scheduler: Scheduler) -> Handlers:
    """What the scheduler does with each payload it reads."""
    registry = Handlers()
    registry.runs(CustomerUpserted, scheduler.upsert_customers)
    registry.runs(PaymentMissed, scheduler.payments_missed)
    registry.runs(PaymentReceived, scheduler.payments_received)
    registry.runs(ContactAttempted, scheduler.contacts_attempted)
    registry.on(DelinquencyChanged, scheduler.delinquency_changed)
    registry.on(AccountCured, scheduler.account_cured)
    registry.on(PlanActivated, scheduler.plan_activated)
    registry.on(PlanBroken, scheduler.plan_broken)
    registry.on(PlanCompleted, scheduler.plan_completed)
    registry.on(PromiseMade, scheduler.promise_made)
    registry.on(PromiseKept, scheduler.promise_kept)
    registry.on(PromiseBroken, scheduler.promise_broken)
    registry.on(CustomerOptedOut, scheduler.opted_out)
    registry.on(CustomerCeaseRequested, scheduler.cease_requested)

    async def account_flagged(uow: UnitOfWork, data: AccountFlagged, event: CloudEvent) -> None:
        await scheduler.flag(uow, data, data.customer_id or event.key)

    async def dispute_opened(uow: UnitOfWork, data: DisputeOpened, _: CloudEvent) -> None:
        await scheduler.dispute(uow, data.account_id, True)

    async def dispute_resolved(uow: UnitOfWork, data: DisputeResolved, _: CloudEvent) -> None:
        await scheduler.dispute(uow, data.account_id, False)

    registry.each(AccountFlagged, account_flagged)
    registry.each(DisputeOpened, dispute_opened)
    registry.each(DisputeResolved, dispute_resolved)
    return registry
