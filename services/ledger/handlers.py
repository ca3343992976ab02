"""The ledger's use cases: load, decide (the domain), persist (the repository). Each takes the
unit of work it runs in and never commits. A handler that changes what an account owes returns
it as touched; :meth:`Ledger.settle` then re-evaluates every account a transaction touched in
one set-based pass and announces the payments with the amounts that pass left.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from services.ledger.announcements import ActiveFlags, announcements, receipt_event
from services.ledger.domain import rollrate
from services.ledger.domain.allocation import LedgerError, allocate, apply, validate_schedule
from services.ledger.repository import book, evaluation
from services.ledger.repository import rollrate as rollrate_rows
from services.ledger.repository.rows import Evaluated, Settled, StateRow
from shared.clock import Clock
from shared.consumer import Handlers, PermanentError, Touched
from shared.db import UnitOfWork
from shared.envelope import CloudEvent, new_event
from shared.events import (
    AccountEvent,
    AccountFlagged,
    CustomerUpserted,
    LoanOpened,
    Payload,
    PaymentPosted,
    PaymentReversed,
    PlanActivated,
    PlanAgreed,
    PlanBroken,
    PlanCompleted,
    PromiseBroken,
    PromiseKept,
    PromiseMade,
)

SOURCE = "/arrears/ledger"
# evaluated rows turned into events between two looks at the connection
ANNOUNCE_SLICE = 500
# How far ahead of this service's clock an ``as_of`` may be and still be waited for: the next
# clock move (the campaign's are hours apart); anything later is refused at once.
REACH = timedelta(days=1)
PLAN_EVENTS: Mapping[str, type[AccountEvent]] = {"completed": PlanCompleted, "broken": PlanBroken}
PROMISE_EVENTS: Mapping[str, type[AccountEvent]] = {"kept": PromiseKept, "broken": PromiseBroken}


class Ledger:
    def __init__(
        self,
        clock: Clock,
        products: Mapping[str, book.Product],
        *,
        review_chunk: int = evaluation.REVIEW_CHUNK,
    ) -> None:
        self._clock = clock
        self._products = dict(products)
        self._review_chunk = review_chunk

    # --- commands from core-banking.events -----------------------------------------------------

    async def upsert_customers(
        self, uow: UnitOfWork, customers: Sequence[CustomerUpserted]
    ) -> None:
        """A run of upserts in one statement; a customer announced twice keeps the later."""
        for data in customers:
            try:
                ZoneInfo(data.timezone)
            except (ZoneInfoNotFoundError, ValueError):
                raise PermanentError("timezone: not an IANA time zone") from None
        latest = list({c.customer_id: c for c in customers}.values())
        await book.upsert_customers(uow.session, latest, self._clock.now())

    async def open_loans(self, uow: UnitOfWork, loans: Sequence[LoanOpened]) -> Touched:
        """A run of new loans in a handful of statements. A loan announced again is a no-op; the
        same account id for another customer is refused."""
        for data in loans:
            try:
                validate_schedule([(s.installment_no, s.due_date, s.amount) for s in data.schedule])
            except LedgerError as exc:
                raise PermanentError(str(exc)) from None
            if data.principal <= 0:
                raise PermanentError("principal: must be positive")
        owners = await book.owners(uow.session, sorted({loan.account_id for loan in loans}))
        fresh: list[LoanOpened] = []
        for data in loans:
            owner = owners.get(data.account_id)
            if owner is None:  # neither opened before nor earlier in this run
                owners[data.account_id] = data.customer_id
                fresh.append(data)
            elif owner != data.customer_id:
                raise PermanentError("account_id: already opened for another customer")
        if fresh:
            await book.open_loans(uow.session, fresh, self._products)
        return Touched.of(loan.account_id for loan in fresh)

    async def post_payments(self, uow: UnitOfWork, payments: Sequence[PaymentPosted]) -> Touched:
        """Apply a run of payments in a handful of statements, whatever its length: accounts
        locked together, payments inserted at once (a payment_id seen before is skipped),
        allocations computed by the domain in arrival order, written back in bulk. One invalid
        payment fails the whole run, which the consumer then retries one payment at a time, so
        the error lands on the right record."""
        for data in payments:
            if data.amount <= 0:
                raise PermanentError("amount: must be positive")
        accounts = await book.lock_accounts(uow.session, [p.account_id for p in payments])
        for data in payments:
            account = accounts.get(data.account_id)
            if account is None:
                raise PermanentError("account_id: payment for an unknown account")
            if account.currency != data.currency:
                raise PermanentError("currency: does not match the account's currency")
        fresh = await book.insert_payments(uow.session, payments)
        todo = []
        for data in payments:  # the first of a repeated payment_id is the one inserted
            if data.payment_id in fresh:
                fresh.discard(data.payment_id)
                todo.append(data)
        if not todo:
            return Touched()
        schedules = await book.schedules(uow.session, [p.account_id for p in todo])
        allocations: list[tuple[str, str, Any]] = []
        unallocated: dict[str, Decimal] = {}
        for data in todo:
            installments = schedules.get(data.account_id, [])
            applied = allocate(installments, data.amount)
            schedules[data.account_id] = apply(installments, applied.allocations)
            allocations += [(data.payment_id, data.account_id, a) for a in applied.allocations]
            if applied.unallocated:
                unallocated[data.payment_id] = applied.unallocated
        if allocations:
            await book.insert_allocations(uow.session, allocations)
            touched = {(a, x.installment_no) for _, a, x in allocations}
            await book.set_paid(
                uow.session,
                [
                    book.Paid(account_id, inst.number, inst.paid)
                    for account_id, installments in schedules.items()
                    for inst in installments
                    if (account_id, inst.number) in touched
                ],
            )
        if unallocated:
            await book.set_unallocated(uow.session, unallocated)
        return Touched.of((p.account_id for p in todo), todo)

    async def reverse_payment(self, uow: UnitOfWork, data: PaymentReversed) -> Touched | None:
        await self._lock_account(uow, data.account_id, "reversal")
        payment = await book.lock_payment(uow.session, data.payment_id)
        if payment is None or payment.account_id != data.account_id:
            raise PermanentError("payment_id: no such payment on this account")
        if payment.reversed_at is not None:
            return None  # reversed before
        # Undo exactly what this payment allocated, no matter what was paid since.
        allocated = await book.allocations_of(uow.session, data.payment_id)
        installments = (await book.schedules(uow.session, [data.account_id])).get(
            data.account_id, []
        )
        try:
            after = apply(installments, allocated, sign=-1)
        except LedgerError as exc:
            raise PermanentError(f"payment_id: {exc}") from None
        numbers = {a.installment_no for a in allocated}
        await book.set_paid(
            uow.session,
            [book.Paid(data.account_id, i.number, i.paid) for i in after if i.number in numbers],
        )
        await book.mark_reversed(uow.session, data.payment_id, data.reason, self._clock.now())
        return Touched.of([data.account_id], [data])

    async def flag(self, uow: UnitOfWork, data: AccountFlagged) -> None:
        customer_id = data.customer_id
        if data.account_id is not None:
            owner = (await book.owners(uow.session, [data.account_id])).get(data.account_id)
            if owner is None:
                raise PermanentError("account_id: unknown account")
            if customer_id is not None and customer_id != owner:
                raise PermanentError("customer_id: does not own account_id")
            customer_id = owner
        if customer_id is None:
            raise PermanentError("account_id or customer_id is required")
        await book.insert_flag(
            uow.session, data.account_id, customer_id, data.flag, data.active, self._clock.now()
        )

    # --- commands from notifier.events --------------------------------------------------------

    async def agree_plan(self, uow: UnitOfWork, data: PlanAgreed) -> None:
        account = await self._lock_account(uow, data.account_id, "plan")
        if await book.plan_known(uow.session, data.plan_id):
            return
        schedule = [(n, i.due_date, i.amount) for n, i in enumerate(data.installments, 1)]
        try:
            validate_schedule(schedule)
        except LedgerError as exc:
            raise PermanentError(str(exc).replace("schedule.", "installments.")) from None
        if await book.has_active_plan(uow.session, data.account_id):
            raise PermanentError("account_id: already has an active plan")
        await self.evaluate(uow, [data.account_id])  # freeze an up-to-date count
        standing = await evaluation.state(uow.session, self._clock.now(), data.account_id)
        assert standing is not None  # the account is locked above
        now = self._clock.now()
        await book.insert_plan(
            uow.session,
            book.NewPlan(data.plan_id, data.account_id, data.kind, data.hardship, data.source),
            schedule,
            now,
        )
        await book.pause(uow.session, data.account_id, standing.dpd, standing.today)
        self._publish(
            uow,
            account.customer_id,
            data.account_id,
            PlanActivated(
                account_id=data.account_id,
                customer_id=account.customer_id,
                plan_id=data.plan_id,
                kind=data.kind,
                installments=data.installments,
                hardship=data.hardship,
            ),
        )

    async def record_promise(self, uow: UnitOfWork, data: PromiseMade, event_id: str) -> Touched:
        """A promise without its own id is known by the event that announced it."""
        account = await self._lock_account(uow, data.account_id, "promise")
        if data.currency is not None and data.currency != account.currency:
            raise PermanentError("currency: does not match the account's currency")
        if data.amount <= 0:
            raise PermanentError("amount: must be positive")
        await book.insert_promise(
            uow.session,
            data.promise_id or event_id,
            data.account_id,
            data.amount,
            data.due_date,
            self._clock.now(),
        )
        return Touched.of([data.account_id])  # payments may have arrived first

    # --- reads ---------------------------------------------------------------------------------

    async def state(self, uow: UnitOfWork, account_id: str) -> StateRow | None:
        return await evaluation.state(uow.session, self._clock.now(), account_id)

    async def reached(self, instant: datetime, patience: float) -> bool:
        """Whether the clock is at or past ``instant`` with its move applied, waiting up to
        ``patience`` seconds for it (a move in progress, a restart still catching up)."""
        if instant - self._clock.now() > REACH:
            return False  # not the move in progress or the next one: no reason to wait
        loop = asyncio.get_running_loop()
        deadline = loop.time() + patience
        while self._clock.now() < instant or getattr(self._clock, "busy", False):
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def standings(self, uow: UnitOfWork, account_ids: Sequence[str]) -> list[StateRow]:
        return await evaluation.standings(uow.session, self._clock.now(), account_ids)

    async def roll_rates(
        self,
        uow: UnitOfWork,
        as_of: datetime | None,
        step_days: int,
        periods: int,
        horizon_days: int,
    ) -> dict[str, Any]:
        """The roll-rate forecast from ``as_of`` (default now) with its back-test; what is
        expected to be recovered when it is made as of now; and, once the horizon has passed,
        what happened."""
        now = self._clock.now()
        at = min(as_of or now, now)
        bounds = rollrate.boundaries(at, step_days, periods)
        counts = await rollrate_rows.transitions(uow.session, bounds)
        made = rollrate.forecast(counts, bounds, step_days, horizon_days)
        out: dict[str, Any] = dataclasses.asdict(made)
        out["expected_recovery"] = None
        if at == now:
            overdue = await rollrate_rows.delinquent_overdue(uow.session)
            out["expected_recovery"] = {
                "accounts": round(
                    sum(made.now[b] * made.cure_probability[b] for b in made.cure_probability), 2
                ),
                # money as decimal strings, as every other amount the ledger serves
                "overdue": {
                    currency: str(amount)
                    for currency, amount in rollrate.expected_recovery(
                        overdue, made.cure_probability
                    ).items()
                },
            }
        out["actual"] = None
        horizon = at + timedelta(days=horizon_days)
        if horizon <= now:
            then = await rollrate_rows.transitions(uow.session, [at, horizon])
            out["actual"] = rollrate.at_end(then, 0)
        return out

    # --- the settle step and delinquency ------------------------------------------------------

    async def settle(self, uow: UnitOfWork, touched: Touched) -> None:
        """Re-evaluate every account the transaction touched, in one pass; then announce its
        payments and reversals with the overdue amounts and balances that pass left."""
        await self.evaluate(uow, list(touched.accounts))
        receipts = [r for r in touched.receipts if isinstance(r, PaymentPosted | PaymentReversed)]
        if receipts:
            await self._announce_receipts(uow, receipts)

    async def evaluate(self, uow: UnitOfWork, accounts: Sequence[str] | None = None) -> int:
        """Bring days past due, buckets, missed instalments, plans and promises up to the clock,
        for some accounts or all of them; publishes what changed. Returns how many changed."""
        now = self._clock.now()
        plans = await evaluation.settle_plans(uow.session, now, accounts)
        await self._announce_settled(uow, plans, PLAN_EVENTS, "plan_id")
        changed = 0
        # Every account due for review, a chunk at a time: each chunk is one set-based statement,
        # and a daily pass reads only the accounts whose standing can move. A chunk's events are
        # built while PostgreSQL evaluates the next: the two took about as long as each other
        # one after the other, and they need no more than the one connection to overlap.
        chunks = (
            1
            if accounts is not None
            else await evaluation.review_chunks(uow.session, now, self._review_chunk)
        )
        done: list[Evaluated] = []
        flags = ActiveFlags()
        for chunk in range(chunks):
            evaluating = asyncio.ensure_future(
                evaluation.evaluate(uow.session, now, accounts, chunk)
            )
            try:
                changed += await self._announce(uow, done, flags)
                rows = await evaluating
            finally:
                if not evaluating.done():
                    evaluating.cancel()
                    await asyncio.gather(evaluating, return_exceptions=True)
            await uow.flush_events()
            flags = await self._active_flags(uow, {r.customer_id for r in rows})
            done = rows
        changed += await self._announce(uow, done, flags)
        await uow.flush_events()
        promises = await evaluation.settle_promises(uow.session, now, accounts)
        await self._announce_settled(uow, promises, PROMISE_EVENTS, "promise_id")
        return changed + len(plans) + len(promises)

    async def _announce_settled(
        self,
        uow: UnitOfWork,
        rows: Sequence[Settled],
        outcomes: Mapping[str, type[AccountEvent]],
        id_field: str,
    ) -> None:
        """Events for settled plans or promises: the row's status picks the event type."""
        flags = await self._active_flags(uow, {r.customer_id for r in rows})
        for row in rows:
            self._publish(
                uow,
                row.customer_id,
                row.account_id,
                outcomes[row.status](
                    account_id=row.account_id,
                    customer_id=row.customer_id,
                    flags=flags.of(row.customer_id, row.account_id),
                    **{id_field: row.id},
                ),
            )

    async def _announce(
        self, uow: UnitOfWork, rows: Sequence[Evaluated], flags: ActiveFlags
    ) -> int:
        """Events for one chunk of evaluated rows; returns how many accounts changed. Touches
        no connection, and hands the loop back every few hundred rows, so that a statement
        sent just before (the next chunk's) goes on in PostgreSQL meanwhile."""
        for start in range(0, len(rows), ANNOUNCE_SLICE):
            await asyncio.sleep(0)  # the first lets the next chunk's statement be sent
            for row in rows[start : start + ANNOUNCE_SLICE]:
                active = flags.of(row.customer_id, row.account_id)
                for event in announcements(row, active):
                    self._publish(uow, row.customer_id, row.account_id, event)
        return sum(1 for r in rows if r.kind == "changed")

    async def _announce_receipts(
        self, uow: UnitOfWork, receipts: Sequence[PaymentPosted | PaymentReversed]
    ) -> None:
        found = await evaluation.receipts(
            uow.session, self._clock.now(), sorted({r.payment_id for r in receipts})
        )
        for receipt in receipts:
            row = found[receipt.payment_id]
            self._publish(uow, row.customer_id, row.account_id, receipt_event(row, receipt))

    # --- helpers -------------------------------------------------------------------------------

    def _publish(self, uow: UnitOfWork, customer_id: str, account_id: str, data: Payload) -> None:
        now = self._clock.now()
        uow.publish(new_event(data, source=SOURCE, key=customer_id, time=now, subject=account_id))

    async def _lock_account(self, uow: UnitOfWork, account_id: str, what: str) -> book.AccountRow:
        row = (await book.lock_accounts(uow.session, [account_id])).get(account_id)
        if row is None:
            raise PermanentError(f"account_id: {what} for an unknown account")
        return row

    async def _active_flags(self, uow: UnitOfWork, customers: set[str]) -> ActiveFlags:
        flags = ActiveFlags()
        if customers:
            for row in await evaluation.active_flags(uow.session, sorted(customers)):
                if row.active:
                    flags.add(row.customer_id, row.account_id, row.flag)
        return flags


def handlers(ledger: Ledger) -> Handlers:
    """What the ledger does with each payload, for the Kafka consumer and ``POST /v1/events``."""
    registry = Handlers()
    registry.runs(CustomerUpserted, ledger.upsert_customers)
    registry.runs(LoanOpened, ledger.open_loans)
    registry.runs(PaymentPosted, ledger.post_payments)

    async def promise_made(uow: UnitOfWork, data: PromiseMade, event: CloudEvent) -> Touched:
        return await ledger.record_promise(uow, data, event.id)

    registry.on(PaymentReversed, ledger.reverse_payment)
    registry.on(AccountFlagged, ledger.flag)
    registry.on(PlanAgreed, ledger.agree_plan)
    registry.each(PromiseMade, promise_made)
    return registry
