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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from services.bureau.domain import metro2
from services.bureau.domain.figures import Figures, Statement, figures, rating_for, rating_of_bucket
from services.bureau.domain.reporting import (
    Facts,
    Identity,
    Rules,
    decide,
    five_level,
    us_address,
)
from services.bureau.settings import BureauSettings
from shared.clock import Clock
from shared.consumer import Handlers
from shared.db import UnitOfWork, UnitOfWorkFactory
from shared.envelope import CloudEvent, new_event
from shared.events import (
    RIGHT_PARTY,
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
    PaymentReversalApplied,
    PlanActivated,
    PlanBroken,
    PlanCompleted,
    ReportBlocked,
    ReportCorrected,
    ReportSubmitted,
)
from shared.events import Standing as StandingEvent

log = logging.getLogger(__name__)
SOURCE = "/arrears/bureau"
CHUNK = 5000
WRITTEN = {"letter", "email"}  # a delivered one is a mailed or electronic communication

FACTS_SQL = text("""
    SELECT a.*, c.full_name, c.national_id, c.birth_date, c.postal_address, c.country,
           -- what the ledger will show overdue: the next instalment falls due on its date
           -- without an event (one only comes when it is missed, after the grace days)
           a.overdue + CASE WHEN a.next_due_date
                                 < (CAST(:now AS timestamptz)
                                    AT TIME ZONE coalesce(c.timezone, 'UTC'))::date
                            THEN a.next_due_amount ELSE 0 END AS overdue_now,
           last.posted_on AS last_paid_on, last.amount AS last_paid_amount,
           (SELECT coalesce(sum(p.amount), 0) FROM payment p
            WHERE p.account_id = a.account_id AND p.reversed_at IS NULL
              AND p.posted_at >= :since AND p.posted_at < :now) AS paid_in_period,
           (a.rejected_at IS NOT NULL AND a.updated_at <= a.rejected_at
            AND (c.updated_at IS NULL OR c.updated_at <= a.rejected_at)) AS rejected_unchanged,
           ARRAY(SELECT f.flag FROM flag f
                 WHERE f.customer_id = a.customer_id AND f.active
                   AND f.account_id IN ('', a.account_id)) AS flags
    FROM account a LEFT JOIN customer c ON c.customer_id = a.customer_id
    LEFT JOIN LATERAL (SELECT p.posted_on, p.amount FROM payment p
                       WHERE p.account_id = a.account_id AND p.reversed_at IS NULL
                         AND p.posted_at < :now
                       ORDER BY p.posted_at DESC, p.payment_id DESC LIMIT 1) last ON true
    -- in scope: 30 days behind as this service last heard, reported before, or behind since
    -- a first delinquency 30 days ago: days past due count from the oldest unpaid due date,
    -- never earlier than the first delinquency, so this holds every account the ledger has
    -- at 30 or more now, even one whose bucket change at this very clock move is on its way
    WHERE (a.days_past_due >= 30 OR a.reported_status IS NOT NULL
           OR (a.bucket <> 'current'
               AND a.first_delinquency <= (CAST(:now AS timestamptz)
                                           AT TIME ZONE coalesce(c.timezone, 'UTC'))::date - 30))
      AND a.account_id > :after
      AND NOT EXISTS (SELECT 1 FROM report r
                      WHERE r.cycle_id = :cycle AND r.account_id = a.account_id)
    ORDER BY a.account_id
    LIMIT :limit
""")


