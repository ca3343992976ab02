"""Reporting cycles on the clock, crash-safe in three phases, each its own transactions:
1. *decide*: accounts in scope, a chunk at a time, get their record and gate results; each
   chunk's report rows and events commit together, and a resumed cycle skips accounts that
   already have a report in it, so no record is decided (or submitted) twice;
2. *build*: one file per country from the cycle's reports (Metro 2 for the US, JSON Lines for
   CN), archived read-only under its SHA-256, with the accounts it carries recorded;
3. *submit*: to a drop folder and/or an HTTP endpoint with ``Idempotency-Key: <checksum>``; a
   retried submission is the same file under the same key.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from services.bureau.adapters import files
from services.bureau.adapters.ledger import Ledger
from services.bureau.domain import metro2
from services.bureau.domain.figures import figures, rating_for
from services.bureau.domain.records import line, reconciled, statement
from services.bureau.domain.reporting import Facts, Identity, Rules, Verdict, decide
from services.bureau.repository import cycles
from services.bureau.repository.cycles import BureauFile, Report
from services.bureau.settings import BureauSettings
from shared.clock import Clock
from shared.db import UnitOfWork, UnitOfWorkFactory
from shared.envelope import new_event
from shared.events import Payload, ReportBlocked, ReportCorrected, ReportSubmitted

log = logging.getLogger(__name__)
SOURCE = "/arrears/bureau"
CHUNK = 5000
# A chunk whose accounts this service knows less recently than the ledger waits for the events
# on their way, this many times, before its records are decided (and the mismatch blocks them).
BEHIND = "\x00behind"
BEHIND_WAIT_SECONDS = 0.3
FORMATS = (("US", "metro2", "txt"), ("CN", "cn-jsonl", "jsonl"))


@dataclass(frozen=True)
class Period:
    since: datetime  # the reporting period is [since, the cycle's instant)
    cycle_days: dict[str, date]  # "YYYY-MM" -> the day of that month's first cycle


class Cycles:
    def __init__(self, clock: Clock, settings: BureauSettings) -> None:
        self._clock = clock
        self._settings = settings
        self._rules = Rules(settings.pre_notice_days, settings.notice_wait_days)
        self._reporter = metro2.Reporter(
            settings.reporter_id, settings.reporter_name, settings.reporter_address
        )
        self._ledger = Ledger(settings.ledger_url, settings.ledger_api_key)

    def cycle_id(self, now: datetime) -> str:
        return (
            now.strftime("%Y-%m-%d") if self._settings.cycle == "daily" else now.strftime("%Y-%m")
        )

    async def run_cycle(
        self, units: UnitOfWorkFactory, http: httpx.AsyncClient | None = None
    ) -> str | None:
        """Run (or resume) the cycle the clock is in; None if it is already submitted."""
        now = self._clock.now()
        cycle = self.cycle_id(now)
        async with units() as uow:
            status = await cycles.start(uow.session, cycle, now)
            await uow.commit()
        if status == "submitted":
            return None
        if status == "running":
            async with units() as uow:
                period = await self._period(uow, cycle, now)
            after = ""
            # a monthly cycle can wait for a consumer that is behind; bounded, so that a
            # ledger that disagrees for good blocks the records instead of the cycle
            patience = asyncio.get_running_loop().time() + self._settings.reconcile_wait_seconds
            while True:
                async with units() as uow:
                    decided = await self._decide_chunk(
                        uow,
                        cycle,
                        after,
                        now,
                        period,
                        http,
                        wait=asyncio.get_running_loop().time() < patience,
                    )
                    if decided is BEHIND:
                        # The events the same moment produced (a bucket change at the cycle's
                        # own clock move, say) are still on their way to this service: the
                        # chunk is decided again once they are in, not blocked for them.
                        await asyncio.sleep(BEHIND_WAIT_SECONDS)
                        continue
                    await uow.commit()
                if decided is None:
                    break
                after = decided
            async with units() as uow:
                await self._build_files(uow, cycle, now)
                await cycles.built(uow.session, cycle)
                await uow.commit()
        await self._submit(units, cycle, http)
        return cycle

    async def _period(self, uow: UnitOfWork, cycle: str, now: datetime) -> Period:
        """Where this cycle's reporting period starts (the previous cycle's instant; a first
        cycle looks back one cycle's length), and the day of each month's first cycle."""
        rows = await cycles.started(uow.session, now)
        earlier = [at for c, at in rows if c != cycle]
        back = timedelta(days=1 if self._settings.cycle == "daily" else 31)
        days: dict[str, date] = {}
        for _, at in rows:
            days.setdefault(at.astimezone(UTC).strftime("%Y-%m"), at.astimezone(UTC).date())
        days.setdefault(now.strftime("%Y-%m"), now.date())
        return Period(since=earlier[-1] if earlier else now - back, cycle_days=days)

    async def _decide_chunk(
        self,
        uow: UnitOfWork,
        cycle: str,
        after: str,
        now: datetime,
        period: Period,
        http: httpx.AsyncClient | None = None,
        *,
        wait: bool = False,
    ) -> str | None:
        """Decide one chunk of accounts; with ``wait``, returns :data:`BEHIND` (deciding
        nothing) when the ledger already shows a standing this service has not heard of."""
        fetched = await cycles.facts(uow.session, cycle, after, CHUNK, period.since, now)
        if not fetched:
            return None
        rows = [{**r, "overdue": r["overdue_now"]} for r in fetched]
        ledger = None
        if self._ledger.configured and http is not None:
            # as the ledger's own move to this instant left them (its plans settled)
            ledger = await self._ledger.standings(http, [r["account_id"] for r in rows], now)
        if (
            wait
            and ledger is not None
            and any(
                # only what the ledger knows can be on its way: an account it has never heard
                # of is blocked now rather than holding the whole cycle back
                row["account_id"] in ledger
                and reconciled(row, None)
                and not reconciled(row, ledger)
                for row in rows
            )
        ):
            return BEHIND
        reports: list[Report] = []
        reported: list[tuple[str, str]] = []
        looked: list[tuple[str, str]] = []  # the history profile's value of this cycle
        for stored in rows:
            row: Mapping[str, Any] = stored
            standing = ledger.get(row["account_id"]) if ledger is not None else None
            if standing is not None and reconciled(row, ledger):
                # Days past due grow every day without an event (the ledger announces bucket
                # changes, not each day): the record carries the ledger's count at cycle time.
                row = {**row, "days_past_due": int(standing["days_past_due"])}
            country = row["country"] or "CN"
            verdict = decide(self._facts(row, country, ledger), now, self._rules)
            looked.append((row["account_id"], rating_for(row["days_past_due"])))
            if verdict.kind == "skipped":
                continue
            record = None
            if verdict.kind != "blocked":
                reported_figures = figures(
                    statement(row),
                    verdict.status,
                    verdict.compliance_code,
                    verdict.special_comment,
                    now.date(),
                    period.cycle_days,
                )
                record = line(self._reporter, row, country, reported_figures, now)
                reported.append((row["account_id"], verdict.status))
            reports.append(
                Report(
                    row["account_id"],
                    "US" if country == "US" else "CN",
                    verdict.kind,
                    verdict.status,
                    verdict.compliance_code,
                    verdict.failed,
                    record,
                )
            )
            uow.publish(
                new_event(
                    _announcement(row, cycle, verdict),
                    source=SOURCE,
                    key=row["customer_id"],
                    time=now,
                    subject=row["account_id"],
                )
            )
        await cycles.record(uow.session, cycle, reports, looked, reported, now.strftime("%Y-%m"))
        await uow.flush_events()
        return str(rows[-1]["account_id"])

    def _facts(
        self, row: Mapping[str, Any], country: str, ledger: Mapping[str, Any] | None
    ) -> Facts:
        return Facts(
            account_id=row["account_id"],
            country=country,
            bucket=row["bucket"],
            days_past_due=row["days_past_due"],
            overdue=row["overdue"],
            balance=row["balance"],
            identity=Identity(
                row["full_name"], row["national_id"], row["birth_date"], row["postal_address"]
            ),
            flags=frozenset(row["flags"]),
            dispute=row["dispute"],
            plan_active=row["plan_active"],
            plan_hardship=row["plan_hardship"],
            plan_kind=row["plan_kind"],
            pre_notice_delivered_at=row["pre_notice_delivered_at"],
            notice_sent_at=row["notice_sent_at"],
            notice_returned_at=row["notice_returned_at"],
            conversation_at=row["conversation_at"],
            reconciled=reconciled(row, ledger),
            reported_status=row["reported_status"],
            rejected_unchanged=row["rejected_unchanged"],
        )

    async def _build_files(self, uow: UnitOfWork, cycle: str, now: datetime) -> None:
        for country, fmt, suffix in FORMATS:
            if await cycles.has_file(uow.session, cycle, country):
                continue
            folder = Path(self._settings.archive_dir) / cycle
            totals = metro2.Totals()
            count = 0
            async with files.Archive(folder, country) as archive:
                if country == "US":
                    archive.write([metro2.header(self._reporter, now.date(), now.date())])
                async for chunk in cycles.lines(uow.session, cycle, country, CHUNK):
                    archive.write(chunk)
                    count += len(chunk)
                    if country == "US":
                        for record in chunk:
                            totals.add(record)
                if country == "US" and count:
                    archive.write([totals.trailer()])
            if not count:
                await archive.discard()
                continue
            checksum = archive.checksum
            path = await archive.seal(f"{country}-{checksum[:16]}.{suffix}")
            await cycles.add_file(
                uow.session, BureauFile(checksum, cycle, country, fmt, str(path)), count, now
            )

    async def _submit(
        self, units: UnitOfWorkFactory, cycle: str, http: httpx.AsyncClient | None
    ) -> None:
        async with units() as uow:
            pending = await cycles.unsubmitted(uow.session, cycle)
        done = True
        for file in pending:
            how: list[str] = []
            acks: dict[str, str] = {}
            if self._settings.drop_dir is not None:
                dropped = await files.drop(file.path, self._settings.drop_dir)
                how.append(f"drop:{dropped}")
            if self._settings.endpoint and http is not None:
                try:
                    acks = await files.post(
                        http, self._settings.endpoint, file.path, file.file_id, file.format
                    )
                    how.append("http")
                except (httpx.HTTPError, ValueError, KeyError) as exc:
                    log.warning(
                        "submitting %s failed (%s); retrying next time",
                        file.file_id,
                        type(exc).__name__,
                    )
                    done = False
                    continue
            async with units() as uow:
                await cycles.submitted(uow.session, file, ",".join(how), acks, self._clock.now())
                await uow.commit()
        if done:
            async with units() as uow:
                await cycles.finished(uow.session, cycle, self._clock.now())
                await uow.commit()


def _announcement(row: Mapping[str, Any], cycle: str, verdict: Verdict) -> Payload:
    customer, account = row["customer_id"], row["account_id"]
    if verdict.kind == "submitted":
        return ReportSubmitted(
            account_id=account,
            cycle=cycle,
            customer_id=customer,
            status=verdict.status,
            compliance_code=verdict.compliance_code or None,
        )
    if verdict.kind == "corrected":
        return ReportCorrected(
            account_id=account,
            cycle=cycle,
            customer_id=customer,
            status=verdict.status,
            previous_status=row["reported_status"],
        )
    return ReportBlocked(
        account_id=account, cycle=cycle, reasons=list(verdict.failed), customer_id=customer
    )
