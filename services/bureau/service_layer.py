"""The bureau's use cases: keep each account's reporting state from the other services' events,
and run reporting cycles on the clock.

A cycle is crash-safe in three phases, each its own transactions:
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
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import httpx
from sqlalchemy import text

from services.bureau.domain import metro2
from services.bureau.domain.reporting import (
    Facts,
    Identity,
    Rules,
    decide,
    five_level,
    history_profile,
    rating,
    us_address,
)
from services.bureau.settings import BureauSettings
from shared.clock import Clock
from shared.consumer import BatchHandler, Handler, on_batch, on_data
from shared.db import UnitOfWork, UnitOfWorkFactory
from shared.envelope import CloudEvent, new_event
from shared.events import (
    AccountCured,
    AccountFlagged,
    ContactAttempted,
    CustomerUpserted,
    DelinquencyChanged,
    DisputeOpened,
    DisputeResolved,
    LoanOpened,
    NoticeDelivered,
    NoticeReturned,
    Payload,
    PaymentMissed,
    PaymentReceived,
    PlanActivated,
    PlanBroken,
    PlanCompleted,
    ReportBlocked,
    ReportCorrected,
    ReportSubmitted,
)

log = logging.getLogger(__name__)
SOURCE = "/arrears/bureau"
CHUNK = 5000
CONVERSATIONS = {"right_party", "refused", "promise_to_pay", "dispute", "plan_accepted"}
WRITTEN = {"letter", "email"}  # a delivered one is a mailed or electronic communication

FACTS_SQL = text("""
    SELECT a.*, c.full_name, c.national_id, c.birth_date, c.postal_address, c.country,
           (a.rejected_at IS NOT NULL AND a.updated_at <= a.rejected_at
            AND (c.updated_at IS NULL OR c.updated_at <= a.rejected_at)) AS rejected_unchanged,
           ARRAY(SELECT f.flag FROM flag f
                 WHERE f.customer_id = a.customer_id AND f.active
                   AND f.account_id IN ('', a.account_id)) AS flags
    FROM account a LEFT JOIN customer c ON c.customer_id = a.customer_id
    WHERE (a.days_past_due >= 30 OR a.reported_status IS NOT NULL)
      AND a.account_id > :after
      AND NOT EXISTS (SELECT 1 FROM report r
                      WHERE r.cycle_id = :cycle AND r.account_id = a.account_id)
    ORDER BY a.account_id
    LIMIT :limit
