"""Typed payloads of every event in the design contract, and the registry that maps each
``ce_type`` to its topic and model.

Payloads are tolerant readers of new optional fields (``extra="ignore"``) but strict about the
fields they know: money is a decimal *string* with an ISO 4217 currency, ids are non-empty
bounded strings, dates stay within a plausible range.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    field_validator,
)

from shared import topics

# --- field types -----------------------------------------------------------------------------


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold U+0000; refuse it at the door rather than fail in the database.
    if "\x00" in value:
        raise ValueError("must not contain a NUL character")
    return value


Id = Annotated[
    str,
    StringConstraints(min_length=1, max_length=128, strip_whitespace=True),
    AfterValidator(_no_nul),
]
Text = Annotated[str, StringConstraints(max_length=2000), AfterValidator(_no_nul)]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
MAX_MONEY = Decimal("1e15")


def _money_from_string(value: Any) -> Any:
    # A JSON number goes through a binary float on many producers; the contract asks for a string
    # so that no cent is ever rounded away in transit.
    if isinstance(value, Decimal):
        return value
    if not isinstance(value, str):
        raise ValueError('money must be a decimal string such as "1234.56"')
    return value


def _money_in_range(value: Decimal) -> Decimal:
    if not value.is_finite():
        raise ValueError("money must be a finite number")
    if abs(value) >= MAX_MONEY:
        raise ValueError("money is out of range")
    if value.as_tuple().exponent < -4:  # type: ignore[operator]
        raise ValueError("money has more than 4 decimal places")
    return value


Money = Annotated[
    Decimal,
    BeforeValidator(_money_from_string),
    AfterValidator(_money_in_range),
    PlainSerializer(lambda v: format(v, "f"), return_type=str, when_used="json"),
]


def _plausible_date(value: date) -> date:
    if not date(1900, 1, 1) <= value <= date(2199, 12, 31):
        raise ValueError("date is outside 1900-01-01..2199-12-31")
    return value


BusinessDate = Annotated[date, AfterValidator(_plausible_date)]


def _plausible_instant(value: Any) -> Any:
    if not 1970 <= value.year <= 2199:
        raise ValueError("timestamp is outside 1970..2199")
    return value


Instant = Annotated[AwareDatetime, AfterValidator(_plausible_instant)]

Channel = Literal["sms", "email", "voice", "letter", "field_visit"]


class Outcome(StrEnum):
    """What came of one contact attempt (``contact.attempted``'s outcome): the one vocabulary
    every service reads. Its classes are the sets below."""

    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"
    BOUNCED = "bounced"
    RETURNED = "returned"
    EXPIRED = "expired"
    NO_ANSWER = "no_answer"
    RIGHT_PARTY = "right_party"
    WRONG_PARTY = "wrong_party"
    REFUSED = "refused"
    PROMISE_TO_PAY = "promise_to_pay"
    DISPUTE = "dispute"
    PLAN_ACCEPTED = "plan_accepted"
    HARDSHIP = "hardship"  # the customer said they cannot pay (hardship.reported follows)
    CALLBACK = "callback"  # the customer asked to be called at a time (callback.requested)


# Someone answered the call (a cap that counts conversations counts these).
CONNECTED: frozenset[Outcome] = frozenset(
    {
        Outcome.RIGHT_PARTY,
        Outcome.WRONG_PARTY,
        Outcome.REFUSED,
        Outcome.PROMISE_TO_PAY,
        Outcome.DISPUTE,
        Outcome.PLAN_ACCEPTED,
        Outcome.HARDSHIP,
        Outcome.CALLBACK,
    }
)
# ... and it was the customer: a conversation with the debtor.
RIGHT_PARTY: frozenset[Outcome] = CONNECTED - {Outcome.WRONG_PARTY}
# The attempt reached nobody it was meant for.
FAILURES: frozenset[Outcome] = frozenset(
    {Outcome.FAILED, Outcome.BOUNCED, Outcome.RETURNED, Outcome.NO_ANSWER, Outcome.WRONG_PARTY}
)
# What a partner may report for a call or visit (its webhook's dispositions).
DISPOSITIONS: frozenset[Outcome] = CONNECTED | {Outcome.NO_ANSWER}
Flag = Literal["bankruptcy", "deceased", "fraud", "hardship", "legal_hold"]
HardshipReason = Literal["unemployment", "illness", "disaster", "income_drop", "other"]
OfferKind = Literal["installments", "extension", "settlement"]


class Payload(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, str_max_length=2000)

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul_in_any_text(cls, value: Any) -> Any:
        return _no_nul(value) if isinstance(value, str) else value


@dataclass(frozen=True)
class EventType:
    name: str
    topic: str
    model: type[Payload]


REGISTRY: dict[str, EventType] = {}


def event_type(name: str, topic: str) -> Any:
    def register(model: type[Payload]) -> type[Payload]:
        if name in REGISTRY:
            raise RuntimeError(f"event type {name} registered twice")
        REGISTRY[name] = EventType(name, topic, model)
        model.__event_type__ = name  # type: ignore[attr-defined]
        return model

    return register


def name_of(model: type[Payload]) -> str:
    """The ce_type a payload class is registered under."""
    name: str = getattr(model, "__event_type__", "")
    if not name:
        raise TypeError(f"{model.__name__} is not a registered event payload")
    return name


def type_of(payload: Payload) -> str:
    return name_of(type(payload))


# --- core-banking.events (the input contract) --------------------------------------------------


@event_type("customer.upserted", topics.CORE_BANKING)
class CustomerUpserted(Payload):
    customer_id: Id
    full_name: Text
    national_id: Annotated[str, StringConstraints(max_length=64)]
    birth_date: BusinessDate | None = None
    phone: Annotated[str, StringConstraints(pattern=r"^\+[1-9]\d{6,14}$")] | None = None
    email: (
        Annotated[str, StringConstraints(max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")] | None
    ) = None
    postal_address: Text | None = None
    timezone: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    locale: Annotated[str, StringConstraints(pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")]
    country: Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")]
    credit_score: Annotated[int, Field(ge=0, le=1000)] | None = None


class ScheduledInstallment(Payload):
    installment_no: Annotated[int, Field(ge=1, le=1200)]
    due_date: BusinessDate
    amount: Money


@event_type("loan.opened", topics.CORE_BANKING)
class LoanOpened(Payload):
    account_id: Id
    customer_id: Id
    product: Id
    principal: Money
    currency: Currency
    opened_on: BusinessDate
    schedule: Annotated[list[ScheduledInstallment], Field(min_length=1, max_length=1200)]


@event_type("payment.posted", topics.CORE_BANKING)
class PaymentPosted(Payload):
    account_id: Id
    payment_id: Id
    amount: Money
    currency: Currency
    posted_at: Instant


@event_type("payment.reversed", topics.CORE_BANKING)
class PaymentReversed(Payload):
    account_id: Id
    payment_id: Id
    reason: Text


@event_type("account.flagged", topics.CORE_BANKING)
class AccountFlagged(Payload):
    account_id: Id | None = None
    customer_id: Id | None = None
    flag: Flag
    active: bool


# --- ledger.events -----------------------------------------------------------------------------


class PlanInstallment(Payload):
    due_date: BusinessDate
    amount: Money


class AccountEvent(Payload):
    account_id: Id
    customer_id: Id
    flags: list[Flag] = []  # the account's and customer's active flags when it happened


class Standing(AccountEvent):
    """Project extensions (optional) on the events that move an account's amounts: the whole
    outstanding balance (principal not yet due included), the date of first delinquency the
    ledger keeps, and the next instalment still unpaid with what is unpaid of it (which falls
    overdue on that date without an event: the bureau counts it in when it reconciles)."""

    balance: Money | None = None
    first_delinquency: BusinessDate | None = None
    next_due_date: BusinessDate | None = None
    next_due_amount: Money | None = None


@event_type("payment.missed", topics.LEDGER)
class PaymentMissed(Standing):
    installment_no: int
    due_date: BusinessDate
    amount_due: Money
    total_overdue: Money
    currency: Currency
    days_past_due: int
    bucket: str
    product: Id | None = None  # project extension: lets strategies segment by product


@event_type("payment.received", topics.LEDGER)
class PaymentReceived(Standing):
    payment_id: Id
    amount: Money
    currency: Currency
    total_overdue: Money
    # project extensions (optional): when it was posted, that instant's date in the
    # customer's calendar, and the days past due it left
    days_past_due: int | None = None
    posted_at: Instant | None = None
    posted_on: BusinessDate | None = None


@event_type("payment.reversal_applied", topics.LEDGER)
class PaymentReversalApplied(Standing):
    """The ledger undid a payment upstream reversed (project extension): what it had paid is
    owed again."""

    payment_id: Id
    amount: Money
    currency: Currency
    total_overdue: Money
    posted_at: Instant
    reversed_at: Instant
    days_past_due: int | None = None


@event_type("delinquency.changed", topics.LEDGER)
class DelinquencyChanged(Standing):
    previous_bucket: str
    bucket: str
    days_past_due: int
    total_overdue: Money
    currency: Currency
    product: Id | None = None  # project extension


@event_type("account.cured", topics.LEDGER)
class AccountCured(Standing):
    """A zero ``balance``: paid off; its ``first_delinquency`` is kept when it was paid off
    while behind."""


@event_type("plan.activated", topics.LEDGER)
class PlanActivated(AccountEvent):
    plan_id: Id
    # project extensions (optional): the plan's kind and instalments as agreed, and whether it
    # was agreed under hardship (the bureau reports it with a payment-agreement comment)
    kind: OfferKind | None = None
    installments: list[PlanInstallment] = []
    hardship: bool = False


@event_type("installment.due_soon", topics.LEDGER)
class InstallmentDueSoon(AccountEvent):
    """Once per instalment, N days (per product) before its due date in the customer's
    calendar: for a gentle reminder, never a collection message."""

    installment_no: int
    due_date: BusinessDate
    amount: Money
    days_until_due: Annotated[int, Field(ge=0)]
    # project extensions (optional)
    currency: Currency | None = None
    product: Id | None = None


@event_type("plan.broken", topics.LEDGER)
class PlanBroken(AccountEvent):
    plan_id: Id


@event_type("plan.completed", topics.LEDGER)
class PlanCompleted(AccountEvent):
    plan_id: Id


@event_type("promise.kept", topics.LEDGER)
class PromiseKept(AccountEvent):
    promise_id: Id | None = None


@event_type("promise.broken", topics.LEDGER)
class PromiseBroken(AccountEvent):
    promise_id: Id | None = None


# --- scheduler.events --------------------------------------------------------------------------


class OfferLimits(Payload):
    """How far an offer may be bent when it is accepted (the treatment's negotiation limits):
    a customer, a partner or a collector may choose terms within them, never beyond."""

    max_installments: Annotated[int, Field(ge=2, le=60)] | None = None
    min_settlement_percent: Annotated[Decimal, Field(gt=0, le=100)] | None = None
    max_extension_days: Annotated[int, Field(ge=1, le=180)] | None = None


class ContactOffer(Payload):
    """What a contact offers; the notifier renders it and a partner's acceptance echoes it."""

    offer_id: Id
    kind: OfferKind
    limits: OfferLimits | None = None  # project extension
    hardship: bool = False  # project extension: offered by a hardship treatment
    installments: Annotated[int, Field(ge=2, le=60)] | None = None
    extension_days: Annotated[int, Field(ge=1, le=180)] | None = None
    settlement_percent: Annotated[Decimal, Field(gt=0, le=100)] | None = None


@event_type("contact.requested", topics.SCHEDULER)
class ContactRequested(Payload):
    contact_id: Id
    account_id: Id
    customer_id: Id
    channel: Channel
    template: Id
    not_before: Instant
    not_after: Instant
    strategy: Id
    variant: Id
    # project extensions (optional, see docs/asyncapi.yaml)
    strategy_version: int | None = None
    step_no: int | None = None
    offer: ContactOffer | None = None
    total_overdue: Money | None = None
    currency: Currency | None = None
    days_past_due: int | None = None
    locale: Id | None = None
    # what the contact is for (collection, a reminder before the due date, a hardship
    # treatment's offer, a callback the customer asked for) and, for a reminder, what falls due
    purpose: Literal["collection", "reminder", "hardship", "callback"] | None = None
    due_date: BusinessDate | None = None
    amount_due: Money | None = None
    # the strategy's treatment (its segment), by which the notifier routes a call or a visit
    # to the desk or to an external partner; the propensity to pay it was decided with (0-1)
    treatment: Id | None = None
    propensity: Annotated[Decimal, Field(ge=0, le=1)] | None = None
    # the customer's country the decision was made for, by which the notifier routes too: its
    # own copy of the customer may not have arrived yet (another topic, read in no set order)
    country: Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")] | None = None


@event_type("contact.suppressed", topics.SCHEDULER)
class ContactSuppressed(Payload):
    account_id: Id
    channel: Channel
    reasons: Annotated[list[Id], Field(min_length=1)]
    # project extensions (optional)
    customer_id: Id | None = None
    contact_id: Id | None = None
    strategy: Id | None = None
    variant: Id | None = None


# --- notifier.events ---------------------------------------------------------------------------


@event_type("contact.attempted", topics.NOTIFIER)
class ContactAttempted(Payload):
    """``outcome``: one of :class:`Outcome`."""

    contact_id: Id
    account_id: Id
    channel: Channel
    outcome: Outcome
    attempted_at: Instant
    # project extensions (optional)
    customer_id: Id | None = None
    address_ref: Id | None = None  # fingerprint of the address used (shared/fingerprint.py)


@event_type("customer.opted_out", topics.NOTIFIER)
class CustomerOptedOut(Payload):
    customer_id: Id
    channel: Channel
    # project extension: the fingerprint of the address opted out; absent means every
    # address of that channel
    address_ref: Id | None = None


@event_type("customer.cease_requested", topics.NOTIFIER)
class CustomerCeaseRequested(Payload):
    """The customer asked, in writing or by a recorded call, for all contact to stop."""

    customer_id: Id


@event_type("dispute.opened", topics.NOTIFIER)
class DisputeOpened(Payload):
    account_id: Id
    dispute_id: Id | None = None


@event_type("dispute.resolved", topics.NOTIFIER)
class DisputeResolved(Payload):
    account_id: Id
    dispute_id: Id | None = None
    consumer_disagrees: bool = False


@event_type("promise.made", topics.NOTIFIER)
class PromiseMade(Payload):
    account_id: Id
    amount: Money
    due_date: BusinessDate
    currency: Currency | None = None
    promise_id: Id | None = None


@event_type("plan.agreed", topics.NOTIFIER)
class PlanAgreed(Payload):
    plan_id: Id
    account_id: Id
    kind: OfferKind
    installments: Annotated[list[PlanInstallment], Field(min_length=1, max_length=120)]
    # project extensions (optional): agreed under hardship; where it was agreed
    hardship: bool = False
    source: Id | None = None  # the channel, "self_service" or "desk"


@event_type("hardship.reported", topics.NOTIFIER)
class HardshipReported(Payload):
    """The customer said they cannot pay (a reply, a partner's or collector's outcome, the
    self-service page): collection pauses for the pack's breather, then a hardship treatment."""

    account_id: Id
    customer_id: Id
    reason: HardshipReason
    source: Id  # the channel, "self_service", "desk" or "core-banking" (account.flagged)
    until: BusinessDate | None = None


@event_type("callback.requested", topics.NOTIFIER)
class CallbackRequested(Payload):
    """The customer asked to be called at a time; the scheduler plans the call then if the
    pack allows, else at the next allowed time, and says which rule moved it."""

    account_id: Id
    customer_id: Id
    channel: Channel
    at: Instant


@event_type("notice.delivered", topics.NOTIFIER)
class NoticeDelivered(Payload):
    account_id: Id
    notice: Literal["bureau_pre_notice", "validation_notice"]
    # project extensions (optional)
    customer_id: Id | None = None
    channel: Channel | None = None
    delivered_at: Instant | None = None


@event_type("notice.returned", topics.NOTIFIER)
class NoticeReturned(Payload):
    """A notice came back undeliverable (a returned letter, a bounced email): the bureau may
    not treat the customer as told (project extension)."""

    account_id: Id
    notice: Literal["bureau_pre_notice", "validation_notice"]
    customer_id: Id | None = None
    channel: Channel | None = None
    returned_at: Instant | None = None


# --- bureau.events -----------------------------------------------------------------------------


@event_type("bureau.report_submitted", topics.BUREAU)
class ReportSubmitted(Payload):
    account_id: Id
    cycle: Id
    # project extensions (optional)
    customer_id: Id | None = None
    status: Id | None = None  # Metro 2 account status, or the CN five-level class
    compliance_code: Id | None = None  # XB while disputed, XC / XH after


@event_type("bureau.report_blocked", topics.BUREAU)
class ReportBlocked(Payload):
    account_id: Id
    cycle: Id
    reasons: Annotated[list[Id], Field(min_length=1)]
    customer_id: Id | None = None  # project extension


@event_type("bureau.report_corrected", topics.BUREAU)
class ReportCorrected(Payload):
    account_id: Id
    cycle: Id
    # project extensions (optional)
    customer_id: Id | None = None
    status: Id | None = None
    previous_status: Id | None = None


# --- system.clock ------------------------------------------------------------------------------


@event_type("clock.set", topics.CLOCK)
class ClockSet(Payload):
    now: Instant
