"""What the ledger's changes tell the other services: the events an evaluated row, a payment
or a reversal announce, with the account's active flags. Pure: rows in, payloads out."""

from __future__ import annotations

from services.ledger.repository.rows import Evaluated, ReceiptRow
from shared.events import (
    AccountCured,
    DelinquencyChanged,
    InstallmentDueSoon,
    Payload,
    PaymentMissed,
    PaymentPosted,
    PaymentReceived,
    PaymentReversalApplied,
    PaymentReversed,
)


def announcements(row: Evaluated, flags: list[str]) -> list[Payload]:
    """What one evaluated row tells the other services: an instalment due soon, a missed
    instalment, a bucket change, a cure (an account current again after being in arrears)."""
    standing = {
        "balance": row.outstanding,
        "first_delinquency": row.first_delinquency,
        "next_due_date": row.next_due,
        "next_due_amount": row.next_due_amount,
    }
    common = {"account_id": row.account_id, "customer_id": row.customer_id, "flags": flags}
    if row.kind == "due_soon":
        assert row.installment_no is not None
        assert row.due_date is not None
        assert row.amount_due is not None
        assert row.days_until_due is not None
        return [
            InstallmentDueSoon(
                **common,
                installment_no=row.installment_no,
                due_date=row.due_date,
                amount=row.amount_due,
                days_until_due=row.days_until_due,
                currency=row.currency,
                product=row.product,
            )
        ]
    if row.kind == "missed":
        assert row.installment_no is not None
        assert row.due_date is not None
        assert row.amount_due is not None
        return [
            PaymentMissed(
                **common,
                installment_no=row.installment_no,
                due_date=row.due_date,
                amount_due=row.amount_due,
                total_overdue=row.overdue,
                currency=row.currency,
                days_past_due=row.days_past_due,
                bucket=row.bucket,
                product=row.product,
                **standing,
            )
        ]
    events: list[Payload] = []
    if row.old_bucket != row.bucket:
        events.append(
            DelinquencyChanged(
                **common,
                previous_bucket=row.old_bucket,
                bucket=row.bucket,
                days_past_due=row.days_past_due,
                total_overdue=row.overdue,
                currency=row.currency,
                product=row.product,
                **standing,
            )
        )
    if row.old_in_arrears and not row.in_arrears:
        events.append(AccountCured(**common, **standing))
    return events


def receipt_event(
    row: ReceiptRow, receipt: PaymentPosted | PaymentReversed
) -> PaymentReceived | PaymentReversalApplied:
    amounts = {
        "account_id": row.account_id,
        "customer_id": row.customer_id,
        "payment_id": row.payment_id,
        "amount": row.amount,
        "currency": row.currency,
        "total_overdue": row.overdue,
        "balance": row.balance,
        "posted_at": row.posted_at,
        "days_past_due": row.days_past_due,
        "next_due_date": row.next_due_date,
        "next_due_amount": row.next_due_amount,
    }
    if isinstance(receipt, PaymentReversed):
        return PaymentReversalApplied(**amounts, reversed_at=row.reversed_at)
    return PaymentReceived(**amounts, posted_on=row.posted_on)


class ActiveFlags:
    """Active flags per customer; a customer-wide flag (no account) applies to every account."""

    def __init__(self) -> None:
        self._by_customer: dict[str, list[tuple[str | None, str]]] = {}

    def add(self, customer_id: str, account_id: str | None, flag: str) -> None:
        self._by_customer.setdefault(customer_id, []).append((account_id, flag))

    def of(self, customer_id: str, account_id: str) -> list[str]:
        entries = self._by_customer.get(customer_id)
        if not entries:
            return []
        return sorted({flag for account, flag in entries if account in (None, account_id)})
