"""Composition root of the ledger service: the one place its dependencies are wired together."""

from __future__ import annotations

from shared import topics
from shared.clock import Clock
from shared.consumer import ConsumerSpec
from shared.service import ServiceDefinition
from shared.settings import ServiceSettings


def build(settings: ServiceSettings, clock: Clock) -> ServiceDefinition:
    return ServiceDefinition(
        description="System of record for what each customer owes: accounts, instalments, payments, delinquency, plans and promises.",
        # Until the ledger's handlers land, its consumer still validates everything it reads:
        # unreadable records go to the dead-letter topic, the rest are acknowledged.
        consumers=[ConsumerSpec(name="events", topics=(topics.CORE_BANKING, topics.NOTIFIER))],
    )
