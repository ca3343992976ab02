"""The scheduler's event handlers: keep what it knows of customers and accounts up to date, and
start, hold, resume or end an account's treatment as the second-tier policies
(``domain/policies.py``) say. Thin: load, decide, persist; each takes the unit of work it runs
in and never commits. A handler that may leave steps due now returns the accounts as touched;
:meth:`Scheduler.settle` fires them before the transaction commits."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime

from services.scheduler.domain import policies
from services.scheduler.repository import accounts, facts, timers
from services.scheduler.repository.accounts import AccountState, CustomerRow, Received
from services.scheduler.treatments import Treatments
from shared.clock import Clock
from shared.consumer import Handlers, Touched
from shared.db import UnitOfWork
from shared.envelope import CloudEvent
from shared.events import (
    AccountCured,
    AccountFlagged,
    CallbackRequested,
    ContactAttempted,
    CustomerCeaseRequested,
    CustomerOptedOut,
    CustomerUpserted,
    DelinquencyChanged,
    DisputeOpened,
    DisputeResolved,
    HardshipReported,
    InstallmentDueSoon,
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

# A hardship pause replaces every pending step but a callback the customer asked for, which the
# pause then holds back like any contact until the breather ends.
REPLACED_BY_HARDSHIP: tuple[timers.Purpose, ...] = ("collection", "reminder", "hardship")


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
    ) -> Touched:
        """Keep each customer's details; steps that came due before the details arrived (they
        wait for them) are decided in the settle step."""
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
        now = self._clock.now()
        await accounts.upsert_customers(uow.session, rows, now)
        return Touched.of(
            await timers.waiting_for(uow.session, [c.customer_id for c in latest], now)
        )

    async def flag(self, uow: UnitOfWork, data: AccountFlagged, customer_id: str) -> None:
        """``customer_id``: the event's key (every event is keyed by its customer), so a flag
        counts even when it arrives before anything else about the account."""
        await accounts.set_flag(
            uow.session, customer_id, data.account_id, data.flag, data.active, self._clock.now()
        )

    # --- state and treatments from ledger.events ---------------------------------------------

    async def payments_missed(self, uow: UnitOfWork, events: Sequence[PaymentMissed]) -> Touched:
        """Record where each account stands and how often it was late, and start a treatment for
        an account not in one."""
        latest = list({e.account_id: e for e in events}.values())
        await accounts.upsert_accounts(uow.session, [_state(e) for e in latest], self._clock.now())
        await accounts.count_late(uow.session, [e.account_id for e in events])
        busy = await timers.in_treatment(uow.session, [e.account_id for e in latest])
        starting = [e.account_id for e in latest if e.account_id not in busy]
        return await self.treatments.start(uow, starting, trigger="payment.missed")

    async def delinquency_changed(
        self, uow: UnitOfWork, data: DelinquencyChanged
    ) -> Touched | None:
        await accounts.upsert_accounts(uow.session, [_state(data)], self._clock.now())
        paused = await accounts.hardship_until(uow.session, data.account_id)
        intent = policies.after_bucket_change(
            data.bucket,
            await timers.treatment_bucket(uow.session, data.account_id),
            await timers.pending_steps(uow.session, data.account_id),
            in_hardship=paused is not None and paused > self._clock.now(),
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

    async def due_soon(self, uow: UnitOfWork, events: Sequence[InstallmentDueSoon]) -> Touched:
        """A gentle reminder before the due date, for the segments a strategy chooses; never for
        an account already in collection (its messages say what falls due) and never a
        collection message. One reminder per account and run, for its earliest instalment."""
        first: dict[str, InstallmentDueSoon] = {}
        for e in sorted(events, key=lambda e: (e.due_date, e.installment_no)):
            first.setdefault(e.account_id, e)
        await accounts.ensure_accounts(
            uow.session,
            [(e.account_id, e.customer_id, e.currency, e.product) for e in first.values()],
            self._clock.now(),
        )
        busy = await timers.in_treatment(uow.session, list(first))
        todo = {a: e for a, e in first.items() if a not in busy}
        return await self.treatments.start(
            uow,
            sorted(todo),
            trigger="installment.due_soon",
            purpose="reminder",
            context={
                a: {
                    "installment_no": e.installment_no,
                    "due_date": e.due_date.isoformat(),
                    "amount": str(e.amount),
                    "days_until_due": e.days_until_due,
                }
                for a, e in todo.items()
            },
        )

    # --- hardship and callbacks --------------------------------------------------------------

    async def hardship(
        self,
        uow: UnitOfWork,
        account_ids: Sequence[str],
        reason: str,
        until: date | None,
        trigger: str,
    ) -> Touched:
        """Collection pauses for the pack's breather (or until the date the customer gave, if
        later): pending steps are cancelled citing the pause, and the hardship treatment is
        planned from the breather's end."""
        now = self._clock.now()
        parties = await facts.parties(uow.session, account_ids)
        begin: dict[str, datetime] = {}
        decisions = []
        for account_id in account_ids:
            party = parties.get(account_id)
            if party is None:
                continue
            pack = await self.treatments.pack_of(uow, account_id)
            hold = policies.hardship_pause(
                now, pack.hardship(), until, party.timezone or pack.default_timezone
            )
            begin[account_id] = hold.until
            await accounts.set_hardship(uow.session, [account_id], hold.until, reason, now)
            decisions.append(
                timers.Decision(
                    account_id,
                    "hardship",
                    None,
                    [hold.rule],
                    {"reason": reason, "until": hold.until, "trigger": trigger},
                    now,
                )
            )
        await timers.record(uow.session, decisions)
        if not begin:
            return Touched()
        await self.treatments.cancel(
            uow, sorted(begin), "hardship", trigger, quiet=True, purposes=REPLACED_BY_HARDSHIP
        )
        return await self.treatments.start(
            uow, sorted(begin), trigger=trigger, purpose="hardship", begin=begin
        )

    async def hardship_reported(self, uow: UnitOfWork, data: HardshipReported) -> Touched:
        await accounts.ensure_accounts(
            uow.session, [(data.account_id, data.customer_id, None, None)], self._clock.now()
        )
        return await self.hardship(
            uow, [data.account_id], data.reason, data.until, "hardship.reported"
        )

    async def hardship_flagged(
        self, uow: UnitOfWork, data: AccountFlagged, customer_id: str
    ) -> Touched:
        """``account.flagged hardship`` counts as a report (for the account, or every account of
        the customer); cleared, it ends the pause now."""
        ids = (
            [data.account_id]
            if data.account_id
            else await accounts.accounts_of(uow.session, customer_id)
        )
        if not data.active:
            await accounts.set_hardship(uow.session, ids, None, None, self._clock.now())
            return Touched.of(ids)
        return await self.hardship(uow, ids, "other", None, "account.flagged")

    async def callback_requested(
        self, uow: UnitOfWork, data: CallbackRequested, event_id: str
    ) -> Touched:
        await accounts.ensure_accounts(
            uow.session, [(data.account_id, data.customer_id, None, None)], self._clock.now()
        )
        return await self.treatments.callback(
            uow, data.account_id, data.customer_id, data.channel, data.at, event_id
        )

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
    registry.runs(InstallmentDueSoon, scheduler.due_soon)
    registry.on(HardshipReported, scheduler.hardship_reported)
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

    async def account_flagged(
        uow: UnitOfWork, data: AccountFlagged, event: CloudEvent
    ) -> Touched | None:
        customer_id = data.customer_id or event.key
        await scheduler.flag(uow, data, customer_id)
        if data.flag == "hardship":
            return await scheduler.hardship_flagged(uow, data, customer_id)
        return None

    async def callback_requested(
        uow: UnitOfWork, data: CallbackRequested, event: CloudEvent
    ) -> Touched:
        return await scheduler.callback_requested(uow, data, event.id)

    async def dispute_opened(uow: UnitOfWork, data: DisputeOpened, _: CloudEvent) -> None:
        await scheduler.dispute(uow, data.account_id, True)

    async def dispute_resolved(uow: UnitOfWork, data: DisputeResolved, _: CloudEvent) -> None:
        await scheduler.dispute(uow, data.account_id, False)

    registry.each(AccountFlagged, account_flagged)
    registry.each(CallbackRequested, callback_requested)
    registry.each(DisputeOpened, dispute_opened)
    registry.each(DisputeResolved, dispute_resolved)
    return registry
