"""What a partner's status report means: the delivery's new status and the events it implies.
Pure; the webhook handler loads the delivery, asks here, and carries the answer out."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from shared.events import DISPOSITIONS, Outcome

# Partner delivery statuses and what each means for the delivery.
DELIVERY_STATUS = {"delivered": "delivered", "failed": "failed", "bounced": "failed"}
DELIVERY_STATUS["returned"] = "returned"
# a call or visit nobody made before its window closed (the desk's expired work item)
DELIVERY_STATUS["expired"] = "expired"
# Everything a partner's status webhook may report.
STATUSES = set(DELIVERY_STATUS) | DISPOSITIONS
NOTICES = {"bureau_pre_notice", "validation_notice"}


@dataclass(frozen=True)
class Meaning:
    delivery_status: str
    promise: bool = False  # a promise to pay with its amount and date: promise.made
    dispute: bool = False  # dispute.opened
    plan: bool = False  # the customer accepted the offer: plan.agreed from its terms
    hardship: bool = False  # the customer cannot pay: hardship.reported
    callback: bool = False  # the customer asked to be called at a time: callback.requested
    notice: Literal["delivered", "returned"] | None = None  # notice.delivered / notice.returned


def meaning(
    status: str,
    current_status: str,
    template: str,
    promise_amount: Decimal | None,
    has_promise_date: bool,
) -> Meaning:
    """A call or visit disposition means the message reached someone (delivered); a delivery
    status moves the delivery; a notice's fate is announced for the bureau's gates."""
    notice: Literal["delivered", "returned"] | None = None
    if template in NOTICES and status in ("delivered", "returned", "bounced"):
        notice = "delivered" if status == "delivered" else "returned"
    return Meaning(
        delivery_status=DELIVERY_STATUS.get(
            status, "delivered" if status in DISPOSITIONS else current_status
        ),
        promise=status == Outcome.PROMISE_TO_PAY and bool(promise_amount) and has_promise_date,
        dispute=status == Outcome.DISPUTE,
        plan=status == Outcome.PLAN_ACCEPTED,
        hardship=status == Outcome.HARDSHIP,
        callback=status == Outcome.CALLBACK,
        notice=notice,
    )
