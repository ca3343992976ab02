"""The reconciliation check after a campaign, through the public contract only:

1. every missed instalment (``payment.missed``) has a decision trail at the scheduler, starting
   no earlier than the miss;
0. nothing upstream was lost and nothing applied twice (payments received once each, contacts
   announced sent once each, bureau records submitted once per cycle);
2. every contact request (``contact.requested``) was sent exactly once at the partner (counted by
   idempotency key at the stand-in), or the notifier records why not (expired, failed, still
   waiting for its window); and the partner received nothing that was not requested;
3. every record the bureau submitted matches, field by field, the ledger as it stood when its
   cycle ran (the simulator keeps the ledger's API at each cycle, ``ledger-at-cycle-<id>.json``),
   follows on from the same account's record of the cycle before, and every Metro 2 file passes
   the independent checker (``tools/metro2check``, Go);
4. no record went to a dead-letter topic.

Prints one line per check and returns the findings; account ids only, never personal data.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

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
from tools.simulator.bureau_fields import differences, expected, follows, rating
from tools.simulator.model import Params
from tools.simulator.system import DeskSession, System

METRO2CHECK = Path(__file__).resolve().parents[1] / "metro2check"

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
    sends = set((await system.partner("GET", "/control/sends"))["sends"])
    sends |= await desk_items(system)
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
    findings.problems["sent at the partner, never requested"] += sorted(sends - set(requests))
    findings.checked["contact requests"] = len(requests)
    findings.checked["sends at the partner"] = len(sends)

    # 3. bureau records against the ledger at their cycle, field by field
    await bureau_records(system, out, reported, findings)

    # 4. dead letters
    # one line per dead letter, with the reason its consumer gave
    findings.problems["dead letters"] += await system.dead_letter_reasons()
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


async def bureau_records(
    system: System,
    out: Path,
    reported: dict[str, list[tuple[str, str]]],
    findings: Findings,
) -> None:
    """Every field of every submitted or corrected record against the ledger's API as it
    stood at the record's cycle (``ledger-at-cycle-<id>.json``), by the oracle in
    ``tools.simulator.bureau_fields``; Metro 2 files decoded by the independent Go checker,
    which also validates them; and each record against the same account's record of the cycle
    before (history profile shifted, first delinquency kept)."""
    cycles = sorted(await _get(system, "bureau", "/v1/cycles"), key=lambda c: c["started_at"])
    started = {c["cycle_id"]: datetime.fromisoformat(c["started_at"]) for c in cycles}
    cycle_days: dict[str, date] = {}
    for c in cycles:
        at = started[c["cycle_id"]].astimezone(UTC)
        cycle_days.setdefault(at.strftime("%Y-%m"), at.date())
    seen: dict[str, dict[str, str]] = {}
    previous: dict[str, dict[str, Any]] = {}  # account -> its Metro 2 record of the last cycle
    previous_cycle = None
    compared = fields = 0
    order = [c["cycle_id"] for c in cycles]
    for cycle in order:  # every cycle, for each month's statuses, even one that blocked all
        snapshot_file = out / f"ledger-at-cycle-{cycle}.json"
        if not snapshot_file.exists():
            if reported.get(cycle):
                findings.problems["cycle without a ledger snapshot"].append(cycle)
            continue
        snapshot = json.loads(snapshot_file.read_text())
        earlier = [started[c] for c in order[: order.index(cycle)]]
        now = started[cycle]
        since = earlier[-1] if earlier else now - timedelta(days=31)
        files = {country: await _decoded_file(system, cycle, country) for country in ("US", "CN")}
        if files["US"] is None:
            findings.problems["Metro 2 file refused by the independent checker"].append(cycle)
        by_number = {
            country: {
                (r.get("ConsumerAccountNumber") or r.get("account_id")): r
                for r in (files[country] or [])
            }
            for country in files
        }
        current: dict[str, dict[str, Any]] = {}
        index = order.index(cycle)
        follows_on = previous_cycle is not None and order.index(previous_cycle) == index - 1
        for account_id, _kind in sorted(set(reported.get(cycle, ()))):
            compared += 1
            detail = snapshot["detail"].get(account_id)
            record = by_number["US"].get(account_id.upper()) or by_number["CN"].get(account_id)
            if detail is None or record is None:
                findings.problems["submitted record missing"].append(f"{cycle}/{account_id}")
                continue
            e = expected(
                detail["account"],
                detail["history"],
                ZoneInfo(detail["timezone"]),
                now,
                since,
                seen,
                cycle_days,
            )
            diff = differences(record, e)
            fields += len(e)
            for name in diff:
                findings.problems[f"record differs from the ledger at its cycle: {name}"].append(
                    f"{cycle}/{account_id}"
                )
            if "AccountStatus" in record:
                current[account_id] = record
                last = previous.get(account_id)
                if last is not None and follows_on:
                    for problem in follows(last, record):
                        findings.problems[f"month to month: {problem}"].append(
                            f"{cycle}/{account_id}"
                        )
        seen[cycle[:7]] = {
            a: rating(int(r["days_past_due"])) for a, r in snapshot["standing"].items()
        }
        previous = current
    findings.checked["bureau records compared field by field"] = compared


async def _decoded_file(system: System, cycle: str, country: str) -> list[dict[str, Any]] | None:
    """A cycle's file, decoded (Metro 2 by ``tools/metro2check``, which validates it: None if
    it refuses the file); [] when the cycle has none for that country."""
    response = await system.request(
        "GET", f"{system.endpoints.services['bureau']}/v1/cycles/{cycle}/file?country={country}"
    )
    if response.status_code == 404:
        return []
    response.raise_for_status()
    if country == "CN":
        return [json.loads(line) for line in response.text.splitlines() if line]
    with tempfile.NamedTemporaryFile(suffix=".txt") as file:
        file.write(response.content)
        file.flush()
        checked = await asyncio.to_thread(
            subprocess.run,
            ["go", "run", ".", "-json", file.name],
            cwd=METRO2CHECK,
            capture_output=True,
            text=True,
        )
    if checked.returncode != 0:
        return None
    return [r for r in json.loads(checked.stdout) if "ConsumerAccountNumber" in r]


async def desk_items(system: System) -> set[str]:
    """The calls and visits sent to the desk (the in-house partner), listed by its team lead."""
    lead = Params.load().desk.lead
    if lead is None:
        return set()
    found: set[str] = set()
    async with DeskSession(system, *lead) as session:
        after = ""
        while True:
            page = await session.call("GET", "/v1/work", params={"after": after, "limit": 5000})
            page.raise_for_status()
            rows = page.json()
            found |= {r["contact_id"] for r in rows}
            if len(rows) < 5000:
                return found
            after = rows[-1]["contact_id"]