# A chunk whose accounts this service knows less recently than the ledger waits for the events
# on their way, this many times, before its records are decided (and the mismatch blocks them).
BEHIND = "\x00behind"
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
                                      postal_address, country, timezone, updated_at)
                SELECT *, CAST(:now AS timestamptz)
                FROM unnest(CAST(:ids AS text[]), CAST(:names AS text[]),
                            CAST(:national AS text[]), CAST(:births AS date[]),
                            CAST(:postal AS text[]), CAST(:countries AS text[]),
                            CAST(:zones AS text[]))
                ON CONFLICT (customer_id) DO UPDATE
                SET full_name = excluded.full_name, national_id = excluded.national_id,
                    birth_date = excluded.birth_date, postal_address = excluded.postal_address,
                    country = excluded.country, timezone = excluded.timezone,
                    updated_at = excluded.updated_at
            """),
            {
                "ids": [c.customer_id for c in latest],
                "names": [c.full_name for c in latest],
                "national": [c.national_id for c in latest],
                "births": [c.birth_date for c in latest],
                "postal": [c.postal_address for c in latest],
                "countries": [c.country for c in latest],
                "zones": [c.timezone for c in latest],
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
        balance: Decimal | None = None,
        first_delinquency: date | None = None,
        next_due: Mapping[str, Any] | None = None,
    ) -> None:
        """A missed instalment or a bucket change. The date of first delinquency is the
        ledger's when its event carries one, else the first missed due date since current."""
        await self.update(
            uow,
            account_id,
            customer_id,
            "bucket = :bucket, days_past_due = :dpd, overdue = :overdue, currency = :cur, "
            "balance = coalesce(CAST(:balance AS numeric), account.balance), "
            f"{NEXT_DUE}, "
            "first_delinquency = CASE WHEN CAST(:fd AS date) IS NOT NULL THEN CAST(:fd AS date) "
            "  WHEN :bucket = 'current' THEN NULL "
            "  ELSE coalesce(account.first_delinquency, CAST(:due AS date)) END",
            bucket=bucket,
            dpd=dpd,
            overdue=overdue,
            cur=currency,
            due=due or self._clock.now().date(),
            balance=balance,
            fd=first_delinquency,
            **(next_due or _next_due(None)),
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
            data.balance,
            data.first_delinquency,
            _next_due(data),
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
            balance=data.balance,
            first_delinquency=data.first_delinquency,
            next_due=_next_due(data),
        )
        if data.bucket == "current" and data.balance == 0:
            # Paid off: the rating it had when paid is that of the bucket it leaves (the cure
            # that follows finds it current already).
            await self.update(
                uow,
                data.account_id,
                data.customer_id,
                "closed_rating = :rating",
                rating=rating_of_bucket(data.previous_bucket),
            )

    async def loans_opened(self, uow: UnitOfWork, loans: Sequence[LoanOpened]) -> None:
        """A run of new loans in one statement (a loan seen twice: the last one stands)."""
        last = {loan.account_id: loan for loan in loans}
        await uow.session.execute(
            text("""
                INSERT INTO account (account_id, customer_id, opened_on, currency, principal,
                                     schedule_dues, schedule_amounts, balance, updated_at)
                SELECT a, c, o, cur, p, CAST(d AS date[]), CAST(x AS numeric[]), b,
                       CAST(:now AS timestamptz)
                FROM unnest(CAST(:a AS text[]), CAST(:c AS text[]), CAST(:o AS date[]),
                            CAST(:cur AS text[]), CAST(:p AS numeric[]), CAST(:d AS text[]),
                            CAST(:x AS text[]), CAST(:b AS numeric[]))
                  AS t (a, c, o, cur, p, d, x, b)
                ON CONFLICT (account_id) DO UPDATE
                SET customer_id = excluded.customer_id, opened_on = excluded.opened_on,
                    currency = excluded.currency, principal = excluded.principal,
                    schedule_dues = excluded.schedule_dues,
                    schedule_amounts = excluded.schedule_amounts,
                    -- the ledger's events may have come first (another topic): theirs stands
                    balance = coalesce(account.balance, excluded.balance),
                    updated_at = excluded.updated_at
            """),
            {
                "a": list(last),
                "c": [loan.customer_id for loan in last.values()],
                "o": [loan.opened_on for loan in last.values()],
                "cur": [loan.currency for loan in last.values()],
                "p": [loan.principal for loan in last.values()],
                # arrays of arrays travel as their literals: unnest would flatten them
                "d": [
                    "{" + ",".join(str(i.due_date) for i in loan.schedule) + "}"
                    for loan in last.values()
                ],
                "x": [
                    "{" + ",".join(str(i.amount) for i in loan.schedule) + "}"
                    for loan in last.values()
                ],
                "b": [sum((i.amount for i in loan.schedule), Decimal(0)) for loan in last.values()],
                "now": self._clock.now(),
            },
        )

    async def payments_received(self, uow: UnitOfWork, payments: Sequence[PaymentReceived]) -> None:
        """A run of payments in three statements; per account the last one's amounts stand,
        and each payment is kept (for the period's actual payment and the last payment)."""
        last = {p.account_id: p for p in payments}
        params = {
            "a": list(last),
            "c": [p.customer_id for p in last.values()],
            "o": [p.total_overdue for p in last.values()],
            "cur": [p.currency for p in last.values()],
            "now": self._clock.now(),
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
                UPDATE account SET overdue = t.o, currency = t.cur,
                                   balance = coalesce(t.b, account.balance),
                                   next_due_date = CASE WHEN t.b IS NULL
                                                        THEN account.next_due_date ELSE t.nd END,
                                   next_due_amount = CASE WHEN t.b IS NULL
                                                          THEN account.next_due_amount
                                                          ELSE t.nx END,
                                   -- paid off current, unless the cure said how late
                                   closed_rating = CASE WHEN t.b = 0
                                                        THEN coalesce(account.closed_rating, '0')
                                                   END,
                                   updated_at = :now
                FROM unnest(CAST(:a AS text[]), CAST(:o AS numeric[]), CAST(:cur AS text[]),
                            CAST(:b AS numeric[]), CAST(:nd AS date[]), CAST(:nx AS numeric[]))
                       AS t (a, o, cur, b, nd, nx)
                WHERE account.account_id = t.a
            """),
            params
            | {
                "b": [p.balance for p in last.values()],
                "nd": [p.next_due_date for p in last.values()],
                "nx": [p.next_due_amount for p in last.values()],
            },
        )
        known = [p for p in payments if p.posted_at is not None and p.posted_on is not None]
        if known:
            await uow.session.execute(
                text("""
                    INSERT INTO payment (payment_id, account_id, amount, posted_at, posted_on)
                    SELECT * FROM unnest(CAST(:ids AS text[]), CAST(:a AS text[]),
                                         CAST(:x AS numeric[]), CAST(:at AS timestamptz[]),
                                         CAST(:on AS date[]))
                    ON CONFLICT (payment_id) DO NOTHING
                """),
                {
                    "ids": [p.payment_id for p in known],
                    "a": [p.account_id for p in known],
                    "x": [p.amount for p in known],
                    "at": [p.posted_at for p in known],
                    "on": [p.posted_on for p in known],
                },
            )

    async def reversal_applied(self, uow: UnitOfWork, data: PaymentReversalApplied) -> None:
        await self.update(
            uow,
            data.account_id,
            data.customer_id,
            f"overdue = :overdue, balance = coalesce(:balance, account.balance), {NEXT_DUE}, "
            "closed_rating = CASE WHEN CAST(:balance AS numeric) = 0 "
            "  THEN account.closed_rating END",
            overdue=data.total_overdue,
            balance=data.balance,
            **_next_due(data),
        )
        await uow.session.execute(
            text("UPDATE payment SET reversed_at = :at WHERE payment_id = :p"),
            {"at": data.reversed_at, "p": data.payment_id},
        )

    async def cured(self, uow: UnitOfWork, data: AccountCured) -> None:
        """Back to current. Paid off (a zero balance): the rating it had when paid is that of
        the bucket it leaves, and the ledger keeps its date of first delinquency."""
        bucket = await uow.session.scalar(
            text("SELECT bucket FROM account WHERE account_id = :a"), {"a": data.account_id}
        )
        paid_off = data.balance == 0
        await self.update(
            uow,
            data.account_id,
            data.customer_id,
            "bucket = 'current', days_past_due = 0, overdue = 0, first_delinquency = :fd, "
            "balance = coalesce(CAST(:balance AS numeric), account.balance), "
            f"{NEXT_DUE}, "
            "closed_rating = CASE WHEN CAST(:paid_off AS boolean) "
            "  THEN coalesce(account.closed_rating, :rating) END",
            paid_off=paid_off,
            fd=data.first_delinquency if paid_off else None,
            balance=data.balance,
            rating=rating_of_bucket(bucket or "current"),
            **_next_due(data),
        )

    async def plan(
        self,
        uow: UnitOfWork,
        account_id: str,
        customer_id: str,
        active: bool,
        activated: PlanActivated | None = None,
    ) -> None:
        if activated is None or not activated.installments:
            await self.update(uow, account_id, customer_id, "plan_active = :on", on=active)
            return
        await self.update(
            uow,
            account_id,
            customer_id,
            "plan_active = :on, plan_dues = CAST(:dues AS date[]), "
            "plan_amounts = CAST(:amounts AS numeric[])",
            on=active,
            dues=[i.due_date for i in activated.installments],
            amounts=[i.amount for i in activated.installments],
        )

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
        if data.outcome in RIGHT_PARTY:
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
                await uow.session.execute(
                    text("UPDATE cycle SET status = 'built' WHERE cycle_id = :c"), {"c": cycle}
                )
                await uow.commit()
        await self._submit(units, cycle, http)
        return cycle

    async def _period(self, uow: UnitOfWork, cycle: str, now: datetime) -> Period:
        """Where this cycle's reporting period starts (the previous cycle's instant; a first
        cycle looks back one cycle's length), and the day of each month's first cycle."""
        rows = (
            await uow.session.execute(
                text("""
                    SELECT cycle_id, started_at FROM cycle WHERE started_at <= :now
                    ORDER BY started_at
                """),
                {"now": now},
            )
        ).all()
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
        fetched = (
            (
                await uow.session.execute(
                    FACTS_SQL,
                    {
                        "cycle": cycle,
                        "after": after,
                        "limit": CHUNK,
                        "since": period.since,
                        "now": now,
                    },
                )
            )
            .mappings()
            .all()
        )
        if not fetched:
            return None
        rows: list[Mapping[str, Any]] = [{**r, "overdue": r["overdue_now"]} for r in fetched]
        ledger = await self._ledger_standings(http, [r["account_id"] for r in rows])
        if (
            wait
            and ledger is not None
            and any(
                # only what the ledger knows can be on its way: an account it has never heard
                # of is blocked now rather than holding the whole cycle back
                row["account_id"] in ledger
                and self._reconciled(row, None)
                and not self._reconciled(row, ledger)
                for row in rows
            )
        ):
            return BEHIND
        reports: list[dict[str, Any]] = []
        reported: list[tuple[str, str]] = []
        looked: list[tuple[str, str]] = []  # the history profile's value of this cycle
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
                balance=row["balance"],
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
            looked.append((row["account_id"], rating_for(row["days_past_due"])))
            if verdict.kind == "skipped":
                continue
            line = None
            if verdict.kind != "blocked":
                reported_figures = figures(
                    _statement(row),
                    verdict.status,
                    verdict.compliance_code,
                    verdict.special_comment,
                    now.date(),
                    period.cycle_days,
                )
                line = self._line(row, country, reported_figures, now)
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
        await uow.session.execute(
            text("""
                UPDATE account a
                SET history = jsonb_set(a.history, ARRAY[CAST(:month AS text)], to_jsonb(u.value))
                FROM unnest(CAST(:ids AS text[]), CAST(:values AS text[])) AS u (id, value)
                WHERE a.account_id = u.id
            """),
            {
                "month": now.strftime("%Y-%m"),
                "ids": [a for a, _ in looked],
                "values": [v for _, v in looked],
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
            and row["balance"] is not None
            and row["balance"] >= row["overdue"]
        )
        if ledger is None:
            return consistent
        standing = ledger.get(row["account_id"])
        return (
            consistent
            and standing is not None
            and Decimal(str(standing["overdue"])) == row["overdue"]
            and Decimal(str(standing["balance"])) == row["balance"]
            and standing["bucket"] == row["bucket"]
            and standing["currency"] == row["currency"]
        )

    def _line(self, row: Mapping[Any, Any], country: str, f: Figures, now: datetime) -> str:
        if country == "US":
            name = (row["full_name"] or "").split()
            address = us_address(row["postal_address"]) or ("", "", "", "")
            record = metro2.Base(
                account_number=row["account_id"],
                date_opened=row["opened_on"] or now.date(),
                highest_credit=f.highest_credit,
                terms_months=f.terms_duration,
                terms_frequency=f.terms_frequency,
                scheduled_payment=f.scheduled_payment,
                actual_payment=f.actual_payment,
                status=f.status,
                history=f.history,
                special_comment=f.special_comment,
                compliance_code=f.compliance_code,
                current_balance=f.current_balance,
                amount_past_due=f.amount_past_due,
                information_date=f.information_date,
                first_delinquency=f.first_delinquency,
                last_payment=f.last_payment,
                date_closed=f.date_closed,
                surname=name[-1] if name else "",
                first_name=" ".join(name[:-1]) if len(name) > 1 else "",
                ssn=(row["national_id"] or "").replace("-", ""),
                birth_date=row["birth_date"],
                address_line=address[0],
                city=address[1],
                state=address[2],
                zip_code=address[3],
                payment_rating=f.payment_rating,
            )
            return metro2.base(self._reporter, record, now)
        code = f.compliance_code
        pre_notice = row["pre_notice_delivered_at"]
        return json.dumps(
            {
                "record_version": "arrears-cn-2",
                "reporter": self._reporter.identification,
                "account_id": row["account_id"],
                "name": row["full_name"],
                "id_type": "10",  # 居民身份证
                "id_number": row["national_id"],
                "birth_date": str(row["birth_date"]),
                "currency": row["currency"],
                "opened_on": _day(row["opened_on"]),
                "original_amount": str(f.highest_credit),
                "installments": f.terms_duration,
                "installment_frequency": f.terms_frequency,
                "installment_amount": str(f.scheduled_payment),
                "balance": str(f.current_balance),
                "overdue_amount": str(f.amount_past_due),
                "overdue_days": 0 if f.status == "13" else row["days_past_due"],
                "paid_in_period": str(f.actual_payment),
                "last_payment_date": _day(f.last_payment),
                "last_payment_amount": (
                    str(f.last_payment_amount) if f.last_payment_amount is not None else None
                ),
                "status": f.status,
                "five_level_class": five_level(0 if f.status == "13" else row["days_past_due"]),
                "first_delinquency_date": _day(f.first_delinquency),
                "closed_on": _day(f.date_closed),
                "information_date": _day(f.information_date),
                "pre_notice_date": _day(pre_notice.astimezone(UTC).date() if pre_notice else None),
                "disputed": code == "XB",
                "dispute_note": {
                    "XB": "争议处理中",
                    "XH": "争议已处理",
                    "XC": "争议已处理，客户仍有异议",
                }.get(code),
                "plan": f.special_comment == "AC",
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


# The next unpaid instalment, from an event that carries the ledger's standing (an older
# producer's event, without a balance, leaves what was known).
NEXT_DUE = (
    "next_due_date = CASE WHEN CAST(:standing AS boolean) THEN CAST(:next_due_date AS date) "
    "  ELSE account.next_due_date END, "
    "next_due_amount = CASE WHEN CAST(:standing AS boolean) "
    "  THEN CAST(:next_due_amount AS numeric) ELSE account.next_due_amount END"
)


def _next_due(data: StandingEvent | None) -> dict[str, Any]:
    known = data is not None and data.balance is not None
    return {
        "standing": known,
        "next_due_date": data.next_due_date if data is not None and known else None,
        "next_due_amount": data.next_due_amount if data is not None and known else None,
    }


@dataclass(frozen=True)
class Period:
    since: datetime  # the reporting period is [since, the cycle's instant)
    cycle_days: dict[str, date]  # "YYYY-MM" -> the day of that month's first cycle


def _statement(row: Mapping[Any, Any]) -> Statement:
    return Statement(
        principal=row["principal"],
        opened_on=row["opened_on"],
        dues=tuple(row["schedule_dues"] or ()),
        amounts=tuple(row["schedule_amounts"] or ()),
        balance=row["balance"],
        overdue=row["overdue"],
        days_past_due=row["days_past_due"],
        first_delinquency=row["first_delinquency"],
        plan_active=row["plan_active"],
        plan_dues=tuple(row["plan_dues"] or ()),
        plan_amounts=tuple(row["plan_amounts"] or ()),
        closed_rating=row["closed_rating"],
        last_payment_on=row["last_paid_on"],
        last_payment_amount=row["last_paid_amount"],
        paid_in_period=row["paid_in_period"],
        recorded=dict(row["history"] or {}),
    )


def _day(value: date | None) -> str | None:
    return value.isoformat() if value else None


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


def handlers(bureau: Bureau) -> Handlers:
    """What the bureau does with each payload it reads."""
    registry = Handlers()
    registry.runs(CustomerUpserted, bureau.upsert_customers)
    registry.runs(LoanOpened, bureau.loans_opened)
    registry.runs(PaymentReceived, bureau.payments_received)

    async def flagged(uow: UnitOfWork, data: AccountFlagged, event: CloudEvent) -> None:
        await bureau.flag(uow, data, data.customer_id or event.key)

    async def activated(uow: UnitOfWork, data: PlanActivated, _: CloudEvent) -> None:
        await bureau.plan(uow, data.account_id, data.customer_id, True, data)

    async def ended(uow: UnitOfWork, data: PlanBroken | PlanCompleted, _: CloudEvent) -> None:
        await bureau.plan(uow, data.account_id, data.customer_id, False, None)

    async def notice(
        uow: UnitOfWork, data: NoticeDelivered | NoticeReturned, event: CloudEvent
    ) -> None:
        await bureau.notice(uow, event.key, data)

    async def attempted(uow: UnitOfWork, data: ContactAttempted, event: CloudEvent) -> None:
        await bureau.contact_attempted(uow, event.key, data)

    async def dispute_opened(uow: UnitOfWork, data: DisputeOpened, event: CloudEvent) -> None:
        await bureau.dispute(uow, data.account_id, event.key, "open")

    async def dispute_resolved(uow: UnitOfWork, data: DisputeResolved, event: CloudEvent) -> None:
        state = "resolved_disagrees" if data.consumer_disagrees else "resolved"
        await bureau.dispute(uow, data.account_id, event.key, state)

    registry.each(AccountFlagged, flagged)
    registry.on(PaymentMissed, bureau.payment_missed)
    registry.on(DelinquencyChanged, bureau.delinquency_changed)
    registry.on(AccountCured, bureau.cured)
    registry.on(PaymentReversalApplied, bureau.reversal_applied)
    registry.each(PlanActivated, activated)
    registry.each(PlanBroken, ended)
    registry.each(PlanCompleted, ended)
    registry.each(NoticeDelivered, notice)
    registry.each(NoticeReturned, notice)
    registry.each(ContactAttempted, attempted)
    registry.each(DisputeOpened, dispute_opened)
    registry.each(DisputeResolved, dispute_resolved)
    return registry
