"""Composition root of the notifier service: the one place its dependencies are wired together."""

from __future__ import annotations

import services.notifier
from services.notifier.domain.templates import Renderer
from services.notifier.entrypoints import selfservice
from services.notifier.entrypoints.api import router
from services.notifier.handlers import Notifier, handlers
from services.notifier.sender import Links, Sender, sender
from services.notifier.settings import NotifierSettings
from shared import topics
from shared.clock import Clock
from shared.consumer import ConsumerSpec
from shared.service import ServiceDefinition
from shared.settings import ServiceSettings


def build(settings: ServiceSettings, clock: Clock) -> ServiceDefinition:
    assert isinstance(settings, NotifierSettings)
    renderer = Renderer()
    notifier = Notifier(clock, renderer, settings.partners, settings.fingerprint_key)
    links = Links(settings.self_service_secret.get_secret_value(), str(settings.public_url))
    send = Sender(
        clock,
        renderer,
        settings.partners,
        settings.creditor_name,
        settings.retry_max_seconds,
        links,
    )
    # core-banking for the customers' contact data, which only the notifier holds
    events = ConsumerSpec.of("events", (topics.SCHEDULER, topics.CORE_BANKING), handlers(notifier))
    return ServiceDefinition(
        description=services.notifier.__doc__ or "",
        consumers=[events],
        routers=[
            router(notifier, settings.max_webhook_bytes),
            selfservice.router(
                notifier,
                settings.self_service_secret.get_secret_value(),
                settings.fingerprint_key,
                settings.creditor_name,
            ),
        ],
        workers=[
            sender(send, notifier.wake, settings.send_concurrency, settings.send_poll_seconds)
        ],
        pending=notifier.unsent,
        clock_jobs=[notifier.clock_moved],
    )