""")


# A chunk whose accounts this service knows less recently than the ledger waits for the events
# on their way, this many times, before its records are decided (and the mismatch blocks them).
BEHIND = "\x00behind"
BEHIND_RETRIES = 10
BEHIND_WAIT_SECONDS = 0.3


class Bureau:
    def __init__(self, clock: Clock, settings: BureauSettings) -> None:
        self._clock = clock
        self._settings = settings
        self._rules = Rules(settings.pre_notice_days, settings.notice_wait_days)
        self._reporter = metro2.Reporter(
            settings.reporter_id, settings.reporter_name, settings.reporter_address
        )

    # --- state ---------------------------------------------------------------------------------

    async def upsert_customers(
        self, uow: UnitOfWork, customers: Sequence[CustomerUpserted]
    ) -> None:
        latest = list({c.customer_id: c for c in customers}.values())
        await uow.session.execute(
            text("""
                INSERT INTO customer (customer_id, full_name, national_id, birth_date,
                                      postal_address, country, updated_at)
                SELECT *, CAST(:now AS timestamptz)
                FROM unnest(CAST(:ids AS text[]), CAST(:names AS text[]),
                            CAST(:national AS text[]), CAST(:births AS date[]),
                            CAST(:postal AS text[]), CAST(:countries AS text[]))
                ON CONFLICT (customer_id) DO UPDATE
                SET full_name = excluded.full_name, national_id = excluded.national_id,
                    birth_date = excluded.birth_date, postal_address = excluded.postal_address,
                    country = excluded.country, updated_at = excluded.updated_at
            """),
            {
                "ids": [c.customer_id for c in latest],
                "names": [c.full_name for c in latest],
                "national": [c.national_id for c in latest],
                "births": [c.birth_date for c in latest],
                "postal": [c.postal_address for c in latest],
                "countries": [c.country for c in latest],
                "now": self._clock.now(),
            },
        )

    async def flag(self, uow: UnitOfWork, data: AccountFlagged, customer_id: str) -> None:
        await uow.session.execute(
            text("""
                INSERT INTO flag (customer_id, account_id, flag, active)
                VALUES (:c, :a, :f, :active)
                ON CONFLICT (customer_id, account_id, flag) DO UPDATE SET active = excluded.active
            """),
            {"c": customer_id, "a": data.account_id or "", "f": data.flag, "active": data.active},
        )

    async def update(
        self, uow: UnitOfWork, account_id: str, customer_id: str, sets: str, **params: Any
    ) -> None:
        """Apply ``sets`` (a constant SET list from this module) to the account, creating it
        first if this is the first the bureau hears of it."""
        await uow.session.execute(
            text("""
                INSERT INTO account (account_id, customer_id, updated_at) VALUES (:a, :c, :now)
                ON CONFLICT (account_id) DO NOTHING
            """),
            {"a": account_id, "c": customer_id, "now": self._clock.now()},
        )
        await uow.session.execute(
            text(f"UPDATE account SET {sets}, updated_at = :now WHERE account_id = :a"),  # noqa: S608 - ``sets`` is a constant of this module
            {"a": account_id, "c": customer_id, "now": self._clock.now()} | params,
        )

    async def standing(
        self,
        uow: UnitOfWork,
        account_id: str,
        customer_id: str,
        currency: str,
        bucket: str,
        dpd: int,
        overdue: Decimal,
        due: date | None = None,
    ) -> None:
        month = self._clock.now().strftime("%Y-%m")
        await self.update(
            uow,
            account_id,
            customer_id,
            "bucket = :bucket, days_past_due = :dpd, overdue = :overdue, currency = :cur, "
            "first_delinquency = CASE WHEN :bucket = 'current' THEN NULL "
            "  ELSE coalesce(account.first_delinquency, CAST(:due AS date)) END, "
            "ratings = jsonb_set(account.ratings, ARRAY[CAST(:month AS text)], "
            "  to_jsonb(greatest(coalesce(account.ratings ->> CAST(:month AS text), '0'), "
            "                    CAST(:rating AS text))))",
            bucket=bucket,
            dpd=dpd,
            overdue=overdue,
            cur=currency,
            due=due or self._clock.now().date(),
            month=month,
            rating=rating(bucket),
        )

    async def payment_missed(self, uow: UnitOfWork, data: PaymentMissed) -> None:
        await self.standing(
            uow,
            data.account_id,
            data.customer_id,
            data.currency,
            data.bucket,
            data.days_past_due,
            data.total_overdue,
            data.due_date,
        )

    async def delinquency_changed(self, uow: UnitOfWork, data: DelinquencyChanged) -> None:
        await self.standing(
            uow,
            data.account_id,
            data.customer_id,
            data.currency,
            data.bucket,
            data.days_past_due,
            data.total_overdue,
        )

    async def loans_opened(self, uow: UnitOfWork, loans: Sequence[LoanOpened]) -> None:
        """A run of new loans in one statement (a loan seen twice: the last one stands)."""
        last = {loan.account_id: loan for loan in loans}
        await uow.session.execute(
            text("""
                INSERT INTO account (account_id, customer_id, opened_on, currency, updated_at)
                SELECT a, c, o, cur, CAST(:now AS timestamptz)
                FROM unnest(CAST(:a AS text[]), CAST(:c AS text[]), CAST(:o AS date[]),
                            CAST(:cur AS text[])) AS t (a, c, o, cur)
                ON CONFLICT (account_id) DO UPDATE
                SET customer_id = excluded.customer_id, opened_on = excluded.opened_on,
                    currency = excluded.currency, updated_at = excluded.updated_at
            """),
            {
                "a": list(last),
                "c": [loan.customer_id for loan in last.values()],
                "o": [loan.opened_on for loan in last.values()],
                "cur": [loan.currency for loan in last.values()],
                "now": self._clock.now(),
            },
        )

    async def payments_received(self, uow: UnitOfWork, payments: Sequence[PaymentReceived]) -> None:
        """A run of payments in two statements; per account the last one's overdue stands."""
        last = {p.account_id: p for p in payments}
        params = {
            "a": list(last),
            "c": [p.customer_id for p in last.values()],
            "o": [p.total_overdue for p in last.values()],
            "cur": [p.currency for p in last.values()],
            "now": self._clock.now(),
            "on": self._clock.now().date(),
        }
        await uow.session.execute(
            text("""
                INSERT INTO account (account_id, customer_id, updated_at)
                SELECT a, c, CAST(:now AS timestamptz)
                FROM unnest(CAST(:a AS text[]), CAST(:c AS text[])) AS t (a, c)
                ON CONFLICT (account_id) DO NOTHING
            """),
            params,
        )
        await uow.session.execute(
            text("""
                UPDATE account SET overdue = t.o, last_payment_on = :on, currency = t.cur,
                                   updated_at = :now
                FROM unnest(CAST(:a AS text[]), CAST(:o AS numeric[]), CAST(:cur AS text[]))
                       AS t (a, o, cur)
                WHERE account.account_id = t.a
            """),
            params,
        )

    async def cured(self, uow: UnitOfWork, data: AccountCured) -> None:
        await self.update(
            uow,
            data.account_id,
            data.customer_id,
            "bucket = 'current', days_past_due = 0, overdue = 0, first_delinquency = NULL",
        )

    async def plan(self, uow: UnitOfWork, account_id: str, customer_id: str, active: bool) -> None:
        await self.update(uow, account_id, customer_id, "plan_active = :on", on=active)

    async def notice(
        self, uow: UnitOfWork, customer_id: str, data: NoticeDelivered | NoticeReturned
    ) -> None:
        at = self._clock.now()
        if isinstance(data, NoticeReturned):
            await self.update(
                uow,
                data.account_id,
                customer_id,
                "notice_returned_at = :at",
                at=data.returned_at or at,
            )
            return
        delivered = data.delivered_at or at
        sets = "notice_sent_at = coalesce(account.notice_sent_at, :at)"
        if data.notice == "bureau_pre_notice":
            sets += ", pre_notice_delivered_at = coalesce(account.pre_notice_delivered_at, :at)"
        await self.update(uow, data.account_id, customer_id, sets, at=delivered)

    async def contact_attempted(
        self, uow: UnitOfWork, customer_id: str, data: ContactAttempted
    ) -> None:
        if data.outcome in CONVERSATIONS:
            await self.update(
                uow, data.account_id, customer_id, "conversation_at = :at", at=data.attempted_at
            )
        elif data.outcome in ("delivered", "sent") and data.channel in WRITTEN:
            await self.update(
                uow,
                data.account_id,
                customer_id,
                "notice_sent_at = coalesce(account.notice_sent_at, :at)",
                at=data.attempted_at,
            )
        elif data.outcome == "returned":
            await self.update(
                uow, data.account_id, customer_id, "notice_returned_at = :at", at=data.attempted_at
            )

    async def dispute(self, uow: UnitOfWork, account_id: str, customer_id: str, state: str) -> None:
        await self.update(uow, account_id, customer_id, "dispute = :state", state=state)

    # --- cycles --------------------------------------------------------------------------------

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
            status = await uow.session.scalar(
                text("""
                    INSERT INTO cycle (cycle_id, started_at) VALUES (:c, :now)
                    ON CONFLICT (cycle_id) DO UPDATE SET cycle_id = excluded.cycle_id
                    RETURNING status
                """),
                {"c": cycle, "now": now},
            )
            await uow.commit()
        if status == "submitted":
            return None
        if status == "running":
            after = ""
            waited = 0
            while True:
                async with units() as uow:
                    decided = await self._decide_chunk(
                        uow, cycle, after, now, http, wait=waited < BEHIND_RETRIES
                    )
                    if decided is BEHIND:
                        # The events the same moment produced (a bucket change at the cycle's
                        # own clock move, say) are still on their way to this service: the
                        # chunk is decided again once they are in, not blocked for them.
                        waited += 1
                        await asyncio.sleep(BEHIND_WAIT_SECONDS)
                        continue
                    await uow.commit()
                if decided is None:
                    break
                after = decided
            async with units() as uow:
                await self._build_files(uow, cycle, now)
                await uow.session.execute(
                    text("UPDATE cycle SET status = 'built' WHERE cycle_id = :c"), {"c": cycle}
                )
                await uow.commit()
        await self._submit(units, cycle, http)
        return cycle

    async def _decide_chunk(
        self,
        uow: UnitOfWork,
        cycle: str,
        after: str,
        now: datetime,
        http: httpx.AsyncClient | None = None,
        *,
        wait: bool = False,
    ) -> str | None:
        """Decide one chunk of accounts; with ``wait``, returns :data:`BEHIND` (deciding
        nothing) when the ledger already shows a standing this service has not heard of."""
        rows = (
            (await uow.session.execute(FACTS_SQL, {"cycle": cycle, "after": after, "limit": CHUNK}))
            .mappings()
            .all()
        )
        if not rows:
            return None
        ledger = await self._ledger_standings(http, [r["account_id"] for r in rows])
        if (
            wait
            and ledger is not None
            and any(
                self._reconciled(row, None) and not self._reconciled(row, ledger) for row in rows
            )
        ):
            return BEHIND
        reports: list[dict[str, Any]] = []
        reported: list[tuple[str, str]] = []
        month = now.date().replace(day=1)
        for stored in rows:
            row: Mapping[Any, Any] = stored
            standing = ledger.get(row["account_id"]) if ledger is not None else None
            if standing is not None and self._reconciled(row, ledger):
                # Days past due grow every day without an event (the ledger announces bucket
                # changes, not each day): the record carries the ledger's count at cycle time.
                row = {**row, "days_past_due": int(standing["days_past_due"])}
            country = row["country"] or "CN"
            facts = Facts(
                account_id=row["account_id"],
                country=country,
                bucket=row["bucket"],
                days_past_due=row["days_past_due"],
                overdue=row["overdue"],
                identity=Identity(
                    row["full_name"], row["national_id"], row["birth_date"], row["postal_address"]
                ),
                flags=frozenset(row["flags"]),
                dispute=row["dispute"],
                plan_active=row["plan_active"],
                pre_notice_delivered_at=row["pre_notice_delivered_at"],
                notice_sent_at=row["notice_sent_at"],
                notice_returned_at=row["notice_returned_at"],
                conversation_at=row["conversation_at"],
                reconciled=self._reconciled(row, ledger),
                reported_status=row["reported_status"],
                rejected_unchanged=row["rejected_unchanged"],
            )
            verdict = decide(facts, now, self._rules)
            if verdict.kind == "skipped":
                continue
            line = None
            if verdict.kind != "blocked":
                line = self._line(
                    row,
                    country,
                    verdict.status,
                    verdict.compliance_code,
                    verdict.special_comment,
                    month,
                    now,
                )
                reported.append((row["account_id"], verdict.status))
            reports.append(
                {
                    "a": row["account_id"],
                    "country": "US" if country == "US" else "CN",
                    "kind": verdict.kind,
                    "status": verdict.status,
                    "code": verdict.compliance_code,
                    "reasons": "\x1f".join(verdict.failed),
                    "line": line,
                }
            )
            customer = row["customer_id"]
            if verdict.kind == "submitted":
                event: Payload = ReportSubmitted(
                    account_id=row["account_id"],
                    cycle=cycle,
                    customer_id=customer,
                    status=verdict.status,
                    compliance_code=verdict.compliance_code or None,
                )
            elif verdict.kind == "corrected":
                event = ReportCorrected(
                    account_id=row["account_id"],
                    cycle=cycle,
                    customer_id=customer,
                    status=verdict.status,
                    previous_status=row["reported_status"],
                )
            else:
                event = ReportBlocked(
                    account_id=row["account_id"],
                    cycle=cycle,
                    reasons=list(verdict.failed),
                    customer_id=customer,
                )
            uow.publish(
                new_event(event, source=SOURCE, key=customer, time=now, subject=row["account_id"])
            )
        if reports:
            await uow.session.execute(
                text("""
                    INSERT INTO report (cycle_id, account_id, country, kind, status,
                                        compliance_code, reasons, line)
                    SELECT :cycle, a, country, kind, status, nullif(code, ''),
                           CASE WHEN reasons = '' THEN '{}'
                                ELSE string_to_array(reasons, chr(31)) END,
                           line
                    FROM unnest(CAST(:a AS text[]), CAST(:country AS text[]),
                                CAST(:kind AS text[]), CAST(:status AS text[]),
                                CAST(:code AS text[]), CAST(:reasons AS text[]),
                                CAST(:line AS text[]))
                      AS t (a, country, kind, status, code, reasons, line)
                    ON CONFLICT (cycle_id, account_id) DO NOTHING
                """),
                {"cycle": cycle}
                | {
                    k: [r[k] for r in reports]
                    for k in ("a", "country", "kind", "status", "code", "reasons", "line")
                },
            )
        if reported:
            await uow.session.execute(
                text("""
                    UPDATE account a SET reported_status = u.status, reported_cycle = :cycle
                    FROM unnest(CAST(:ids AS text[]), CAST(:statuses AS text[])) AS u (id, status)
                    WHERE a.account_id = u.id
                """),
                {
                    "cycle": cycle,
                    "ids": [a for a, _ in reported],
                    "statuses": [s for _, s in reported],
                },
            )
        await uow.flush_events()
        return str(rows[-1]["account_id"])

    async def _ledger_standings(
        self, http: httpx.AsyncClient | None, account_ids: Sequence[str]
    ) -> dict[str, dict[str, Any]] | None:
        """The ledger's own view of these accounts now, or None when no ledger is configured.
        A ledger that cannot be asked stops the cycle (it resumes on the next clock move)
        rather than reporting what could not be checked."""
        if not self._settings.ledger_url or http is None:
            return None
        key = self._settings.ledger_api_key
        response = await http.post(
            f"{self._settings.ledger_url.rstrip('/')}/v1/accounts/standing",
            json={"account_ids": list(account_ids)},
            headers={"Authorization": f"Bearer {key.get_secret_value()}"} if key else {},
            timeout=60,
        )
        response.raise_for_status()
        return {item["account_id"]: item for item in response.json()}

    @staticmethod
    def _reconciled(row: Mapping[Any, Any], ledger: dict[str, dict[str, Any]] | None) -> bool:
        consistent = bool(
            row["currency"] is not None
            and row["overdue"] >= 0
            and (row["days_past_due"] == 0 or row["overdue"] > 0)
        )
        if ledger is None:
            return consistent
        standing = ledger.get(row["account_id"])
        return (
            consistent
            and standing is not None
            and Decimal(str(standing["overdue"])) == row["overdue"]
            and standing["bucket"] == row["bucket"]
            and standing["currency"] == row["currency"]
        )

    def _line(
        self,
        row: Mapping[Any, Any],
        country: str,
        status: str,
        code: str,
        comment: str,
        month: date,
        now: datetime,
    ) -> str:
        if country == "US":
            name = (row["full_name"] or "").split()
            address = us_address(row["postal_address"]) or ("", "", "", "")
            overdue = row["overdue"]
            record = metro2.Base(
                account_number=row["account_id"],
                date_opened=row["opened_on"] or now.date(),
                highest_credit=overdue,
                terms_months=12,
                scheduled_payment=Decimal(0),
                actual_payment=Decimal(0),
                status=status,
                history=history_profile(dict(row["ratings"] or {}), month, row["opened_on"]),
                special_comment=comment,
                compliance_code=code,
                current_balance=overdue,
                amount_past_due=overdue if status != "13" else Decimal(0),
                information_date=now.date(),
                first_delinquency=row["first_delinquency"] if status not in ("11", "13") else None,
                last_payment=row["last_payment_on"],
                date_closed=now.date() if status == "13" else None,
                surname=name[-1] if name else "",
                first_name=" ".join(name[:-1]) if len(name) > 1 else "",
                ssn=(row["national_id"] or "").replace("-", ""),
                birth_date=row["birth_date"],
                address_line=address[0],
                city=address[1],
                state=address[2],
                zip_code=address[3],
                payment_rating="0" if status == "13" else "",
            )
            return metro2.base(self._reporter, record, now)
        return json.dumps(
            {
                "record_version": "arrears-cn-1",
                "reporter": self._reporter.identification,
                "account_id": row["account_id"],
                "name": row["full_name"],
                "id_type": "10",  # 居民身份证
                "id_number": row["national_id"],
                "birth_date": str(row["birth_date"]),
                "currency": row["currency"],
                "overdue_amount": str(row["overdue"]),
                "overdue_days": row["days_past_due"],
                "status": status,
                "five_level_class": five_level(row["days_past_due"]),
                "disputed": code == "XB",
                "dispute_note": {
                    "XB": "争议处理中",
                    "XH": "争议已处理",
                    "XC": "争议已处理，客户仍有异议",
                }.get(code),
                "plan": comment == "AC",
                "reported_at": now.isoformat(),
            },
            ensure_ascii=False,
            sort_keys=True,
        )

    async def _build_files(self, uow: UnitOfWork, cycle: str, now: datetime) -> None:
        for country, fmt, suffix in (("US", "metro2", "txt"), ("CN", "cn-jsonl", "jsonl")):
            exists = await uow.session.scalar(
                text("SELECT 1 FROM bureau_file WHERE cycle_id = :c AND country = :k"),
                {"c": cycle, "k": country},
            )
            if exists:
                continue
            # Streamed to a temporary file, hashed on the way: a cycle's file may not fit in
            # memory. Named by its checksum once complete, then made read-only.
            folder = Path(self._settings.archive_dir) / cycle
            await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
            partial = folder / f"{country}.partial"
            digest = hashlib.sha256()
            totals = metro2.Totals()
            count = 0
            with partial.open("wb") as out:
                write = _writer(out, digest)
                if country == "US":
                    write(metro2.header(self._reporter, now.date(), now.date()))
                streamed = await uow.session.stream(
                    text("""
                        SELECT line FROM report
                        WHERE cycle_id = :c AND country = :k AND line IS NOT NULL
                        ORDER BY account_id
                    """),
                    {"c": cycle, "k": country},
                )
                async for rows in streamed.partitions(CHUNK):
                    for (line,) in rows:
                        write(line)
                        count += 1
                        if country == "US":
                            totals.add(line)
                if country == "US" and count:
                    write(totals.trailer())
            if not count:
                await asyncio.to_thread(partial.unlink)
                continue
            checksum = digest.hexdigest()
            path = folder / f"{country}-{checksum[:16]}.{suffix}"
            await asyncio.to_thread(os.chmod, partial, 0o444)  # archived immutably
            await asyncio.to_thread(partial.replace, path)
            await uow.session.execute(
                text("""
                    INSERT INTO bureau_file (file_id, cycle_id, country, format, path, records,
                                             created_at)
                    VALUES (:id, :c, :k, :f, :p, :n, :now) ON CONFLICT DO NOTHING
                """),
                {
                    "id": checksum,
                    "c": cycle,
                    "k": country,
                    "f": fmt,
                    "p": str(path),
                    "n": count,
                    "now": now,
                },
            )
            await uow.session.execute(
                text("""
                    UPDATE report SET file_id = :id
                    WHERE cycle_id = :c AND country = :k AND line IS NOT NULL
                """),
                {"id": checksum, "c": cycle, "k": country},
            )

    async def _submit(
        self, units: UnitOfWorkFactory, cycle: str, http: httpx.AsyncClient | None
    ) -> None:
        async with units() as uow:
            files = (
                (
                    await uow.session.execute(
                        text(
                            "SELECT * FROM bureau_file WHERE cycle_id = :c AND submitted_at IS NULL"
                        ),
                        {"c": cycle},
                    )
                )
                .mappings()
                .all()
            )
        done = True
        for file in files:
            how: list[str] = []
            acks: dict[str, str] = {}
            if self._settings.drop_dir is not None:
                dropped = await asyncio.to_thread(_drop, file["path"], self._settings.drop_dir)
                how.append(f"drop:{dropped}")
            if self._settings.endpoint and http is not None:
                try:
                    response = await http.post(
                        self._settings.endpoint,
                        content=await asyncio.to_thread(Path(file["path"]).read_bytes),
                        headers={
                            "Idempotency-Key": file["file_id"],
                            "Content-Type": "application/octet-stream",
                            "X-Arrears-Format": file["format"],
                        },
                        timeout=30,
                    )
                    response.raise_for_status()
                    for item in (response.json() or {}).get("records", []):
                        acks[str(item["account_id"])] = str(item.get("status", "accepted"))
                    how.append("http")
                except (httpx.HTTPError, ValueError, KeyError) as exc:
                    log.warning(
                        "submitting %s failed (%s); retrying next time",
                        file["file_id"],
                        type(exc).__name__,
                    )
                    done = False
                    continue
            async with units() as uow:
                await uow.session.execute(
                    text(
                        "UPDATE bureau_file SET submitted_at = :now, submission = :how "
                        "WHERE file_id = :id"
                    ),
                    {"now": self._clock.now(), "how": ",".join(how), "id": file["file_id"]},
                )
                if acks:
                    await uow.session.execute(
                        text("""
                            UPDATE report r SET ack = u.ack
                            FROM unnest(CAST(:ids AS text[]), CAST(:acks AS text[])) AS u (id, ack)
                            WHERE r.cycle_id = :c AND r.account_id = u.id
                        """),
                        {"c": cycle, "ids": list(acks), "acks": list(acks.values())},
                    )
                    # A rejected record is not sent again until something about it changes;
                    # what it last reported stands as it was before.
                    rejected = [a for a, ack in acks.items() if ack == "rejected"]
                    await uow.session.execute(
                        text("""
                            UPDATE account a
                            SET rejected_at = :now,
                                reported_status = (
                                  SELECT r.status FROM report r
                                  WHERE r.account_id = a.account_id AND r.cycle_id < :c
                                    AND r.kind <> 'blocked' AND r.ack IS DISTINCT FROM 'rejected'
                                  ORDER BY r.cycle_id DESC LIMIT 1)
                            WHERE a.account_id = ANY(CAST(:ids AS text[]))
                        """),
                        {"now": self._clock.now(), "c": cycle, "ids": rejected},
                    )
                await uow.commit()
        if done:
            async with units() as uow:
                await uow.session.execute(
                    text(
                        "UPDATE cycle SET status = 'submitted', finished_at = :now "
                        "WHERE cycle_id = :c"
                    ),
                    {"c": cycle, "now": self._clock.now()},
                )
                await uow.commit()


