"""Turning an accepted offer into the plan the ledger restructures the arrears into."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_DOWN, Decimal
from typing import Any

from shared.events import OfferKind

CENT = Decimal("0.01")
FIRST_DUE_DAYS = 7  # the first plan instalment falls due a week after acceptance
PERIOD_DAYS = 30
SETTLEMENT_DUE_DAYS = 14


@dataclass(frozen=True)
class Terms:
    kind: OfferKind
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


class OfferRefused(ValueError):
    """Terms outside what the offer allows; ``field`` names the term, the message says why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def choices(offer: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """What a customer may choose within an offer: per kind, its (least, most) term. An offer
    without limits allows only its own terms; limits open the kinds they name."""
    limits = offer.get("limits") or {}
    kind = offer["kind"]
    found: dict[str, tuple[Any, Any]] = {}
    own = {
        "installments": offer.get("installments"),
        "extension": offer.get("extension_days"),
        "settlement": offer.get("settlement_percent"),
    }[kind]
    if limits.get("max_installments") is not None:
        found["installments"] = (2, int(limits["max_installments"]))
    if limits.get("max_extension_days") is not None:
        found["extension"] = (1, int(limits["max_extension_days"]))
    if limits.get("min_settlement_percent") is not None:
        found["settlement"] = (Decimal(str(limits["min_settlement_percent"])), Decimal(100))
    if kind not in found and own is not None:
        value = Decimal(str(own)) if kind == "settlement" else int(own)
        found[kind] = (value, value)
    return found


def chosen_terms(offer: dict[str, Any], terms: Terms | None) -> Terms:
    """The terms a customer accepts: the offer's own (``terms`` None) or ones they chose,
    refused with the term and the limit when outside what the offer allows."""
    own = Terms(
        kind=offer["kind"],
        installments=offer.get("installments"),
        extension_days=offer.get("extension_days"),
        settlement_percent=Decimal(str(offer["settlement_percent"]))
        if offer.get("settlement_percent") is not None
        else None,
    )
    if terms is None:
        return own
    allowed = choices(offer)
    if terms.kind not in allowed:
        kinds = ", ".join(sorted(allowed))
        raise OfferRefused("kind", f"this offer allows {kinds}, not {terms.kind}")
    least, most = allowed[terms.kind]
    field, value = {
        "installments": ("installments", terms.installments),
        "extension": ("extension_days", terms.extension_days),
        "settlement": ("settlement_percent", terms.settlement_percent),
    }[terms.kind]
    if value is None:
        raise OfferRefused(field, f"required for a {terms.kind} offer")
    if value < least:
        raise OfferRefused(field, f"{value} is below what this offer allows ({least})")
    if value > most:
        raise OfferRefused(field, f"{value} is more than this offer allows ({most})")
    return terms
