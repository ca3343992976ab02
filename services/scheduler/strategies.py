"""Strategy versions: stored, validated, published and retired; and dry runs that show what a
strategy would do for an account without touching anything."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from services.scheduler.domain import compliance, scoring
from services.scheduler.domain.compliance import Allowed, Pack, Party, Proposal
from services.scheduler.domain.strategy import (
    AccountFacts,
    Strategy,
    assign_variant,
    checksum,
    plan,
    treatment_for,
)
from services.scheduler.models import versions as model_versions
from services.scheduler.repository import strategies as repository
from shared.db import UnitOfWork

FILES = Path(__file__).resolve().parent / "strategies"


def load_files(folder: Path = FILES) -> list[Strategy]:
    """Every strategy file, validated: a bad one stops the service from starting."""
    found = []
    for path in sorted(folder.glob("*.yaml")):
        try:
            found.append(Strategy.model_validate(yaml.safe_load(path.read_text())))
        except Exception as exc:
            raise ValueError(f"strategy file {path.name} is invalid: {exc}") from exc
    return found


class StrategyConflict(Exception):
    pass


async def seed(uow: UnitOfWork, strategies: Sequence[Strategy], now: datetime) -> None:
    """Store the shipped files' versions; publish a file's version when none of its strategy is
    published yet or it is newer than the published one. Versions are never overwritten."""
    for strategy in strategies:
        await store(uow, strategy, now, conflict_ok=True)
        published = await repository.published_version(uow.session, strategy.id)
        if published is None or published < strategy.version:
            await publish(uow, strategy.id, strategy.version, now)


async def store(
    uow: UnitOfWork, strategy: Strategy, now: datetime, *, conflict_ok: bool = False
) -> str:
    """Store a new version as a draft. The same content again is a no-op; other content under a
    version that exists is refused (versions are immutable)."""
    digest = checksum(strategy)
    existing = await repository.checksum_of(uow.session, strategy.id, strategy.version)
    if existing is not None:
        if existing != digest and not conflict_ok:
            raise StrategyConflict(
                f"{strategy.id} version {strategy.version} exists with other content; "
                "versions are immutable, submit a new version"
            )
        return "unchanged"
    await repository.insert_draft(
        uow.session, strategy.id, strategy.version, strategy.model_dump_json(), digest, now
    )
    return "created"


async def publish(uow: UnitOfWork, strategy_id: str, version: int, now: datetime) -> None:
    """Make this version the published one; the previously published version is retired. A
    version whose variant names a model that is not published is refused."""
    status = await repository.lock_status(uow.session, strategy_id, version)
    if status is None:
        raise KeyError(f"{strategy_id} version {version}")
    found = await body(uow, strategy_id, version)
    why = [] if found is None else await model_versions.unpublished_models(uow, found)
    if why:
        raise StrategyConflict("; ".join(why))
    if status != "published":
        await repository.publish(uow.session, strategy_id, version, now)


async def retire(uow: UnitOfWork, strategy_id: str, version: int, now: datetime) -> None:
    if not await repository.retire(uow.session, strategy_id, version, now):
        raise KeyError(f"{strategy_id} version {version}")


async def versions(uow: UnitOfWork) -> list[dict[str, Any]]:
    return await repository.versions(uow.session)


async def published_version(uow: UnitOfWork, strategy_id: str) -> int | None:
    return await repository.published_version(uow.session, strategy_id)


async def body(uow: UnitOfWork, strategy_id: str, version: int) -> Strategy | None:
    raw = await repository.body(uow.session, strategy_id, version)
    return None if raw is None else Strategy.model_validate(raw)


@dataclass(frozen=True)
class DryRunAccount:
    account_id: str
    bucket: str
    days_past_due: int
    overdue: Decimal
    country: str | None
    timezone: str | None
    credit_score: int | None
    channels: Sequence[str]  # the channels the customer has an address for
    product: str | None = None


def dry_run(
    strategy: Strategy,
    packs: Mapping[str, Pack],
    model: scoring.Model,
    account: DryRunAccount,
    now: datetime,
    default_country: str,
    models: Mapping[int, scoring.Model] | None = None,
) -> dict[str, Any]:
    """What ``strategy`` would do for ``account`` from ``now``: score, variant, treatment and each
    step with the compliance engine's verdict (assuming earlier steps were sent as planned)."""
    variant = assign_variant(strategy, account.account_id)
    # the model the variant scores with (a variant naming none: the shipped one)
    model = (models or {}).get(variant.model or model.version, model)
    score = scoring.score(
        scoring.Inputs(
            account.credit_score, account.days_past_due, 0, 0, 0, 0, 0, overdue=account.overdue
        ),
        model,
    )
    facts = AccountFacts(
        account.bucket, score.band, account.product, account.country, account.overdue
    )
    treatment = treatment_for(variant, facts)
    result: dict[str, Any] = {
        "strategy": strategy.id,
        "version": strategy.version,
        "variant": variant.name,
        "role": variant.role,
        "score": score.value,
        "model_version": score.model_version,
        "score_band": score.band,
        "score_contributions": score.contributions,
        "treatment": treatment.name if treatment else None,
        "steps": [],
    }
    if treatment is None:
        return result
    pack = packs.get(account.country or "") or packs[default_country]
    party = Party(
        customer_id="dry-run",
        account_id=account.account_id,
        country=pack.country,
        timezone=account.timezone,
        addresses={channel: f"dry-run:{channel}" for channel in account.channels},
    )
    history: list[compliance.Contact] = []
    for planned in plan(treatment, now):
        verdict = compliance.decide(
            pack, party, history, Proposal(planned.step.channel, planned.due_at), now
        )
        step: dict[str, Any] = {
            "step_no": planned.step_no,
            "day": planned.step.day,
            "channel": planned.step.channel,
            "template": planned.step.template,
            "offer": planned.step.offer.model_dump(exclude_none=True)
            if planned.step.offer
            else None,
            "due_at": planned.due_at,
            "allowed": verdict.allowed,
        }
        if isinstance(verdict, Allowed):
            step |= {
                "not_before": verdict.not_before,
                "not_after": verdict.not_after,
                "rules": list(verdict.deferred_by),
            }
            history.append(
                compliance.Contact(
                    account.account_id,
                    planned.step.channel,
                    verdict.not_before,
                    party.addresses.get(planned.step.channel),
                )
            )
        else:
            step["rules"] = list(verdict.rules)
        if pack.country != account.country:
            step["notes"] = [f"no pack for {account.country or 'no country'}: used {pack.country}"]
        result["steps"].append(step)
    return result
