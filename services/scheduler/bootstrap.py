"""Composition root of the scheduler service: the one place its dependencies are wired together."""

from __future__ import annotations

import services.scheduler
from shared import topics
from shared.clock import Clock
from shared.consumer import ConsumerSpec
from shared.service import ServiceDefinition
from shared.settings import ServiceSettings


def build(settings: ServiceSettings, clock: Clock) -> ServiceDefinition:
    return ServiceDefinition(
        description=services.scheduler.__doc__ or "",
        # Until the scheduler's handlers land, its consumer still validates everything it reads:
        # unreadable records go to the dead-letter topic, the rest are acknowledged.
        consumers=[
            ConsumerSpec(
                name="events", topics=(topics.LEDGER, topics.NOTIFIER, topics.CORE_BANKING)
            )
        ],
    )
