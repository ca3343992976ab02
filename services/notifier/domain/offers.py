"""Turning an accepted offer into the plan the ledger restructures the arrears into."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_DOWN, Decimal

CENT = Decimal("0.01")
FIRST_DUE_DAYS = 7  # the first plan instalment falls due a week after acceptance
PERIOD_DAYS = 30
SETTLEMENT_DUE_DAYS = 14


@dataclass(frozen=True)
class Terms:
    kind: str  # installments | extension | settlement
    installments: int | None = None
    extension_days: int | None = None
    settlement_percent: Decimal | None = None


def plan_installments(terms: Terms, owed: Decimal, accepted_on: date) -> list[tuple[date, Decimal]]:
    """(due date, amount) per plan instalment; amounts are whole cents summing to what the plan
    covers (the overdue amount, or the settlement share of it)."""
    if owed <= 0:
        raise ValueError("nothing is owed")
    if terms.kind == "installments":
        n = terms.installments or 1
        share = (owed / n).quantize(CENT, rounding=ROUND_DOWN)
        amounts = [share] * (n - 1) + [owed - share * (n - 1)]
        first = accepted_on + timedelta(days=FIRST_DUE_DAYS)
        return [(first + timedelta(days=PERIOD_DAYS * k), a) for k, a in enumerate(amounts)]
    if terms.kind == "extension":
        return [(accepted_on + timedelta(days=terms.extension_days or PERIOD_DAYS), owed)]
    if terms.kind == "settlement":
        percent = terms.settlement_percent or Decimal(100)
        amount = (owed * percent / 100).quantize(CENT, rounding=ROUND_DOWN)
        return [(accepted_on + timedelta(days=SETTLEMENT_DUE_DAYS), amount)]
    raise ValueError(f"unknown offer kind {terms.kind}")
