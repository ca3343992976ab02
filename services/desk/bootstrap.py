"""Composition root of the desk service: the one place its dependencies are wired together."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path

import yaml

import services.desk
from services.desk import webhooks
from services.desk.adapters.context import Context
from services.desk.domain.people import Authority
from services.desk.domain.queues import Weights
from services.desk.domain.training import load_conduct, load_personas
from services.desk.entrypoints import api, pages, partner
from services.desk.entrypoints.auth import Auth
from services.desk.handlers import Desk, handlers
from services.desk.settings import DeskSettings
from services.desk.training import Training
from shared import topics
from shared.clock import Clock
from shared.consumer import ConsumerSpec
from shared.db import UnitOfWork, UnitOfWorkFactory
from shared.service import ServiceDefinition
from shared.settings import ServiceSettings

DATA = Path(__file__).resolve().parent / "data"


def authorities(path: Path = DATA / "roles.yaml") -> dict[str, Authority]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))["authority"]
    return {role: Authority.of(values) for role, values in data.items()}


def build(settings: ServiceSettings, clock: Clock) -> ServiceDefinition:
    assert isinstance(settings, DeskSettings)
    desk = Desk(clock, Weights.load(), authorities(), settings.lock_minutes)
    training = Training(clock, load_personas(), load_conduct())
    auth = Auth(settings)
    key = settings.read_api_key.get_secret_value() if settings.read_api_key else None
    context = Context(
        str(settings.ledger_url), str(settings.notifier_url), str(settings.scheduler_url), key
    )
    wake = asyncio.Event()
    # read-only context: the customers' names and masked ids, and the ledger's outcomes that
    # make the campaign's figures and the collectors' kept rate
    events = ConsumerSpec.of("events", (topics.CORE_BANKING, topics.LEDGER), handlers(desk))

    async def on_clock(uow: UnitOfWork, now: datetime) -> None:
        await desk.clock_moved(uow, now)
        uow.after_commit(wake.set)

    send = webhooks.sender(
        str(settings.notifier_url),
        settings.partner_name,
        settings.webhook_secret.get_secret_value(),
        settings.webhook_concurrency,
        wake,
    )

    async def context_client(units: UnitOfWorkFactory, stop: asyncio.Event) -> None:
        await context.start()
        try:
            await stop.wait()
        finally:
            await context.stop()

    return ServiceDefinition(
        description=services.desk.__doc__ or "",
        consumers=[events],
        routers=[
            partner.router(desk, settings.partner_api_key.get_secret_value()),
            api.router(desk, training, auth),
            pages.router(desk, training, auth, context),
        ],
        clock_jobs=[on_clock],
        workers=[send, context_client],
        pending=desk.pending,
    )
