"""python -m services.scheduler.models fit|evaluate

``fit`` reads the topics from their beginning (``--until``: only what was known by then),
replays them into decision points, fits a model and writes it (``--out``); with ``--publish``
it stores and publishes it through the scheduler's API. ``evaluate`` judges model files on the
decision points of a window, each beside the others on the same points."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from services.scheduler.bootstrap import MODEL, load_model
from services.scheduler.domain import learning
from services.scheduler.domain.scoring import Model
from services.scheduler.models import fit as fitting
from shared.auth import DEV_KEY
from shared.envelope import CloudEvent
from shared.history import read_history


async def history(bootstrap: str, until: datetime | None) -> list[CloudEvent]:
    events = await read_history(bootstrap, learning.TOPICS)
    return [e for e in events if until is None or e.time <= until]


async def publish(client: httpx.AsyncClient, scheduler: str, model: Model) -> None:
    """Store the model as a draft and publish it (both idempotent)."""
    stored = await client.post(f"{scheduler}/v1/models", json=model.model_dump(mode="json"))
    if stored.status_code >= 400:
        raise RuntimeError(f"the scheduler refused the model: {stored.text}")
    published = await client.post(f"{scheduler}/v1/models/{model.version}/publish")
    published.raise_for_status()


async def next_version(client: httpx.AsyncClient, scheduler: str) -> int:
    listed = await client.get(f"{scheduler}/v1/models")
    listed.raise_for_status()
    return max((row["version"] for row in listed.json()), default=0) + 1


def client(key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=30)


async def fit_command(args: argparse.Namespace) -> int:
    started = time.monotonic()
    params = fitting.FitParams.load(Path(args.params))
    hand = load_model(Path(args.baseline))
    until = datetime.fromisoformat(args.until) if args.until else None
    events = await history(args.bootstrap, until)
    replayed = learning.replay(events, params.outcome_days, until)
    async with client(args.api_key) as http:
        version = args.version or (
            await next_version(http, args.publish) if args.publish else hand.version + 1
        )
        try:
            model = fitting.fit(replayed, params, version, hand)
        except fitting.NotEnoughHistory as exc:
            print(f"[models] {exc}", file=sys.stderr)
            return 3
        await asyncio.to_thread(Path(args.out).write_text, fitting.dump(model))
        if args.publish:
            await publish(http, args.publish, model)
    metrics: Any = model.metrics or {}
    print(
        json.dumps(
            {
                "version": model.version,
                "events": len(events),
                "decisions": len(replayed.decisions),
                "held_out": metrics.get("held_out"),
                "hand_written_on_the_same": metrics.get("hand_written_on_the_same"),
                "out": args.out,
                "published": bool(args.publish),
                "seconds": round(time.monotonic() - started, 2),
            },
            default=str,
        )
    )
    return 0


async def evaluate_command(args: argparse.Namespace) -> int:
    models = [fitting.load(await asyncio.to_thread(Path(p).read_text)) for p in args.model]
    days = args.outcome_days or next((m.outcome_days for m in models if m.outcome_days), 10)
    replayed = learning.replay(await history(args.bootstrap, None), days)
    since = datetime.fromisoformat(args.since) if args.since else None
    points = [p for p in replayed.decisions if p.paid is not None and (not since or p.at >= since)]
    out = {f"model {m.version}": vars(fitting.judge(m, points)) for m in models}
    print(json.dumps(out, indent=1, default=str))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.scheduler.models")
    sub = parser.add_subparsers(dest="command", required=True)
    # the stack's own variables (scripts/stack.py), as the simulator reads them
    bootstrap = os.environ.get(
        "KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{os.environ.get('ARREARS_KAFKA_PORT', '9092')}"
    )
    fit_cmd = sub.add_parser("fit", help="fit a propensity model on the event history")
    fit_cmd.add_argument("--bootstrap", default=bootstrap)
    fit_cmd.add_argument("--until", help="only the history known by this instant (ISO 8601)")
    fit_cmd.add_argument("--version", type=int, help="default: the next free version")
    fit_cmd.add_argument("--out", default="model.yaml")
    fit_cmd.add_argument("--params", default=str(fitting.PARAMS))
    fit_cmd.add_argument("--baseline", default=str(MODEL), help="the hand-written model")
    fit_cmd.add_argument("--publish", metavar="SCHEDULER_URL", help="store and publish it there")
    fit_cmd.add_argument("--api-key", default=os.environ.get("ARREARS_API_KEY", DEV_KEY))
    eval_cmd = sub.add_parser("evaluate", help="judge model files on the same decisions")
    eval_cmd.add_argument("--bootstrap", default=bootstrap)
    eval_cmd.add_argument("--model", action="append", required=True)
    eval_cmd.add_argument("--since", help="only decision points from this instant")
    eval_cmd.add_argument("--outcome-days", type=int)
    args = parser.parse_args(argv)
    if args.command == "fit":
        return asyncio.run(fit_command(args))
    return asyncio.run(evaluate_command(args))


if __name__ == "__main__":
    sys.exit(main())
