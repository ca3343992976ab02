"""Event histories whose true response is known: the campaign simulator's customers
(``tools/simulator/params.yaml``: segment, silence, channel and local hour decide who pays)
under a fixed contact schedule, written as the topics would carry them. Pure and seeded: the
same seed, the same history, without a running system."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from services.scheduler.domain.strategy import BUCKETS
from shared.envelope import CloudEvent, new_event
from shared.events import (
    ContactAttempted,
    CustomerUpserted,
    DelinquencyChanged,
    Payload,
    PaymentMissed,
    PaymentReceived,
    PromiseBroken,
    PromiseKept,
)
from tools.simulator import model as sim

START = datetime(2026, 9, 1, tzinfo=UTC)
# (day after the miss, channel, local hour): a fixed schedule, with hours spread so that the
# simulator's hour effect is there to learn
SCHEDULE = (
    (0, "sms", (9, 13, 20)),
    (1, "voice", (9, 14, 19)),
    (4, "email", (10, 15, 21)),
    (6, "voice", (8, 13, 20)),
    (10, "letter", (11,)),
)


def _bucket(dpd: int) -> str:
    if dpd <= 0:
        return "current"
    if dpd < 30:
        return "1-29"
    return BUCKETS[min(len(BUCKETS) - 1, 1 + dpd // 30)]


class _Writer:
    def __init__(self) -> None:
        self.events: list[CloudEvent] = []
        self._ids = itertools.count(1)

    def add(self, at: datetime, data: Payload, key: str) -> None:
        self.events.append(
            new_event(
                data, source="/test/history", key=key, time=at, event_id=f"h{next(self._ids)}"
            )
        )


def history(customers: int, seed: int, months: int = 4) -> list[CloudEvent]:
    """``customers`` simulated customers over ``months`` months from :data:`START`: each
    instalment a customer misses starts the schedule above; reactions are the simulator's."""
    params = sim.Params.load()
    out = _Writer()
    for n in range(1, customers + 1):
        c = sim.make_customer(params, seed, n)
        zone = c.zone
        out.add(
            START,
            CustomerUpserted(
                customer_id=c.customer_id,
                full_name="Test Customer",
                national_id="0000",
                timezone=c.timezone,
                locale=c.locale,
                country=c.country,
                credit_score=c.score,
            ),
            c.customer_id,
        )
        overdue = Decimal(0)
        missed_since: date | None = None
        for month in range(months):
            due = (START + timedelta(days=30 * month + (n % 28))).date()
            amount = Decimal(int(c.principal) // 12 or 100)
            r = sim.rng(seed, "history-miss", n, month)
            misses = r.random() < params.miss_in_campaign[c.segment] * 2 or overdue > 0
            if not misses:
                continue
            missed_at = datetime.combine(due + timedelta(days=3), time(2), UTC)
            overdue += amount
            missed_since = missed_since or due
            dpd = (missed_at.date() - missed_since).days
            out.add(
                missed_at,
                PaymentMissed(
                    account_id=c.account_id,
                    customer_id=c.customer_id,
                    installment_no=month + 1,
                    due_date=due,
                    amount_due=amount,
                    total_overdue=overdue,
                    currency=c.currency,
                    days_past_due=dpd,
                    bucket=_bucket(dpd),
                ),
                c.customer_id,
            )
            paid_at: datetime | None = None
            for step, (day, channel, hours) in enumerate(SCHEDULE):
                local_day = (missed_at + timedelta(days=day)).astimezone(zone).date()
                hour = sim.rng(seed, "history-hour", n, month, step).choice(hours)
                at = datetime.combine(local_day, time(hour, 5), zone).astimezone(UTC)
                if paid_at is not None and paid_at <= at:
                    break
                if day == 10 and dpd + 10 >= 30 and _bucket(dpd) == "1-29":
                    moved = _bucket(dpd + 27)
                    out.add(
                        missed_at + timedelta(days=27 - min(dpd, 27)),
                        DelinquencyChanged(
                            account_id=c.account_id,
                            customer_id=c.customer_id,
                            previous_bucket="1-29",
                            bucket=moved,
                            days_past_due=dpd + 27,
                            total_overdue=overdue,
                            currency=c.currency,
                        ),
                        c.customer_id,
                    )
                key = f"{n}-{month}-{step}"
                reaction = sim.react(
                    params, seed, c, contact_key=key, channel=channel, offer=False, at=at
                )
                out.add(
                    at,
                    ContactAttempted(
                        contact_id=f"K{key}",
                        account_id=c.account_id,
                        customer_id=c.customer_id,
                        channel=channel,
                        outcome=reaction.status,
                        attempted_at=at,
                    ),
                    c.customer_id,
                )
                pays = None
                if reaction.pay_after_days is not None:
                    pays = at + timedelta(days=reaction.pay_after_days, hours=2)
                elif reaction.promise_days is not None:
                    promised = at + timedelta(days=reaction.promise_days)
                    kind = PromiseKept if reaction.keeps_promise else PromiseBroken
                    out.add(
                        promised + timedelta(hours=6),
                        kind(account_id=c.account_id, customer_id=c.customer_id),
                        c.customer_id,
                    )
                    if reaction.keeps_promise:
                        pays = promised
                if pays is not None and (paid_at is None or pays < paid_at):
                    paid_at = pays
            if paid_at is not None and not c.silent:
                out.add(
                    paid_at,
                    PaymentReceived(
                        account_id=c.account_id,
                        customer_id=c.customer_id,
                        payment_id=f"P{n}-{month}",
                        amount=overdue,
                        currency=c.currency,
                        total_overdue=Decimal(0),
                        posted_at=paid_at,
                    ),
                    c.customer_id,
                )
                overdue, missed_since = Decimal(0), None
    return sorted(out.events, key=lambda e: e.time)
