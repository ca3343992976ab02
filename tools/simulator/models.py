"""The campaign learns from itself: after its first weeks it fits a propensity model on what
the topics hold so far (``python -m services.scheduler.models``' library, the same fit as the
command), publishes it through the scheduler's API and runs it as a challenger variant of the
published strategy for the rest; at the end it judges the fitted model beside the hand-written
one on the decisions made after the fit, tabulates contact outcomes by segment, channel and
local hour, and sets the ledger's roll-rate forecast against what happened."""

from __future__ import annotations

import asyncio
import copy
import time
from datetime import datetime, timedelta
from typing import Any

from services.scheduler.bootstrap import load_model
from services.scheduler.domain import learning
from services.scheduler.domain.scoring import Model
from services.scheduler.models import fit as fitting
from shared.envelope import CloudEvent
from shared.history import read_history
from tools.simulator.model import ModelsPlan
from tools.simulator.system import System

STRATEGY = "early-and-late"


async def _json(
    system: System, method: str, path: str, service: str = "scheduler", **kw: Any
) -> Any:
    response = await system.request(method, f"{system.endpoints.services[service]}{path}", **kw)
    if response.status_code >= 400:
        raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:500]}")
    return response.json()


async def fit_challenger(system: System, plan: ModelsPlan, now: datetime) -> dict[str, Any]:
    """Fit on the history known by ``now``, publish the model, and publish the strategy's next
    version with a challenger scoring with it (the champion's treatments, part of the
    champion's weight, the same salt: the other variants keep their accounts)."""
    started = time.monotonic()
    params = fitting.FitParams.load()
    hand = load_model()
    events = [
        e for e in await read_history(system.endpoints.bootstrap, learning.TOPICS) if e.time <= now
    ]
    replayed = await asyncio.to_thread(learning.replay, events, params.outcome_days, now)
    listed = await _json(system, "GET", "/v1/models")
    version = max(m["version"] for m in listed) + 1
    try:
        model = await asyncio.to_thread(fitting.fit, replayed, params, version, hand)
    except fitting.NotEnoughHistory as exc:
        return {"fitted_at": now.isoformat(), "skipped": str(exc)}
    await _json(system, "POST", "/v1/models", json=model.model_dump(mode="json"))
    await _json(system, "POST", f"/v1/models/{version}/publish")
    strategies = await _json(system, "GET", "/v1/strategies")
    current = next(
        s["version"]
        for s in strategies
        if s["strategy_id"] == STRATEGY and s["status"] == "published"
    )
    body = await _json(system, "GET", f"/v1/strategies/{STRATEGY}/versions/{current}")
    document = copy.deepcopy(body)
    document["version"] = current + 1
    document["salt"] = body.get("salt") or str(current)
    document["description"] = (
        f"{body.get('description', '')} Version {current + 1}: the {plan.challenger} variant "
        f"scores with fitted model {version} (the champion's treatments)."
    ).strip()
    champion = next(v for v in document["variants"] if v["role"] == "champion")
    at = document["variants"].index(champion)
    champion["weight"] -= plan.weight
    challenger = copy.deepcopy(champion) | {
        "name": plan.challenger,
        "role": "challenger",
        "weight": plan.weight,
        "model": version,
    }
    document["variants"].insert(at + 1, challenger)
    await _json(system, "POST", "/v1/strategies", json=document)
    await _json(system, "POST", f"/v1/strategies/{STRATEGY}/versions/{current + 1}/publish")
    metrics: Any = model.metrics or {}
    return {
        "fitted_at": now.isoformat(),
        "model_version": version,
        "strategy_version": current + 1,
        "challenger": plan.challenger,
        "weight": plan.weight,
        "events": len(events),
        "decisions": len(replayed.decisions),
        "training": model.training.model_dump(mode="json") if model.training else None,
        "held_out_at_fit": metrics.get("held_out"),
        "hand_written_at_fit": metrics.get("hand_written_on_the_same"),
        "coefficients": model.coefficients,
        "bands": model.bands,
        "model": model.model_dump(mode="json"),
        "seconds": round(time.monotonic() - started, 2),
    }


def judged(fit: dict[str, Any], events: list[CloudEvent], end: datetime | None) -> dict[str, Any]:
    """The fitted model and the hand-written one on the same decision points: those made after
    the fit (never seen by it) whose outcome window closed before the campaign ended."""
    model = Model.model_validate(fit["model"])
    hand = load_model()
    days = model.outcome_days or 10
    replayed = learning.replay(events, days, end)
    since = datetime.fromisoformat(fit["fitted_at"])
    points = [p for p in replayed.decisions if p.paid is not None and p.at >= since]
    mine, theirs = fitting.judge(model, points), fitting.judge(hand, points)
    rows = [
        r
        for r in learning.contact_table(replayed, hand, days)
        if r.contacts >= fitting.FitParams.load().min_contacts
    ]
    return {
        "after_fit": {
            "fitted": vars(mine) | {"version": model.version},
            "hand_written": vars(theirs) | {"version": hand.version},
        },
        "contact_table": [r.model_dump() for r in rows],
        "outcome_days": days,
    }


async def forecast(system: System, start: datetime, end: datetime) -> dict[str, Any] | None:
    """The ledger's roll-rate forecast made ``horizon`` before the end, from 5-day periods
    since the start, beside where the accounts stood at the end."""
    step = 5
    horizon = min(30, ((end - start).days // 2) // step * step)
    if horizon < step:
        return None
    as_of = end - timedelta(days=horizon)
    periods = max(1, (as_of - start).days // step)
    params = {
        "as_of": as_of.isoformat(),
        "step_days": step,
        "periods": periods,
        "horizon_days": horizon,
    }
    made: dict[str, Any] = await _json(
        system, "GET", "/v1/forecast/roll-rates", service="ledger", params=params
    )
    return made
