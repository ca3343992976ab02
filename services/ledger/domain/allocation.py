"""Allocating payments to instalments, and undoing exactly that on a reversal."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal


class LedgerError(ValueError):
    """Input the ledger refuses; the message names the problem and carries no personal data."""


@dataclass(frozen=True)
class Installment:
    number: int
    due_date: date
    amount: Decimal
    paid: Decimal = Decimal(0)

    @property
    def outstanding(self) -> Decimal:
        return self.amount - self.paid


@dataclass(frozen=True)
class Allocation:
    installment_no: int
    amount: Decimal


@dataclass(frozen=True)
class Applied:
    allocations: tuple[Allocation, ...]
    unallocated: Decimal  # an overpayment, kept as credit on the payment

    @property
    def allocated(self) -> Decimal:
        return sum((a.amount for a in self.allocations), Decimal(0))


def allocate(installments: Sequence[Installment], amount: Decimal) -> Applied:
    """Oldest unpaid instalment first (by due date, then number), each filled before the next."""
    if amount <= 0:
        raise LedgerError("payment amount must be positive")
    remaining = amount
    allocations = []
    for inst in sorted(installments, key=lambda i: (i.due_date, i.number)):
        if remaining <= 0:
            break
        take = min(inst.outstanding, remaining)
        if take > 0:
            allocations.append(Allocation(inst.number, take))
            remaining -= take
    return Applied(tuple(allocations), remaining)


def apply(
    installments: Sequence[Installment], allocations: Sequence[Allocation], sign: int = 1
) -> list[Installment]:
    """The instalments after adding (``sign=1``) or removing (``sign=-1``) allocations."""
    by_no = {a.installment_no: a.amount for a in allocations}
    result = []
    for inst in installments:
        paid = inst.paid + sign * by_no.get(inst.number, Decimal(0))
        if paid < 0 or paid > inst.amount:
            raise LedgerError(f"instalment {inst.number} would be paid {paid} of {inst.amount}")
        result.append(Installment(inst.number, inst.due_date, inst.amount, paid))
    return result


def validate_schedule(schedule: Sequence[tuple[int, date, Decimal]]) -> None:
    """Numbers 1..n in order, due dates strictly increasing, amounts positive."""
    previous: date | None = None
    for position, (number, due, amount) in enumerate(schedule, start=1):
        if number != position:
            raise LedgerError(f"schedule.{position - 1}.installment_no: expected {position}")
        if amount <= 0:
            raise LedgerError(f"schedule.{position - 1}.amount: must be positive")
        if previous is not None and due <= previous:
            raise LedgerError(f"schedule.{position - 1}.due_date: dates must go forward")
        previous = due
