"""Composition root of the scheduler service: the one place its dependencies are wired together."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import yaml

import services.scheduler
from services.scheduler import strategies
from services.scheduler.domain import scoring
from services.scheduler.domain.packs import load_packs
from services.scheduler.entrypoints.api import router
from services.scheduler.handlers import Scheduler, handlers
from services.scheduler.models import versions as model_versions
from services.scheduler.treatments import Treatments
from shared import topics
from shared.clock import Clock
from shared.consumer import ConsumerSpec
from shared.db import UnitOfWork
from shared.service import ServiceDefinition
from shared.settings import ServiceSettings

MODEL = Path(__file__).resolve().parent / "data" / "propensity.yaml"
MAX_BATCHES_PER_MOVE = 50  # timers fired per clock move: 50 x FIRE_BATCH, the rest next move


def load_model(path: Path = MODEL) -> scoring.Model:
    return scoring.Model.model_validate(yaml.safe_load(path.read_text()))


def build(settings: ServiceSettings, clock: Clock) -> ServiceDefinition:
    default_country = getattr(settings, "default_country", "CN")
    # Packs, model and strategy files are validated here, so a bad file stops the start.
    packs = load_packs()
    model = load_model()
    shipped = strategies.load_files()
    treatments = Treatments(clock, packs, model, default_country)
    scheduler = Scheduler(clock, treatments, settings.fingerprint_key)
    events = ConsumerSpec.of(
        "events",
        (topics.LEDGER, topics.NOTIFIER, topics.CORE_BANKING),
        handlers(scheduler),
        scheduler.settle,
    )

    async def seed_strategies(uow: UnitOfWork, now: datetime) -> None:
        await model_versions.seed(uow, model, now)
        await strategies.seed(uow, shipped, now)

    async def fire_timers(uow: UnitOfWork, now: datetime) -> None:
        for _ in range(MAX_BATCHES_PER_MOVE):
            if not await treatments.fire_due(uow):
                break
            await uow.flush_events()

    return ServiceDefinition(
        description=services.scheduler.__doc__ or "",
        consumers=[events],
        routers=[router(clock, packs, model, default_country)],
        clock_jobs=[fire_timers],
        on_start=[seed_strategies],
    )