def _writer(out: Any, digest: Any) -> Callable[[str], None]:
    def write(line: str) -> None:
        data = (line + "\n").encode()
        digest.update(data)
        out.write(data)

    return write


def _drop(source: str, folder: Path) -> str:
    """Copy a file into the bureau's drop folder once: the name carries the checksum, so the
    same name is the same content and a retried submission adds nothing."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / Path(source).name
    if not target.exists():
        partial = target.with_suffix(".partial")
        shutil.copyfile(source, partial)
        partial.replace(target)
    return target.name


def event_handlers(bureau: Bureau) -> dict[str, Handler]:
    def keyed(command: Callable[[UnitOfWork, str, Any], Awaitable[None]]) -> Handler:
        async def handle(uow: UnitOfWork, event: CloudEvent) -> None:
            await command(uow, event.key, event.data)

        return handle

    async def flagged(uow: UnitOfWork, event: CloudEvent) -> None:
        data = cast(AccountFlagged, event.data)
        await bureau.flag(uow, data, data.customer_id or event.key)

    def plan(active: bool) -> Handler:
        async def handle(uow: UnitOfWork, event: CloudEvent) -> None:
            data = cast(PlanActivated | PlanBroken | PlanCompleted, event.data)
            await bureau.plan(uow, data.account_id, data.customer_id, active)

        return handle

    async def dispute_opened(uow: UnitOfWork, event: CloudEvent) -> None:
        await bureau.dispute(uow, cast(DisputeOpened, event.data).account_id, event.key, "open")

    async def dispute_resolved(uow: UnitOfWork, event: CloudEvent) -> None:
        data = cast(DisputeResolved, event.data)
        state = "resolved_disagrees" if data.consumer_disagrees else "resolved"
        await bureau.dispute(uow, data.account_id, event.key, state)

    return {
        "account.flagged": flagged,
        "payment.missed": on_data(bureau.payment_missed),
        "delinquency.changed": on_data(bureau.delinquency_changed),
        "account.cured": on_data(bureau.cured),
        "plan.activated": plan(True),
        "plan.broken": plan(False),
        "plan.completed": plan(False),
        "notice.delivered": keyed(bureau.notice),
        "notice.returned": keyed(bureau.notice),
        "contact.attempted": keyed(bureau.contact_attempted),
        "dispute.opened": dispute_opened,
        "dispute.resolved": dispute_resolved,
    }


def batch_event_handlers(bureau: Bureau) -> dict[str, BatchHandler]:
    return {
        "customer.upserted": on_batch(bureau.upsert_customers),
        "loan.opened": on_batch(bureau.loans_opened),
        "payment.received": on_batch(bureau.payments_received),
    }
