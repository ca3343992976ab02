"""What the pages and the API show of a work item: the customer's name and number only to the
collector holding it, the national id always masked."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from services.desk.domain import people
from services.desk.domain.people import Person
from services.desk.handlers import zone_of
from services.desk.repository.work import Item


def offers_within(person: Person, offer: dict[str, Any] | None) -> dict[str, Any] | None:
    """The terms this person may agree on their own, and the treatment's ceiling."""
    if not offer:
        return None
    limit = people.treatment_limit(offer)
    mine = people.within_both(person.authority, limit)
    return {
        "offer_id": offer.get("offer_id"),
        "kind": offer.get("kind"),
        "offered": {
            k: offer.get(k)
            for k in ("installments", "extension_days", "settlement_percent")
            if offer.get(k) is not None
        },
        "yours": mine.as_json(),
        "treatment": limit.as_json(),
        "hardship": bool(offer.get("hardship")),
    }


def item_view(
    it: Item, person: Person, customer: dict[str, Any] | None, now: datetime
) -> dict[str, Any]:
    holder = it.status == "held" and it.holder == person.username
    zone = zone_of(it)
    name = it.full_name or (customer or {}).get("full_name")
    return {
        "contact_id": it.contact_id,
        "channel": it.channel,
        "account_id": it.account_id,
        "customer_id": it.customer_id,
        "status": it.status,
        "holder": it.holder,
        "held_until": it.held_until,
        "yours": holder,
        "name": name if holder else None,
        "address": it.address if holder else None,
        "national_id": people.mask_national_id((customer or {}).get("national_id_last4")),
        "country": it.country,
        "locale": it.locale,
        "timezone": str(zone),
        "local_time": now.astimezone(zone).strftime("%Y-%m-%d %H:%M"),
        "window_closes_local": it.not_after.astimezone(zone).strftime("%H:%M"),
        "not_before": it.not_before,
        "not_after": it.not_after,
        "window_closed": now >= it.not_after,
        "overdue": str(it.total_overdue) if it.total_overdue is not None else None,
        "currency": it.currency,
        "days_past_due": it.days_past_due,
        "purpose": it.purpose,
        "template": it.template,
        "script": it.script if holder else None,
        "district": it.district,
        "priority": str(it.priority),
        "priority_why": it.priority_why or {},
        "offers": offers_within(person, it.offer),
        "outcome": it.outcome,
        "worked_by": it.worked_by,
        "expired_reason": it.expired_reason,
    }


def money(value: Any) -> str:
    try:
        return f"{Decimal(str(value)):,.2f}"
    except (ArithmeticError, ValueError):
        return str(value)


def plain(value: Any) -> str:
    """An amount as a form field takes it back: two decimals, no grouping."""
    try:
        return f"{Decimal(str(value)):.2f}"
    except (ArithmeticError, ValueError):
        return str(value)
