"""The bureau's event handlers: keep each account's reporting state from the other services'
events. Thin: what an event means for the account (a paid-off account's rating is that of the
bucket it leaves, a cure keeps the ledger's date of first delinquency only when paid off) is
decided here and in ``domain/figures.py``; the repository stores it. Each takes the unit of work
it runs in and never commits."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from decimal import Decimal

from services.bureau.domain.figures import rating_of_bucket
from services.bureau.repository import state
from services.bureau.repository.state import NextDue
from shared.clock import Clock
from shared.consumer import Handlers
from shared.db import UnitOfWork
from shared.envelope import CloudEvent
from shared.events import (
    RIGHT_PARTY,
    AccountCured,
    AccountFlagged,
    ContactAttempted,
    CustomerUpserted,
    DelinquencyChanged,
    DisputeOpened,
    DisputeResolved,
    LoanOpened,
    NoticeDelivered,
    NoticeReturned,
    Outcome,
    PaymentMissed,
    PaymentReceived,
    PaymentReversalApplied,
    PlanActivated,
    PlanBroken,
    PlanCompleted,
)
from shared.events import Standing as StandingEvent

WRITTEN = {"letter", "email"}  # a delivered one is a mailed or electronic communication


def next_due(data: StandingEvent | None) -> NextDue:
    """The next instalment an event carries; an event without the ledger's balance (an older
    producer's) leaves what was known."""
    if data is None or data.balance is None:
        return NextDue(False, None, None)
    return NextDue(True, data.next_due_date, data.next_due_amount)


class Bureau:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock

    async def upsert_customers(
        self, uow: UnitOfWork, customers: Sequence[CustomerUpserted]
    ) -> None:
        latest = list({c.customer_id: c for c in customers}.values())
        await state.upsert_customers(uow.session, latest, self._clock.now())

    async def flag(self, uow: UnitOfWork, data: AccountFlagged, customer_id: str) -> None:
        await state.set_flag(uow.session, customer_id, data.account_id, data.flag, data.active)

    async def standing(
        self,
        uow: UnitOfWork,
        account_id: str,
        customer_id: str,
        currency: str,
        bucket: str,
        dpd: int,
        overdue: Decimal,
        due: date | None = None,
        balance: Decimal | None = None,
        first_delinquency: date | None = None,
        upcoming: NextDue | None = None,
    ) -> None:
        """A missed instalment or a bucket change. The date of first delinquency is the
        ledger's when its event carries one, else the first missed due date since current."""
        now = self._clock.now()
        await state.set_standing(
            uow.session,
            account_id,
            customer_id,
            now,
            currency=currency,
            bucket=bucket,
            dpd=dpd,
            overdue=overdue,
            due=due or now.date(),
            balance=balance,
            first_delinquency=first_delinquency,
            next_due=upcoming or next_due(None),
        )

    async def payment_missed(self, uow: UnitOfWork, data: PaymentMissed) -> None:
        await self.standing(
            uow,
            data.account_id,
            data.customer_id,
            data.currency,
            data.bucket,
            data.days_past_due,
            data.total_overdue,
            data.due_date,
            data.balance,
            data.first_delinquency,
            next_due(data),
        )

    async def delinquency_changed(self, uow: UnitOfWork, data: DelinquencyChanged) -> None:
        await self.standing(
            uow,
            data.account_id,
            data.customer_id,
            data.currency,
            data.bucket,
            data.days_past_due,
            data.total_overdue,
            balance=data.balance,
            first_delinquency=data.first_delinquency,
            upcoming=next_due(data),
        )
        if data.bucket == "current" and data.balance == 0:
            # Paid off: the rating it had when paid is that of the bucket it leaves (the cure
            # that follows finds it current already).
            await state.set_closed_rating(
                uow.session,
                data.account_id,
                data.customer_id,
                rating_of_bucket(data.previous_bucket),
                self._clock.now(),
            )

    async def loans_opened(self, uow: UnitOfWork, loans: Sequence[LoanOpened]) -> None:
        """A run of new loans in one statement (a loan seen twice: the last one stands)."""
        last = {loan.account_id: loan for loan in loans}
        await state.open_loans(uow.session, list(last.values()), self._clock.now())

    async def payments_received(self, uow: UnitOfWork, payments: Sequence[PaymentReceived]) -> None:
        """A run of payments in three statements; per account the last one's amounts stand,
        and each payment is kept (for the period's actual payment and the last payment)."""
        last = {p.account_id: p for p in payments}
        await state.record_payments(uow.session, list(last.values()), payments, self._clock.now())

    async def reversal_applied(self, uow: UnitOfWork, data: PaymentReversalApplied) -> None:
        await state.record_reversal(
            uow.session,
            data.account_id,
            data.customer_id,
            self._clock.now(),
            payment_id=data.payment_id,
            reversed_at=data.reversed_at,
            overdue=data.total_overdue,
            balance=data.balance,
            next_due=next_due(data),
        )

    async def cured(self, uow: UnitOfWork, data: AccountCured) -> None:
        """Back to current. Paid off (a zero balance): the rating it had when paid is that of
        the bucket it leaves, and the ledger keeps its date of first delinquency."""
        bucket = await state.bucket_of(uow.session, data.account_id)
        paid_off = data.balance == 0
        await state.set_cured(
            uow.session,
            data.account_id,
            data.customer_id,
            self._clock.now(),
            paid_off=paid_off,
            first_delinquency=data.first_delinquency if paid_off else None,
            balance=data.balance,
            rating=rating_of_bucket(bucket or "current"),
            next_due=next_due(data),
        )

    async def plan(
        self,
        uow: UnitOfWork,
        account_id: str,
        customer_id: str,
        active: bool,
        activated: PlanActivated | None = None,
    ) -> None:
        installments = None
        if activated is not None and activated.installments:
            installments = [(i.due_date, i.amount) for i in activated.installments]
        await state.set_plan(
            uow.session,
            account_id,
            customer_id,
            self._clock.now(),
            active,
            installments,
            hardship=activated.hardship if activated is not None else False,
            kind=activated.kind if activated is not None else None,
        )

    async def notice(
        self, uow: UnitOfWork, customer_id: str, data: NoticeDelivered | NoticeReturned
    ) -> None:
        now = self._clock.now()
        if isinstance(data, NoticeReturned):
            await state.notice_returned(
                uow.session, data.account_id, customer_id, data.returned_at or now, now
            )
            return
        await state.notice_sent(
            uow.session,
            data.account_id,
            customer_id,
            data.delivered_at or now,
            now,
            pre_notice=data.notice == "bureau_pre_notice",
        )

    async def contact_attempted(
        self, uow: UnitOfWork, customer_id: str, data: ContactAttempted
    ) -> None:
        now, at = self._clock.now(), data.attempted_at
        if data.outcome in RIGHT_PARTY:
            await state.conversation(uow.session, data.account_id, customer_id, at, now)
        elif data.outcome in (Outcome.DELIVERED, Outcome.SENT) and data.channel in WRITTEN:
            await state.notice_sent(uow.session, data.account_id, customer_id, at, now)
        elif data.outcome == Outcome.RETURNED:
            await state.notice_returned(uow.session, data.account_id, customer_id, at, now)

    async def dispute(
        self, uow: UnitOfWork, account_id: str, customer_id: str, status: str
    ) -> None:
        await state.set_dispute(uow.session, account_id, customer_id, status, self._clock.now())


