"""The typed rows the ledger's evaluation statements return."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class StateRow:
    """Where one account stands at the instant asked about."""

    account_id: str
    dpd: int
    bucket: str
    overdue: Decimal
    outstanding: Decimal
    in_arrears: bool
    first_delinquency: date | None
    today: date
    currency: str = ""
    plan_active: bool = False


@dataclass(frozen=True, slots=True)
class Evaluated:
    """One row of an evaluation pass: an instalment newly ``missed`` or ``due_soon``, or an
    account ``changed`` (with where it was and where it is)."""

    kind: str
    account_id: str
    customer_id: str
    currency: str
    product: str | None
    old_bucket: str | None
    bucket: str
    days_past_due: int
    overdue: Decimal
    old_in_arrears: bool | None
    in_arrears: bool | None
    installment_no: int | None
    due_date: date | None
    amount_due: Decimal | None
    first_delinquency: date | None
    outstanding: Decimal
    next_due: date | None
    next_due_amount: Decimal | None
    days_until_due: int | None = None


@dataclass(frozen=True, slots=True)
class Settled:
    """A plan or a promise the pass settled, with its new status."""

    id: str
    account_id: str
    customer_id: str
    status: str


@dataclass(frozen=True, slots=True)
class FlagRow:
    customer_id: str
    account_id: str | None
    flag: str
    active: bool


@dataclass(frozen=True, slots=True)
class ReceiptRow:
    """A payment (or its reversal) with the account's amounts after the pass."""

    payment_id: str
    account_id: str
    customer_id: str
    amount: Decimal
    currency: str
    posted_at: datetime
    posted_on: date
    reversed_at: datetime | None
    overdue: Decimal
    days_past_due: int
    balance: Decimal
    next_due_date: date | None
    next_due_amount: Decimal | None
