"""Model versions: stored as drafts (validated: a model naming a feature the scheduler does not
compute, or lacking a weight for one it lists, is refused with the name), published, retired.
Unlike a strategy, several versions may be published at once: each strategy variant names the
one it scores with, and the shipped hand-written model is the one a variant naming none uses."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from services.scheduler.domain.scoring import Model
from services.scheduler.domain.strategy import Strategy
from services.scheduler.repository import models as repository
from services.scheduler.repository import strategies as strategy_rows
from shared.db import UnitOfWork


class ModelConflict(Exception):
    pass


def checksum(model: Model) -> str:
    return hashlib.sha256(model.model_dump_json().encode()).hexdigest()


async def store(uow: UnitOfWork, model: Model, now: datetime, *, conflict_ok: bool = False) -> str:
    digest = checksum(model)
    existing = await repository.checksum_of(uow.session, model.version)
    if existing is not None:
        if existing != digest and not conflict_ok:
            raise ModelConflict(
                f"model version {model.version} exists with other content; versions are "
                "immutable, submit a new version"
            )
        return "unchanged"
    await repository.insert_draft(
        uow.session, model.version, model.kind, model.model_dump_json(), digest, now
    )
    return "created"


async def seed(uow: UnitOfWork, shipped: Model, now: datetime) -> None:
    """The shipped model, stored and published the first time (never overwritten)."""
    await store(uow, shipped, now, conflict_ok=True)
    if await repository.lock_status(uow.session, shipped.version) == "draft":
        await repository.set_status(uow.session, shipped.version, "published", now)


async def publish(uow: UnitOfWork, version: int, now: datetime) -> None:
    status = await repository.lock_status(uow.session, version)
    if status is None:
        raise KeyError(f"model version {version}")
    if status != "published":
        await repository.set_status(uow.session, version, "published", now)


async def retire(uow: UnitOfWork, version: int, default: int, now: datetime) -> None:
    """Retire a version no published strategy scores with (nor the default model)."""
    status = await repository.lock_status(uow.session, version)
    if status is None:
        raise KeyError(f"model version {version}")
    if version == default:
        raise ModelConflict(f"model version {version} is the default a variant naming none uses")
    for strategy_id, strategy_version, body in await strategy_rows.published(uow.session):
        for n, variant in enumerate(Strategy.model_validate(body).variants):
            if variant.model == version:
                raise ModelConflict(
                    f"{strategy_id} version {strategy_version} variants.{n}.model scores with "
                    f"model version {version}: publish a strategy without it first"
                )
    await repository.set_status(uow.session, version, "retired", now)


async def unpublished_models(uow: UnitOfWork, strategy: Strategy) -> list[str]:
    """Why ``strategy`` cannot be published: each variant naming a model not published."""
    published = {v for v, _ in await repository.published(uow.session)}
    return [
        f"variants.{n}.model: model version {variant.model} is not published"
        for n, variant in enumerate(strategy.variants)
        if variant.model is not None and variant.model not in published
    ]


async def versions(uow: UnitOfWork) -> list[dict[str, Any]]:
    return await repository.versions(uow.session)


async def body(uow: UnitOfWork, version: int) -> Model | None:
    raw = await repository.body(uow.session, version)
    return None if raw is None else Model.model_validate(raw)


async def published(uow: UnitOfWork) -> dict[int, Model]:
    return {v: Model.model_validate(b) for v, b in await repository.published(uow.session)}


async def next_version(uow: UnitOfWork) -> int:
    return await repository.latest_version(uow.session) + 1
