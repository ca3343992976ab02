"""Composition root of the notifier service: the one place its dependencies are wired together."""

from __future__ import annotations

import services.notifier
from shared import topics
from shared.clock import Clock
from shared.consumer import ConsumerSpec
from shared.service import ServiceDefinition
from shared.settings import ServiceSettings


def build(settings: ServiceSettings, clock: Clock) -> ServiceDefinition:
    return ServiceDefinition(
        description=services.notifier.__doc__ or "",
        # Until the notifier's handlers land, its consumer still validates everything it reads:
        # unreadable records go to the dead-letter topic, the rest are acknowledged.
        consumers=[ConsumerSpec(name="events", topics=(topics.SCHEDULER,))],
    )