def handlers(bureau: Bureau) -> Handlers:
    """What the bureau does with each payload it reads."""
    registry = Handlers()
    registry.runs(CustomerUpserted, bureau.upsert_customers)
    registry.runs(LoanOpened, bureau.loans_opened)
    registry.runs(PaymentReceived, bureau.payments_received)
    registry.on(PaymentMissed, bureau.payment_missed)
    registry.on(DelinquencyChanged, bureau.delinquency_changed)
    registry.on(AccountCured, bureau.cured)
    registry.on(PaymentReversalApplied, bureau.reversal_applied)

    async def flagged(uow: UnitOfWork, data: AccountFlagged, event: CloudEvent) -> None:
        await bureau.flag(uow, data, data.customer_id or event.key)

    async def activated(uow: UnitOfWork, data: PlanActivated, _: CloudEvent) -> None:
        await bureau.plan(uow, data.account_id, data.customer_id, True, data)

    async def ended(uow: UnitOfWork, data: PlanBroken | PlanCompleted, _: CloudEvent) -> None:
        await bureau.plan(uow, data.account_id, data.customer_id, False, None)

    async def notice(
        uow: UnitOfWork, data: NoticeDelivered | NoticeReturned, event: CloudEvent
    ) -> None:
        await bureau.notice(uow, event.key, data)

    async def attempted(uow: UnitOfWork, data: ContactAttempted, event: CloudEvent) -> None:
        await bureau.contact_attempted(uow, event.key, data)

    async def dispute_opened(uow: UnitOfWork, data: DisputeOpened, event: CloudEvent) -> None:
        await bureau.dispute(uow, data.account_id, event.key, "open")

    async def dispute_resolved(uow: UnitOfWork, data: DisputeResolved, event: CloudEvent) -> None:
        status = "resolved_disagrees" if data.consumer_disagrees else "resolved"
        await bureau.dispute(uow, data.account_id, event.key, status)

    registry.each(AccountFlagged, flagged)
    registry.each(PlanActivated, activated)
    registry.each(PlanBroken, ended)
    registry.each(PlanCompleted, ended)
    registry.each(NoticeDelivered, notice)
    registry.each(NoticeReturned, notice)
    registry.each(ContactAttempted, attempted)
    registry.each(DisputeOpened, dispute_opened)
    registry.each(DisputeResolved, dispute_resolved)
    return registry
