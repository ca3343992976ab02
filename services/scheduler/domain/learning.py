"""Learning from what happened: the event history replayed in time order into decision points
(a missed payment, a move to a worse bucket), each with the score inputs known at that instant
and the outcome that followed (a payment of at least what was overdue within N days); the contact
table (right-party and payment rates by segment, channel and local hour); and the measures a
model is judged by. Pure: events in, dataclasses out; the fitting itself is in
``services/scheduler/models``.

No leakage by construction: a decision point's inputs are taken from the replay's state when
its own event is applied, before any later event; the outcome is read only from later events.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from services.scheduler.domain.scoring import ContactRate, Inputs, Model, band_of
from services.scheduler.domain.strategy import BUCKETS
from shared import topics
from shared.envelope import CloudEvent
from shared.events import (
    FAILURES,
    RIGHT_PARTY,
    AccountCured,
    ContactAttempted,
    CustomerUpserted,
    DelinquencyChanged,
    LoanOpened,
    PaymentMissed,
    PaymentReceived,
    PromiseBroken,
    PromiseKept,
)

# what the replay learns from: the customers and loans, the ledger's news, contact outcomes
TOPICS = (topics.CORE_BANKING, topics.LEDGER, topics.NOTIFIER)
MESSAGES = ("sms", "email", "letter")  # a message reaches the customer when it is delivered


@dataclass(frozen=True)
class DecisionPoint:
    account_id: str
    at: datetime
    trigger: str  # payment.missed or delinquency.changed
    inputs: Inputs
    overdue: Decimal  # what a payment must reach for the outcome to be "paid"
    credit_score: float | None
    paid: bool | None = None  # None: the outcome window had not closed when the history ends


@dataclass
class _Contact:
    channel: str
    at: datetime
    outcome: str
    in_arrears: bool  # something was overdue when it was made (a collection contact)


@dataclass
class _Account:
    customer_id: str = ""
    payments: list[datetime] = field(default_factory=list)
    broken: int = 0
    kept: int = 0
    missed: int = 0  # payment.missed events: the scheduler's times_late
    contacts: dict[str, _Contact] = field(default_factory=dict)
    overdue: Decimal = Decimal(0)


@dataclass
class _Customer:
    credit_score: float | None = None
    timezone: str | None = None


def _instant(event: CloudEvent) -> datetime:
    data = event.data
    if isinstance(data, ContactAttempted):
        return data.attempted_at
    if isinstance(data, PaymentReceived) and data.posted_at is not None:
        return data.posted_at
    return event.time


def ordered(events: Iterable[CloudEvent]) -> list[tuple[datetime, CloudEvent]]:
    """The events by the instant they tell of, then by topic, keeping the order they came in
    within a topic (one customer's events are in order in their partition): however partitions
    were interleaved in the reading, one account's story replays the same."""
    return sorted(((_instant(e), e) for e in events), key=lambda pair: (pair[0], pair[1].topic))


def _worse(new: str, old: str) -> bool:
    rank = {b: n for n, b in enumerate(BUCKETS)}
    return rank.get(new, 0) > rank.get(old, 0)


def _inputs(
    acct: _Account, customer: _Customer, at: datetime, dpd: int, overdue: Decimal
) -> Inputs:
    since = at - timedelta(days=90)
    attempted = list(acct.contacts.values())
    last = max(attempted, key=lambda c: c.at, default=None)
    hour = None
    if last is not None:
        hour = last.at.astimezone(ZoneInfo(customer.timezone or "UTC")).hour
    return Inputs(
        credit_score=customer.credit_score,
        days_past_due=dpd,
        payments_90d=sum(1 for p in acct.payments if p >= since),
        broken_promises=acct.broken,
        kept_promises=acct.kept,
        right_party_contacts=sum(1 for c in attempted if c.outcome in RIGHT_PARTY),
        failed_contacts=sum(1 for c in attempted if c.outcome in FAILURES),
        overdue=overdue,
        times_late=acct.missed,
        contacts=len(attempted),
        last_channel=last.channel if last else None,
        last_local_hour=hour,
    )


@dataclass(frozen=True)
class History:
    decisions: list[DecisionPoint]
    # (account, customer, channel, at, outcome) of each contact made while the account was in
    # arrears (a reminder before a due date is no collection contact)
    contacts: list[tuple[str, str, str, datetime, str]]
    payments: dict[str, list[tuple[datetime, Decimal]]]
    credit: dict[str, float | None]  # customer -> credit score
    timezones: dict[str, str | None]
    customer_of: dict[str, str]
    end: datetime | None


def replay(
    events: Iterable[CloudEvent], outcome_days: int, until: datetime | None = None
) -> History:
    """The decision points of ``events`` with their inputs and outcomes; ``until``: the instant
    the history was read up to (default: its latest event), by which outcomes are known."""
    accounts: dict[str, _Account] = defaultdict(_Account)
    customers: dict[str, _Customer] = defaultdict(_Customer)
    points: list[DecisionPoint] = []
    latest: dict[str, int] = {}  # account -> index of its latest decision point
    buckets: dict[str, str] = {}
    payments: dict[str, list[tuple[datetime, Decimal]]] = defaultdict(list)
    end = None
    for at, event in ordered(events):
        end = at if end is None or at > end else end
        data = event.data
        if isinstance(data, CustomerUpserted):
            c = customers[data.customer_id]
            c.credit_score = data.credit_score
            c.timezone = data.timezone
            continue
        account_id = getattr(data, "account_id", None)
        if not account_id:
            continue
        acct = accounts[account_id]
        customer_id = getattr(data, "customer_id", None)
        if customer_id:
            acct.customer_id = customer_id
        customer = customers[acct.customer_id]
        if isinstance(data, LoanOpened):
            continue
        if isinstance(data, PaymentMissed | DelinquencyChanged):
            before = buckets.get(account_id, "current")
            buckets[account_id] = data.bucket
            decides = isinstance(data, PaymentMissed) or (
                data.bucket != "current" and _worse(data.bucket, before)
            )
            if isinstance(data, PaymentMissed):
                acct.missed += 1  # counted before the decision, as the scheduler counts it
            acct.overdue = Decimal(data.total_overdue)
            if decides:
                overdue = acct.overdue
                point = DecisionPoint(
                    account_id,
                    at,
                    event.type,
                    _inputs(acct, customer, at, data.days_past_due, overdue),
                    overdue,
                    customer.credit_score,
                )
                # one decision per account and instant (the scheduler scores an account once
                # for a batch): a second miss at the same instant replaces the first
                same = latest.get(account_id)
                if same is not None and points[same].at == at:
                    points[same] = point
                else:
                    latest[account_id] = len(points)
                    points.append(point)
        elif isinstance(data, PaymentReceived):
            acct.payments.append(at)
            payments[account_id].append((at, Decimal(data.amount)))
            acct.overdue = Decimal(data.total_overdue)
            if Decimal(data.total_overdue) == 0:
                buckets[account_id] = "current"
        elif isinstance(data, AccountCured):
            acct.overdue = Decimal(0)
        elif isinstance(data, PromiseKept):
            acct.kept += 1
        elif isinstance(data, PromiseBroken):
            acct.broken += 1
        elif isinstance(data, ContactAttempted):
            # the latest attempt's outcome and time, as the scheduler's contact log keeps them
            known = acct.contacts.get(data.contact_id)
            in_arrears = known.in_arrears if known else acct.overdue > 0
            acct.contacts[data.contact_id] = _Contact(
                data.channel, at, str(data.outcome), in_arrears
            )
    end = until or end
    labelled = [_label(p, payments.get(p.account_id, []), outcome_days, end) for p in points]
    contacts = [
        (a, acct.customer_id, c.channel, c.at, c.outcome)
        for a, acct in accounts.items()
        for c in acct.contacts.values()
        if c.in_arrears
    ]
    return History(
        labelled,
        sorted(contacts, key=lambda row: (row[3], row[0])),
        payments,
        {k: v.credit_score for k, v in customers.items()},
        {k: v.timezone for k, v in customers.items()},
        {a: acct.customer_id for a, acct in accounts.items()},
        end,
    )


def paid_within(
    payments: Sequence[tuple[datetime, Decimal]], at: datetime, days: int, amount: Decimal
) -> bool:
    times = [p[0] for p in payments]
    lo = bisect.bisect_right(times, at)
    hi = bisect.bisect_right(times, at + timedelta(days=days))
    return sum((p[1] for p in payments[lo:hi]), Decimal(0)) >= amount


def _label(
    point: DecisionPoint,
    payments: Sequence[tuple[datetime, Decimal]],
    days: int,
    end: datetime | None,
) -> DecisionPoint:
    if end is None or point.at + timedelta(days=days) > end:
        return point
    return DecisionPoint(
        point.account_id,
        point.at,
        point.trigger,
        point.inputs,
        point.overdue,
        point.credit_score,
        paid_within(payments, point.at, days, point.overdue),
    )


# --- the contact table -------------------------------------------------------------------------


def contact_table(history: History, model: Model, outcome_days: int) -> list[ContactRate]:
    """Per segment, channel and local hour: how many contacts, the share that reached the
    customer (a conversation for a call or visit, a delivery for a message), the share followed
    by a payment within ``outcome_days``. Only contacts whose payment window closed count."""
    tally: dict[tuple[str, str, int], list[int]] = defaultdict(lambda: [0, 0, 0])
    end = history.end
    for account_id, customer_id, channel, at, outcome in history.contacts:
        if end is None or at + timedelta(days=outcome_days) > end:
            continue
        zone = ZoneInfo(history.timezones.get(customer_id) or "UTC")
        key = (model.segment_of(history.credit.get(customer_id)), channel, at.astimezone(zone).hour)
        row = tally[key]
        row[0] += 1
        reached = outcome == "delivered" if channel in MESSAGES else outcome in RIGHT_PARTY
        row[1] += int(reached)
        after = [(t, a) for t, a in history.payments.get(account_id, [])]
        row[2] += int(paid_within(after, at, outcome_days, Decimal("0.01")))
    return [
        ContactRate(
            segment=s,
            channel=c,
            hour=h,
            contacts=n,
            right_party_rate=round(r / n, 4),
            payment_rate=round(p / n, 4),
        )
        for (s, c, h), (n, r, p) in sorted(tally.items())
    ]


# --- measures ---------------------------------------------------------------------------------


def auc_se(value: float, positives: int, negatives: int) -> float:
    """Hanley and McNeil's (1982) standard error of an AUC from its sample sizes."""
    q1, q2 = value / (2 - value), 2 * value * value / (1 + value)
    var = (
        value * (1 - value)
        + (positives - 1) * (q1 - value * value)
        + (negatives - 1) * (q2 - value * value)
    ) / (positives * negatives)
    return float(var**0.5)


def calibration(
    labels: Sequence[bool], scores: Sequence[float], model: Model
) -> list[dict[str, object]]:
    """By score band: how many, the mean predicted and the observed rate of paying."""
    groups: dict[str, list[tuple[bool, float]]] = defaultdict(list)
    for y, s in zip(labels, scores, strict=True):
        groups[band_of(s, model)].append((y, s))
    return [
        {
            "band": band,
            "decisions": len(rows),
            "predicted": round(sum(s for _, s in rows) / len(rows), 4),
            "observed": round(sum(1 for y, _ in rows if y) / len(rows), 4),
        }
        for band, rows in sorted(groups.items(), key=lambda kv: -model.bands[kv[0]])
    ]
