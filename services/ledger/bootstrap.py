"""Composition root of the ledger service: the one place its dependencies are wired together."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import services.ledger
from services.ledger.entrypoints.api import router
from services.ledger.handlers import Ledger, handlers
from services.ledger.repository.book import Product
from shared import topics
from shared.clock import Clock
from shared.consumer import ConsumerSpec
from shared.db import UnitOfWork
from shared.service import ServiceDefinition
from shared.settings import ServiceSettings

PRODUCTS = Path(__file__).resolve().parent / "data" / "products.json"


def products() -> dict[str, Product]:
    """Each product's terms, from ``data/products.json``."""
    raw = json.loads(PRODUCTS.read_text())
    return {
        name: Product(int(spec.get("grace_days", 0)), int(spec.get("due_soon_days", 3)))
        for name, spec in raw.items()
        if not name.startswith("_")
    }


def build(settings: ServiceSettings, clock: Clock) -> ServiceDefinition:
    ledger = Ledger(clock, products())
    events = ConsumerSpec.of(
        "events", (topics.CORE_BANKING, topics.NOTIFIER), handlers(ledger), ledger.settle
    )

    async def evaluate_delinquency(uow: UnitOfWork, now: datetime) -> None:
        await ledger.evaluate(uow)

    return ServiceDefinition(
        description=services.ledger.__doc__ or "",
        consumers=[events],
        routers=[router(events, settings.service_name, ledger)],
        clock_jobs=[evaluate_delinquency],
    )
