"""The events the notifier publishes, stamped by its clock and keyed by the customer."""

from __future__ import annotations

from datetime import datetime

from services.notifier.repository import Delivery, Settled
from shared.clock import Clock
from shared.db import UnitOfWork
from shared.envelope import new_event
from shared.events import ContactAttempted, Outcome, Payload

SOURCE = "/arrears/notifier"


def publish(uow: UnitOfWork, clock: Clock, customer_id: str, subject: str, data: Payload) -> None:
    uow.publish(new_event(data, source=SOURCE, key=customer_id, time=clock.now(), subject=subject))


def attempted(
    uow: UnitOfWork, clock: Clock, row: Delivery | Settled, outcome: str, at: datetime
) -> None:
    publish(
        uow,
        clock,
        row.customer_id,
        row.account_id,
        ContactAttempted(
            contact_id=row.contact_id,
            account_id=row.account_id,
            channel=row.channel,
            outcome=Outcome(outcome),
            attempted_at=at,
            customer_id=row.customer_id,
            address_ref=row.address_ref,
        ),
    )
