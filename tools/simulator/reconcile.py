"""The reconciliation check after a campaign, through the public contract only:

1. every missed instalment (``payment.missed``) has a decision trail at the scheduler, starting
   no earlier than the miss;
0. nothing upstream was lost and nothing applied twice (payments received once each, contacts
   announced sent once each, bureau records submitted once per cycle);
2. every contact request (``contact.requested``) was sent exactly once at the partner (counted by
   idempotency key at the stand-in), or the notifier records why not (expired, failed, still
   waiting for its window); and the partner received nothing that was not requested;
3. every record the bureau submitted matches the ledger as it stood when its cycle ran (the
   simulator keeps the ledger's standing at each cycle, ``ledger-at-cycle-<id>.json``);
4. no record went to a dead-letter topic.

Prints one line per check and returns the findings; account ids only, never personal data.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from services.bureau.domain.metro2 import decode as decode_metro2
from shared import topics
from shared.events import (
    ContactAttempted,
    ContactRequested,
    PaymentMissed,
    PaymentPosted,
    PaymentReceived,
    ReportCorrected,
    ReportSubmitted,
)
from tools.simulator.system import System

# A delivery the notifier still holds for later is accounted for, as is one it gave up on.
ACCOUNTED = {"expired", "failed", "pending", "returned"}


@dataclass
class Findings:
    checked: dict[str, int] = field(default_factory=dict)
    problems: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    @property
    def ok(self) -> bool:
        return not any(self.problems.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "problems": {k: v[:50] for k, v in self.problems.items() if v},
            "problem_counts": {k: len(v) for k, v in self.problems.items() if v},
        }


async def _get(system: System, service: str, path: str) -> Any:
    response = await system.request("GET", f"{system.endpoints.services[service]}{path}")
    response.raise_for_status()
    return response.json()


async def _each(items: list[str], work: Any, concurrency: int = 16) -> list[Any]:
    gate = asyncio.Semaphore(concurrency)

    async def one(item: str) -> Any:
        async with gate:
            return await work(item)

    return list(await asyncio.gather(*(one(i) for i in items)))


async def check(system: System, out: Path) -> Findings:
    findings = Findings()
    async with system.reader(
        topics.CORE_BANKING, topics.LEDGER, topics.SCHEDULER, topics.NOTIFIER, topics.BUREAU
    ) as reader:
        events = await reader.drain()
    # Told, not a problem: at-least-once publication repeats an id, never an effect.
    findings.checked["records published again with the same id"] = reader.redelivered
    once(findings, events)
    first_miss: dict[str, datetime] = {}
    requests: dict[str, ContactRequested] = {}
    reported: dict[str, list[tuple[str, str]]] = defaultdict(list)  # cycle -> (account, kind)
    for event in events:
        data = event.data
        if isinstance(data, PaymentMissed):
            first_miss.setdefault(data.account_id, event.time)
        elif isinstance(data, ContactRequested):
            requests[data.contact_id] = data
        elif isinstance(data, ReportSubmitted):
            reported[data.cycle].append((data.account_id, "submitted"))
        elif isinstance(data, ReportCorrected):
            reported[data.cycle].append((data.account_id, "corrected"))

    # 1. decision trails
    async def trail(account_id: str) -> None:
        decisions = await _get(system, "scheduler", f"/v1/accounts/{account_id}/decisions")
        after = [d for d in decisions if datetime.fromisoformat(d["at"]) >= first_miss[account_id]]
        if not after:
            findings.problems["missed instalment without a decision trail"].append(account_id)

    await _each(sorted(first_miss), trail)
    findings.checked["accounts with a missed instalment"] = len(first_miss)

    # 2. one send per request, or a recorded reason
    sends = (await system.partner("GET", "/control/sends"))["sends"]
    by_account: dict[str, list[str]] = defaultdict(list)
    for contact_id, request in requests.items():
        by_account[request.account_id].append(contact_id)
    deliveries: dict[str, dict[str, Any]] = {}

    async def contacts(account_id: str) -> None:
        for row in await _get(system, "notifier", f"/v1/accounts/{account_id}/contacts"):
            deliveries[row["contact_id"]] = row

    await _each(sorted(by_account), contacts)
    for contact_id in sorted(requests):
        record = deliveries.get(contact_id)
        if contact_id in sends:
            if record is None or record["sent_at"] is None:
                findings.problems["sent at the partner, not recorded as sent"].append(contact_id)
        elif record is None:
            findings.problems["requested, unknown to the notifier"].append(contact_id)
        elif record["status"] not in ACCOUNTED:
            findings.problems["not sent and no reason recorded"].append(contact_id)
    findings.problems["sent at the partner, never requested"] += sorted(set(sends) - set(requests))
    findings.checked["contact requests"] = len(requests)
    findings.checked["sends at the partner"] = len(sends)

    # 3. bureau records against the ledger at their cycle
    compared = 0
    for cycle, entries in sorted(reported.items()):
        snapshot_file = out / f"ledger-at-cycle-{cycle}.json"
        if not snapshot_file.exists():
            findings.problems["cycle without a ledger snapshot"].append(cycle)
            continue
        ledger = json.loads(snapshot_file.read_text())

        async def of_cycle(account_id: str, cycle: str = cycle) -> tuple[str, Any]:
            rows = await _get(system, "bureau", f"/v1/accounts/{account_id}/reports")
            return account_id, next((r for r in rows if r["cycle_id"] == cycle), None)

        for account_id, row in await _each(sorted({a for a, _ in entries}), of_cycle):
            compared += 1
            standing = ledger.get(account_id)
            if row is None or standing is None:
                findings.problems["submitted record missing"].append(f"{cycle}/{account_id}")
                continue
            if not _matches(row, standing):
                findings.problems["record differs from the ledger at its cycle"].append(
                    f"{cycle}/{account_id}"
                )
    findings.checked["bureau records compared"] = compared

    # 4. dead letters
    for topic, count in (await system.dead_letters()).items():
        if count:
            findings.problems["dead letters"].append(f"{topic}: {count}")
    return findings


def once(findings: Findings, events: list[Any]) -> None:
    """Nothing lost, nothing twice: every payment posted upstream was received by the ledger
    exactly once, every contact was announced sent at most once, every bureau record of a cycle
    was submitted at most once."""
    posted = [e.data.payment_id for e in events if isinstance(e.data, PaymentPosted)]
    received = Counter(e.data.payment_id for e in events if isinstance(e.data, PaymentReceived))
    findings.problems["payment posted, never received"] += sorted(set(posted) - set(received))
    findings.problems["payment received twice"] += sorted(p for p, n in received.items() if n > 1)
    sent = Counter(
        e.data.contact_id
        for e in events
        if isinstance(e.data, ContactAttempted) and e.data.outcome == "sent"
    )
    findings.problems["contact sent twice"] += sorted(c for c, n in sent.items() if n > 1)
    submitted = Counter(
        (e.data.cycle, e.data.account_id) for e in events if isinstance(e.data, ReportSubmitted)
    )
    findings.problems["bureau record submitted twice"] += sorted(
        f"{c}/{a}" for (c, a), n in submitted.items() if n > 1
    )
    findings.checked["upstream payments"] = len(posted)


def _matches(row: dict[str, Any], standing: dict[str, Any]) -> bool:
    overdue = Decimal(str(standing["overdue"]))
    if row["country"] == "US":
        fields = decode_metro2(row["line"])
        past_due = int(fields["AmountPastDue"] or 0)
        if fields["AccountStatus"] == "13":
            return overdue == 0
        return past_due == int(overdue.quantize(Decimal(1), rounding=ROUND_HALF_UP))
    line = json.loads(row["line"])
    return bool(
        Decimal(line["overdue_amount"]) == overdue
        and int(line["overdue_days"]) == int(standing["days_past_due"])
    )
