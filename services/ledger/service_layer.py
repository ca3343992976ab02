"""The ledger's use cases. Each takes the unit of work it runs in; none commits (the caller's
unit of work does, together with the events these publish).

Delinquency is evaluated by set-based SQL over every account (or one), never a Python loop over
rows: Python only turns the rows that *changed* into events.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import RowMapping, TextClause, text

from services.ledger.domain.allocation import (
    Installment,
    LedgerError,
    allocate,
    apply,
    validate_schedule,
)
from services.ledger.domain.delinquency import bucket_case_sql, next_bucket_start_sql
from shared.clock import Clock
from shared.consumer import BatchHandler, Handler, PermanentError, on_batch, on_data
from shared.db import UnitOfWork
from shared.envelope import CloudEvent, new_event
from shared.events import (
    AccountCured,
    AccountEvent,
    AccountFlagged,
    CustomerUpserted,
    DelinquencyChanged,
    LoanOpened,
    Payload,
    PaymentMissed,
    PaymentPosted,
    PaymentReceived,
    PaymentReversalApplied,
    PaymentReversed,
    PlanActivated,
    PlanAgreed,
    PlanBroken,
    PlanCompleted,
    PromiseBroken,
    PromiseKept,
    PromiseMade,
)

log = logging.getLogger(__name__)
SOURCE = "/arrears/ledger"
EVENT_CHUNK = 5000  # evaluated rows turned into events and written out at a time

# Everything below runs on every clock move over all accounts: keep it to set-based statements.
_LOCAL = """
  SELECT a.account_id, a.customer_id, a.currency, a.product, a.days_past_due AS old_dpd,
         a.bucket AS old_bucket, a.overdue AS old_overdue, a.in_arrears AS old_in_arrears,
         a.paused_since, a.frozen_dpd, a.paused_days, coalesce(c.timezone, 'UTC') AS tz,
         a.first_delinquency AS old_first_delinquency,
         (CAST(:now AS timestamptz) AT TIME ZONE coalesce(c.timezone, 'UTC'))::date AS today,
         coalesce(p.grace_days, 0) AS grace
  FROM account a
  LEFT JOIN customer c ON c.customer_id = a.customer_id
  LEFT JOIN product p ON p.product = a.product
  {where}
"""

# The accounts due for review at :now, numbered into chunks: one range of an index, since each
# account keeps the instant its review day begins in its customer's own calendar.
REVIEW_CHUNK = 5000
REVIEW_DUE_SQL = (
    text("DROP TABLE IF EXISTS review_due"),
    text(f"""
        CREATE TEMP TABLE review_due ON COMMIT DROP AS
        SELECT account_id, (row_number() OVER (ORDER BY account_id) - 1) / {REVIEW_CHUNK} AS chunk
        FROM account
        WHERE review_at IS NULL OR review_at <= CAST(:now AS timestamptz)
    """),
    text("CREATE INDEX ON review_due (chunk)"),
    text("SELECT coalesce(max(chunk) + 1, 0) FROM review_due"),
)
# ``= ANY(ARRAY(...))`` rather than ``IN (...)``: the planner then expects a handful of accounts
# and looks each one's rows up by index, instead of scanning every instalment for a chunk.
_IN_CHUNK = (
    "WHERE a.account_id = ANY(ARRAY(SELECT account_id FROM review_due WHERE chunk = :chunk))"
)


def _both(
    template: str, parts: Mapping[str, str] | None = None, *, only_due: bool = False
) -> tuple[TextClause, TextClause]:
    """The statement over every account (or, ``only_due``, over one chunk of the accounts due
    for review), and over some (``:accounts``). Two statements, not one with
    ``:accounts IS NULL OR ...``, so the second keeps its index lookup."""
    every = _LOCAL.format(where=_IN_CHUNK if only_due else "")
    one = _LOCAL.format(where="WHERE a.account_id = ANY(CAST(:accounts AS text[]))")
    return (
        text(template.format(local=every, **(parts or {}))),
        text(template.format(local=one, **(parts or {}))),
    )


# Where an account stands at :now: days past due (counted from the oldest unpaid instalment in
# the customer's timezone, after the product's grace, frozen while a plan is kept), overdue,
# bucket, whether it is in arrears, and the first later day on which any of that (or a missed
# instalment) can change by the passing of time alone: its ``review_on`` (kept as ``review_at``,
# the instant that day begins in the customer's calendar). Reviewing early is
# harmless (it finds nothing and sets a later date); so where unsure, the date is early.
_STATE = """
local AS ({local}),
dues AS (
  SELECT i.account_id,
         min(i.due_date) FILTER (WHERE i.paid < i.amount) AS oldest_unpaid,
         min(i.due_date) FILTER (WHERE i.paid < i.amount AND i.due_date >= l.today) AS next_due,
         min(i.due_date) FILTER (WHERE i.paid < i.amount AND i.missed_at IS NULL
                                   AND l.today - i.due_date <= l.grace) AS next_miss,
         coalesce(sum(i.amount - i.paid) FILTER (WHERE i.due_date < l.today), 0) AS overdue,
         sum(i.amount - i.paid) AS outstanding,
         (array_agg(i.amount - i.paid ORDER BY i.due_date, i.installment_no)
            FILTER (WHERE i.paid < i.amount AND i.due_date >= l.today))[1] AS next_due_amount
  FROM installment i JOIN local l ON l.account_id = i.account_id
  GROUP BY i.account_id
),
counted AS (
  SELECT l.*, coalesce(d.overdue, 0) AS overdue, coalesce(d.outstanding, 0) AS outstanding,
         d.oldest_unpaid, d.next_due, d.next_due_amount, d.next_miss,
         CASE WHEN d.oldest_unpaid IS NOT NULL AND l.today - d.oldest_unpaid > l.grace
              THEN l.today - d.oldest_unpaid ELSE 0 END AS natural_dpd
  FROM local l LEFT JOIN dues d ON d.account_id = l.account_id
),
computed AS (
  -- A kept plan freezes the count; paused days are not counted once it ends.
  SELECT n.*, CASE WHEN n.paused_since IS NOT NULL THEN n.frozen_dpd
                   ELSE greatest(0, n.natural_dpd - n.paused_days) END AS dpd
  FROM counted n
),
next AS (
  SELECT c.*, {bucket} AS bucket,
         CASE WHEN c.dpd > 0 THEN true WHEN c.overdue = 0 THEN false
              ELSE c.old_in_arrears END AS in_arrears,
         -- The date of first delinquency (FCRA 623(a)(5)): the oldest unpaid due date when the
         -- account fell behind, kept while it stays behind, and kept when it is paid off
         -- behind (the bureau reports it with status 13); gone once it is current again.
         CASE WHEN c.dpd > 0 OR (c.overdue > 0 AND c.old_in_arrears)
              THEN CASE WHEN c.old_in_arrears THEN coalesce(c.old_first_delinquency,
                                                            c.oldest_unpaid)
                        ELSE c.oldest_unpaid END
              WHEN c.outstanding = 0 THEN c.old_first_delinquency
         END AS first_delinquency,
         greatest(c.today + 1, coalesce(least(
           c.next_due + 1,                -- it becomes overdue
           c.next_miss + c.grace + 1,     -- it is missed
           CASE WHEN c.paused_since IS NOT NULL THEN NULL
                WHEN c.dpd > 0 THEN c.today + ({next_start} - c.dpd)  -- the next bucket
                WHEN c.oldest_unpaid IS NOT NULL THEN c.oldest_unpaid + c.grace + 1
           END), 'infinity'::date)) AS review_on
  FROM computed c
)
"""

_PARTS = {"bucket": bucket_case_sql("c.dpd"), "next_start": next_bucket_start_sql("c.dpd")}

STATE_SQL = _both(
    "WITH "
    + _STATE
    + "SELECT account_id, dpd, bucket, overdue, outstanding, in_arrears, first_delinquency, today"
    + " FROM next",
    _PARTS,
)

# One pass: move what changed and mark newly missed instalments (so that payment.missed goes
# out exactly once each), returning both kinds of rows for Python to turn into events.
EVALUATE_SQL = _both(
    "WITH "
    + _STATE
    + """,
changed AS (
  UPDATE account a
  SET days_past_due = n.dpd, bucket = n.bucket, overdue = n.overdue,
      in_arrears = n.in_arrears, evaluated_at = CAST(:now AS timestamptz),
      paused_days = CASE WHEN n.in_arrears THEN a.paused_days ELSE 0 END,
      review_at = n.review_on::timestamp AT TIME ZONE n.tz,
      first_delinquency = n.first_delinquency
  FROM next n
  WHERE a.account_id = n.account_id
    AND (a.bucket, a.overdue, a.in_arrears, a.review_at, a.first_delinquency)
        IS DISTINCT FROM (n.bucket, n.overdue, n.in_arrears,
                          n.review_on::timestamp AT TIME ZONE n.tz, n.first_delinquency)
  RETURNING a.account_id, a.customer_id, a.currency, a.product, n.old_bucket, a.bucket,
            a.days_past_due,
            a.overdue, n.old_in_arrears, a.in_arrears, a.first_delinquency, n.outstanding,
            n.next_due, n.next_due_amount,
            (n.old_bucket, n.old_overdue, n.old_in_arrears)
              IS DISTINCT FROM (a.bucket, a.overdue, a.in_arrears) AS moved
),
history AS (
  INSERT INTO bucket_change (account_id, from_bucket, to_bucket, days_past_due, changed_at)
  SELECT account_id, old_bucket, bucket, days_past_due, CAST(:now AS timestamptz)
  FROM changed WHERE moved AND old_bucket <> bucket
),
missed AS (
  UPDATE installment i SET missed_at = CAST(:now AS timestamptz)
  FROM next n
  WHERE i.account_id = n.account_id
    AND i.missed_at IS NULL AND i.paid < i.amount AND n.today - i.due_date > n.grace
  RETURNING i.account_id, n.customer_id, n.currency, n.product, i.installment_no, i.due_date,
            i.amount - i.paid AS amount_due, n.overdue, n.dpd, n.bucket, n.first_delinquency,
            n.outstanding, n.next_due, n.next_due_amount
)
SELECT * FROM (
  SELECT 'missed' AS kind, account_id, customer_id, currency, product, NULL AS old_bucket, bucket,
         dpd AS days_past_due, overdue, NULL::boolean AS old_in_arrears,
         NULL::boolean AS in_arrears, installment_no, due_date, amount_due, first_delinquency,
         outstanding, next_due, next_due_amount
  FROM missed
  UNION ALL
  SELECT 'changed', account_id, customer_id, currency, product, old_bucket, bucket, days_past_due,
         overdue, old_in_arrears, in_arrears, NULL, NULL, NULL, first_delinquency, outstanding,
         next_due, next_due_amount
  FROM changed WHERE moved
) rows
-- a missed instalment is announced before the bucket change it causes
ORDER BY kind DESC, account_id, installment_no
""",
    _PARTS,
    only_due=True,
)

SETTLE_PLANS_SQL = _both(
    """
WITH local AS ({local}),
progress AS (
  SELECT p.plan_id, p.account_id, p.total, l.customer_id, l.today,
         (SELECT coalesce(sum(pm.amount), 0) FROM payment pm
          WHERE pm.account_id = p.account_id AND pm.reversed_at IS NULL
            AND pm.posted_at >= p.agreed_at) AS paid,
         (SELECT coalesce(sum(pi.amount), 0) FROM plan_installment pi
          WHERE pi.plan_id = p.plan_id AND l.today - pi.due_date > l.grace) AS due_so_far
  FROM plan p JOIN local l ON l.account_id = p.account_id
  WHERE p.status = 'active'
),
verdict AS (
  SELECT *, CASE WHEN paid >= total THEN 'completed'
                 WHEN paid < due_so_far THEN 'broken' END AS outcome
  FROM progress
),
settled AS (
  UPDATE plan p SET status = v.outcome, settled_at = CAST(:now AS timestamptz),
                    settled_seq = nextval('history_seq')
  FROM verdict v WHERE p.plan_id = v.plan_id AND v.outcome IS NOT NULL
  RETURNING p.plan_id, p.account_id, v.customer_id, p.status, v.today
),
resumed AS (
  UPDATE account a SET paused_days = a.paused_days + (s.today - a.paused_since),
                       paused_since = NULL, frozen_dpd = NULL, review_at = NULL
  FROM settled s WHERE a.account_id = s.account_id AND a.paused_since IS NOT NULL
)
SELECT plan_id, account_id, customer_id, status FROM settled
"""
)

SETTLE_PROMISES_SQL = _both(
    """
WITH local AS ({local}),
progress AS (
  SELECT pr.promise_id, pr.account_id, pr.amount, pr.due_date, l.customer_id, l.today,
         (SELECT coalesce(sum(pm.amount), 0) FROM payment pm
          WHERE pm.account_id = pr.account_id AND pm.reversed_at IS NULL
            AND pm.posted_at >= pr.made_at
            AND (pm.posted_at AT TIME ZONE l.tz)::date <= pr.due_date) AS paid
  FROM promise pr JOIN local l ON l.account_id = pr.account_id
  WHERE pr.status = 'pending'
),
settled AS (
  UPDATE promise pr
  SET status = CASE WHEN g.paid >= g.amount THEN 'kept' ELSE 'broken' END,
      settled_at = CAST(:now AS timestamptz)
  FROM progress g
  WHERE pr.promise_id = g.promise_id AND (g.paid >= g.amount OR g.today > g.due_date)
  RETURNING pr.promise_id, pr.account_id, g.customer_id, pr.status
)
SELECT * FROM settled
"""
)

ACTIVE_FLAGS_SQL = text("""
SELECT DISTINCT ON (f.customer_id, coalesce(f.account_id, ''), f.flag)
       f.customer_id, f.account_id, f.flag, f.active
FROM flag_change f
WHERE f.customer_id = ANY(CAST(:customers AS text[]))
ORDER BY f.customer_id, coalesce(f.account_id, ''), f.flag, f.id DESC
""")


class Ledger:
    def __init__(self, clock: Clock, grace_days: Mapping[str, int]) -> None:
        self._clock = clock
        self._grace = dict(grace_days)
        # Accounts (and payments to announce) per open unit of work, settled before it commits.
        self._touched: weakref.WeakKeyDictionary[
            UnitOfWork, tuple[dict[str, None], list[PaymentPosted | PaymentReversed]]
        ] = weakref.WeakKeyDictionary()

    # --- commands from core-banking.events -----------------------------------------------------

    async def upsert_customers(
        self, uow: UnitOfWork, customers: Sequence[CustomerUpserted]
    ) -> None:
        """A run of upserts in one statement; a customer announced twice keeps the later."""
        for data in customers:
            try:
                ZoneInfo(data.timezone)
            except (ZoneInfoNotFoundError, ValueError):
                raise PermanentError("timezone: not an IANA time zone") from None
        latest = list({c.customer_id: c for c in customers}.values())
        await uow.session.execute(
            text("""
                WITH incoming AS (
                  SELECT * FROM unnest(CAST(:ids AS text[]), CAST(:tzs AS text[]),
                                       CAST(:countries AS text[]), CAST(:locales AS text[]))
                    AS t (customer_id, timezone, country, locale)
                ),
                moved AS (  -- another calendar, or a first one for accounts opened before
                            -- their customer was known: review those accounts at once
                  UPDATE account a SET review_at = NULL
                  FROM incoming i LEFT JOIN customer c ON c.customer_id = i.customer_id
                  WHERE a.customer_id = i.customer_id AND c.timezone IS DISTINCT FROM i.timezone
                )
                INSERT INTO customer (customer_id, timezone, country, locale, updated_at)
                SELECT *, CAST(:now AS timestamptz) FROM incoming
                ON CONFLICT (customer_id) DO UPDATE
                SET timezone = excluded.timezone, country = excluded.country,
                    locale = excluded.locale, updated_at = excluded.updated_at
            """),
            {
                "ids": [c.customer_id for c in latest],
                "tzs": [c.timezone for c in latest],
                "countries": [c.country for c in latest],
                "locales": [c.locale for c in latest],
                "now": self._clock.now(),
            },
        )

    async def open_loans(self, uow: UnitOfWork, loans: Sequence[LoanOpened]) -> None:
        """A run of new loans in a handful of statements. A loan announced again is a no-op; the
        same account id for another customer is refused."""
        for data in loans:
            try:
                validate_schedule([(s.installment_no, s.due_date, s.amount) for s in data.schedule])
            except LedgerError as exc:
                raise PermanentError(str(exc)) from None
            if data.principal <= 0:
                raise PermanentError("principal: must be positive")
        owners = {
            row[0]: row[1]
            for row in await uow.session.execute(
                text("""
                    SELECT account_id, customer_id FROM account
                    WHERE account_id = ANY(CAST(:ids AS text[]))
                """),
                {"ids": sorted({loan.account_id for loan in loans})},
            )
        }
        fresh: list[LoanOpened] = []
        for data in loans:
            owner = owners.get(data.account_id)
            if owner is None:  # neither opened before nor earlier in this run
                owners[data.account_id] = data.customer_id
                fresh.append(data)
            elif owner != data.customer_id:
                raise PermanentError("account_id: already opened for another customer")
        if not fresh:
            return
        products = sorted({loan.product for loan in fresh})
        await uow.session.execute(
            text("""
                INSERT INTO product (product, grace_days)
                SELECT * FROM unnest(CAST(:products AS text[]), CAST(:graces AS int[]))
                ON CONFLICT (product) DO NOTHING
            """),
            {"products": products, "graces": [self._grace.get(p, 0) for p in products]},
        )
        await uow.session.execute(
            text("""
                INSERT INTO account (account_id, customer_id, product, currency, principal,
                                     opened_on)
                SELECT * FROM unnest(CAST(:ids AS text[]), CAST(:customers AS text[]),
                                     CAST(:products AS text[]), CAST(:currencies AS text[]),
                                     CAST(:principals AS numeric[]), CAST(:opened AS date[]))
            """),
            {
                "ids": [loan.account_id for loan in fresh],
                "customers": [loan.customer_id for loan in fresh],
                "products": [loan.product for loan in fresh],
                "currencies": [loan.currency for loan in fresh],
                "principals": [loan.principal for loan in fresh],
                "opened": [loan.opened_on for loan in fresh],
            },
        )
        schedule = [(loan.account_id, s) for loan in fresh for s in loan.schedule]
        await uow.session.execute(
            text("""
                INSERT INTO installment (account_id, installment_no, due_date, amount)
                SELECT * FROM unnest(CAST(:ids AS text[]), CAST(:numbers AS int[]),
                                     CAST(:dues AS date[]), CAST(:amounts AS numeric[]))
            """),
            {
                "ids": [a for a, _ in schedule],
                "numbers": [s.installment_no for _, s in schedule],
                "dues": [s.due_date for _, s in schedule],
                "amounts": [s.amount for _, s in schedule],
            },
        )
        for loan in fresh:
            self._touch(uow, loan.account_id)

    async def post_payments(self, uow: UnitOfWork, payments: Sequence[PaymentPosted]) -> None:
        """Apply a run of payments in a handful of statements, whatever its length: accounts
        locked together (in id order, so concurrent batches cannot deadlock), payments inserted
        at once (a payment_id seen before is skipped), allocations computed by the domain in
        arrival order, written back in bulk. One invalid payment fails the whole run, which the
        consumer then retries one payment at a time, so the error lands on the right record."""
        for data in payments:
            if data.amount <= 0:
                raise PermanentError("amount: must be positive")
        account_ids = sorted({p.account_id for p in payments})
        accounts = {
            row["account_id"]: row
            for row in (
                await uow.session.execute(
                    text("""
                        SELECT account_id, customer_id, currency FROM account
                        WHERE account_id = ANY(CAST(:ids AS text[]))
                        ORDER BY account_id FOR UPDATE
                    """),
                    {"ids": account_ids},
                )
            ).mappings()
        }
        for data in payments:
            account = accounts.get(data.account_id)
            if account is None:
                raise PermanentError("account_id: payment for an unknown account")
            if account["currency"] != data.currency:
                raise PermanentError("currency: does not match the account's currency")
        fresh = {
            row[0]
            for row in await uow.session.execute(
                text("""
                    INSERT INTO payment (payment_id, account_id, amount, currency, posted_at)
                    SELECT * FROM unnest(CAST(:ids AS text[]), CAST(:accounts AS text[]),
                                         CAST(:amounts AS numeric[]), CAST(:currencies AS text[]),
                                         CAST(:posted AS timestamptz[]))
                    ON CONFLICT (payment_id) DO NOTHING
                    RETURNING payment_id
                """),
                {
                    "ids": [p.payment_id for p in payments],
                    "accounts": [p.account_id for p in payments],
                    "amounts": [p.amount for p in payments],
                    "currencies": [p.currency for p in payments],
                    "posted": [p.posted_at for p in payments],
                },
            )
        }
        todo = []
        for data in payments:  # the first of a repeated payment_id is the one inserted
            if data.payment_id in fresh:
                fresh.discard(data.payment_id)
                todo.append(data)
        if not todo:
            return
        schedules: dict[str, list[Installment]] = {}
        for row in await uow.session.execute(
            text("""
                SELECT account_id, installment_no, due_date, amount, paid FROM installment
                WHERE account_id = ANY(CAST(:ids AS text[]))
                ORDER BY account_id, due_date, installment_no
            """),
            {"ids": sorted({p.account_id for p in todo})},
        ):
            schedules.setdefault(row[0], []).append(Installment(row[1], row[2], row[3], row[4]))
        allocations: list[dict[str, Any]] = []
        unallocated: list[dict[str, Any]] = []
        for data in todo:
            installments = schedules.get(data.account_id, [])
            applied = allocate(installments, data.amount)
            schedules[data.account_id] = apply(installments, applied.allocations)
            allocations += [
                {"p": data.payment_id, "a": data.account_id, "n": a.installment_no, "x": a.amount}
                for a in applied.allocations
            ]
            if applied.unallocated:
                unallocated.append({"u": applied.unallocated, "p": data.payment_id})
        if allocations:
            await uow.session.execute(
                text("""
                    INSERT INTO allocation (payment_id, account_id, installment_no, amount)
                    SELECT * FROM unnest(CAST(:p AS text[]), CAST(:a AS text[]),
                                         CAST(:n AS int[]), CAST(:x AS numeric[]))
                """),
                {key: [a[key] for a in allocations] for key in ("p", "a", "n", "x")},
            )
            touched = {(a["a"], a["n"]) for a in allocations}
            paid = [
                (account_id, inst.number, inst.paid)
                for account_id, installments in schedules.items()
                for inst in installments
                if (account_id, inst.number) in touched
            ]
            await uow.session.execute(
                text("""
                    UPDATE installment i SET paid = u.paid
                    FROM unnest(CAST(:a AS text[]), CAST(:n AS int[]), CAST(:paid AS numeric[]))
                      AS u (account_id, installment_no, paid)
                    WHERE i.account_id = u.account_id AND i.installment_no = u.installment_no
                """),
                {
                    "a": [a for a, _, _ in paid],
                    "n": [n for _, n, _ in paid],
                    "paid": [x for _, _, x in paid],
                },
            )
        if unallocated:
            await uow.session.execute(
                text("""
                    UPDATE payment p SET unallocated = u.amount
                    FROM unnest(CAST(:p AS text[]), CAST(:u AS numeric[])) AS u (id, amount)
                    WHERE p.payment_id = u.id
                """),
                {"p": [u["p"] for u in unallocated], "u": [u["u"] for u in unallocated]},
            )
        for data in todo:
            self._touch(uow, data.account_id, receipt=data)

    async def reverse_payment(self, uow: UnitOfWork, data: PaymentReversed) -> None:
        await self._lock_account(uow, data.account_id, "reversal")
        payment = (
            await uow.session.execute(
                text("""
                    SELECT account_id, reversed_at FROM payment WHERE payment_id = :p FOR UPDATE
                """),
                {"p": data.payment_id},
            )
        ).first()
        if payment is None or payment.account_id != data.account_id:
            raise PermanentError("payment_id: no such payment on this account")
        if payment.reversed_at is not None:
            return  # reversed before
        # Undo exactly what this payment allocated, no matter what was paid since.
        await uow.session.execute(
            text("""
                UPDATE installment i SET paid = i.paid - al.amount
                FROM allocation al
                WHERE al.payment_id = :p AND i.account_id = al.account_id
                  AND i.installment_no = al.installment_no
            """),
            {"p": data.payment_id},
        )
        await uow.session.execute(
            text("""
                UPDATE payment
                SET reversed_at = :now, reversal_reason = :r, reversal_seq = nextval('history_seq')
                WHERE payment_id = :p
            """),
            {"now": self._clock.now(), "r": data.reason, "p": data.payment_id},
        )
        self._touch(uow, data.account_id, receipt=data)

    async def flag(self, uow: UnitOfWork, data: AccountFlagged) -> None:
        customer_id = data.customer_id
        if data.account_id is not None:
            owner = (
                await uow.session.execute(
                    text("SELECT customer_id FROM account WHERE account_id = :a"),
                    {"a": data.account_id},
                )
            ).scalar()
            if owner is None:
                raise PermanentError("account_id: unknown account")
            if customer_id is not None and customer_id != owner:
                raise PermanentError("customer_id: does not own account_id")
            customer_id = owner
        if customer_id is None:
            raise PermanentError("account_id or customer_id is required")
        await uow.session.execute(
            text("""
                INSERT INTO flag_change (account_id, customer_id, flag, active, changed_at)
                VALUES (:a, :c, :f, :active, :now)
            """),
            {
                "a": data.account_id,
                "c": customer_id,
                "f": data.flag,
                "active": data.active,
                "now": self._clock.now(),
            },
        )

    # --- commands from notifier.events --------------------------------------------------------

    async def agree_plan(self, uow: UnitOfWork, data: PlanAgreed) -> None:
        account = await self._lock_account(uow, data.account_id, "plan")
        known = (
            await uow.session.execute(
                text("SELECT 1 FROM plan WHERE plan_id = :p"), {"p": data.plan_id}
            )
        ).scalar()
        if known:
            return
        schedule = [(n, i.due_date, i.amount) for n, i in enumerate(data.installments, 1)]
        try:
            validate_schedule(schedule)
        except LedgerError as exc:
            raise PermanentError(str(exc).replace("schedule.", "installments.")) from None
        active = (
            await uow.session.execute(
                text("SELECT 1 FROM plan WHERE account_id = :a AND status = 'active'"),
                {"a": data.account_id},
            )
        ).scalar()
        if active:
            raise PermanentError("account_id: already has an active plan")
        await self.evaluate(uow, [data.account_id])  # freeze an up-to-date count
        standing = await self.state(uow, data.account_id)
        assert standing is not None  # the account is locked above
        now = self._clock.now()
        await uow.session.execute(
            text("""
                INSERT INTO plan (plan_id, account_id, kind, agreed_at, total)
                VALUES (:p, :a, :k, :now, :total)
            """),
            {
                "p": data.plan_id,
                "a": data.account_id,
                "k": data.kind,
                "now": now,
                "total": sum((amount for _, _, amount in schedule), Decimal(0)),
            },
        )
        await uow.session.execute(
            text("""
                INSERT INTO plan_installment (plan_id, installment_no, due_date, amount)
                VALUES (:p, :n, :d, :x)
            """),
            [{"p": data.plan_id, "n": n, "d": d, "x": x} for n, d, x in schedule],
        )
        await uow.session.execute(
            text("""
                UPDATE account SET frozen_dpd = :dpd, paused_since = :today
                WHERE account_id = :a
            """),
            {"dpd": standing["dpd"], "today": standing["today"], "a": data.account_id},
        )
        self._publish(
            uow,
            account["customer_id"],
            data.account_id,
            PlanActivated(
                account_id=data.account_id,
                customer_id=account["customer_id"],
                plan_id=data.plan_id,
                kind=data.kind,
                installments=data.installments,
            ),
        )

    async def state(self, uow: UnitOfWork, account_id: str) -> RowMapping | None:
        """Where one account stands now: days past due, bucket, overdue, in arrears."""
        params = {"now": self._clock.now(), "accounts": [account_id]}
        return (await uow.session.execute(STATE_SQL[1], params)).mappings().first()

    async def standings(self, uow: UnitOfWork, account_ids: Sequence[str]) -> list[RowMapping]:
        """Where many accounts stand now, in one set-based statement (for reconciliation)."""
        params = {"now": self._clock.now(), "accounts": list(account_ids)}
        rows = await uow.session.execute(
            text(
                "SELECT s.*, a.currency FROM ("
                + STATE_SQL[1].text
                + ") s JOIN account a USING (account_id)"
            ),
            params,
        )
        return list(rows.mappings())

    async def record_promise(self, uow: UnitOfWork, data: PromiseMade, event_id: str) -> None:
        account = await self._lock_account(uow, data.account_id, "promise")
        if data.currency is not None and data.currency != account["currency"]:
            raise PermanentError("currency: does not match the account's currency")
        if data.amount <= 0:
            raise PermanentError("amount: must be positive")
        await uow.session.execute(
            text("""
                INSERT INTO promise (promise_id, account_id, amount, due_date, made_at)
                VALUES (:p, :a, :x, :d, :now) ON CONFLICT (promise_id) DO NOTHING
            """),
            {
                "p": data.promise_id or event_id,
                "a": data.account_id,
                "x": data.amount,
                "d": data.due_date,
                "now": self._clock.now(),
            },
        )
        self._touch(uow, data.account_id)  # payments may have arrived first

    # --- delinquency ---------------------------------------------------------------------------

    async def evaluate(self, uow: UnitOfWork, accounts: Sequence[str] | None = None) -> int:
        """Bring days past due, buckets, missed instalments, plans and promises up to the clock,
        for some accounts or all of them; publishes what changed. Returns how many changed."""
        which = 0 if accounts is None else 1
        params: dict[str, Any] = {"now": self._clock.now()}
        if accounts is not None:
            params["accounts"] = list(accounts)

        async def run(statements: tuple[TextClause, TextClause]) -> Sequence[RowMapping]:
            return (await uow.session.execute(statements[which], params)).mappings().all()

        plans = await run(SETTLE_PLANS_SQL)
        await self._announce_settled(
            uow, plans, {"completed": PlanCompleted, "broken": PlanBroken}, "plan_id"
        )
        changed = 0
        if accounts is None:
            # Every account due for review, a chunk at a time: each chunk is one set-based
            # statement, and a daily pass reads only the accounts whose standing can move.
            *prepare, count = REVIEW_DUE_SQL
            for statement in prepare:
                await uow.session.execute(statement, params)
            chunks = (await uow.session.execute(count)).scalar_one()
        else:
            chunks = 1
        for chunk in range(chunks):
            streamed = await uow.session.stream(EVALUATE_SQL[which], params | {"chunk": chunk})
            async for rows in streamed.mappings().partitions(EVENT_CHUNK):
                changed += await self._announce(uow, rows)
                await uow.flush_events()
        promises = await run(SETTLE_PROMISES_SQL)
        await self._announce_settled(
            uow, promises, {"kept": PromiseKept, "broken": PromiseBroken}, "promise_id"
        )
        return changed + len(plans) + len(promises)

    async def _announce_settled(
        self,
        uow: UnitOfWork,
        rows: Sequence[RowMapping],
        outcomes: Mapping[str, type[AccountEvent]],
        id_field: str,
    ) -> None:
        """Events for settled plans or promises: the row's status picks the event type."""
        flags = await self._active_flags(uow, {r["customer_id"] for r in rows})
        for row in rows:
            self._publish(
                uow,
                row["customer_id"],
                row["account_id"],
                outcomes[row["status"]](
                    account_id=row["account_id"],
                    customer_id=row["customer_id"],
                    flags=flags.of(row["customer_id"], row["account_id"]),
                    **{id_field: row[id_field]},
                ),
            )

    async def _announce(self, uow: UnitOfWork, rows: Sequence[RowMapping]) -> int:
        """Events for one chunk of evaluated rows; returns how many accounts changed."""
        flags = await self._active_flags(uow, {r["customer_id"] for r in rows})
        for row in (r for r in rows if r["kind"] == "missed"):
            self._publish(
                uow,
                row["customer_id"],
                row["account_id"],
                PaymentMissed(
                    account_id=row["account_id"],
                    customer_id=row["customer_id"],
                    flags=flags.of(row["customer_id"], row["account_id"]),
                    installment_no=row["installment_no"],
                    due_date=row["due_date"],
                    amount_due=row["amount_due"],
                    total_overdue=row["overdue"],
                    currency=row["currency"],
                    days_past_due=row["days_past_due"],
                    bucket=row["bucket"],
                    product=row["product"],
                    **_standing(row),
                ),
            )
        for row in (r for r in rows if r["kind"] == "changed"):
            active = flags.of(row["customer_id"], row["account_id"])
            if row["old_bucket"] != row["bucket"]:
                self._publish(
                    uow,
                    row["customer_id"],
                    row["account_id"],
                    DelinquencyChanged(
                        account_id=row["account_id"],
                        customer_id=row["customer_id"],
                        flags=active,
                        previous_bucket=row["old_bucket"],
                        bucket=row["bucket"],
                        days_past_due=row["days_past_due"],
                        total_overdue=row["overdue"],
                        currency=row["currency"],
                        product=row["product"],
                        **_standing(row),
                    ),
                )
            if row["old_in_arrears"] and not row["in_arrears"]:
                self._publish(
                    uow,
                    row["customer_id"],
                    row["account_id"],
                    AccountCured(
                        account_id=row["account_id"],
                        customer_id=row["customer_id"],
                        flags=active,
                        **_standing(row),
                    ),
                )
        return sum(1 for r in rows if r["kind"] == "changed")

    def _touch(
        self,
        uow: UnitOfWork,
        account_id: str,
        receipt: PaymentPosted | PaymentReversed | None = None,
    ) -> None:
        """Re-evaluate ``account_id`` before the unit of work commits, together with every other
        account the same batch touched, in one pass; then announce the batch's payments and
        reversals with the overdue amounts and balances that pass left."""
        touched = self._touched.setdefault(uow, ({}, []))
        touched[0][account_id] = None
        if receipt is not None:
            touched[1].append(receipt)

        async def settle() -> None:
            accounts, receipts = self._touched.pop(uow)
            await self.evaluate(uow, list(accounts))
            if receipts:
                await self._announce_receipts(uow, receipts)

        uow.before_commit("ledger.evaluate", settle)

    async def _announce_receipts(
        self, uow: UnitOfWork, receipts: Sequence[PaymentPosted | PaymentReversed]
    ) -> None:
        rows = await uow.session.execute(
            text("""
                SELECT p.payment_id, p.account_id, p.amount, p.currency, p.posted_at,
                       p.reversed_at, a.customer_id, a.overdue, a.days_past_due,
                       (p.posted_at AT TIME ZONE coalesce(c.timezone, 'UTC'))::date AS posted_on,
                       (SELECT coalesce(sum(i.amount - i.paid), 0) FROM installment i
                        WHERE i.account_id = a.account_id) AS balance,
                       next.due_date AS next_due_date, next.unpaid AS next_due_amount
                FROM payment p JOIN account a ON a.account_id = p.account_id
                LEFT JOIN customer c ON c.customer_id = a.customer_id
                LEFT JOIN LATERAL (
                  SELECT i.due_date, i.amount - i.paid AS unpaid FROM installment i
                  WHERE i.account_id = a.account_id AND i.paid < i.amount
                    AND i.due_date >= (CAST(:now AS timestamptz)
                                       AT TIME ZONE coalesce(c.timezone, 'UTC'))::date
                  ORDER BY i.due_date, i.installment_no LIMIT 1) next ON true
                WHERE p.payment_id = ANY(CAST(:payments AS text[]))
            """),
            {"payments": sorted({r.payment_id for r in receipts}), "now": self._clock.now()},
        )
        found = {row.payment_id: row for row in rows}
        for receipt in receipts:
            row = found[receipt.payment_id]
            amounts = {
                "account_id": row.account_id,
                "customer_id": row.customer_id,
                "payment_id": row.payment_id,
                "amount": row.amount,
                "currency": row.currency,
                "total_overdue": row.overdue,
                "balance": row.balance,
                "posted_at": row.posted_at,
                "days_past_due": row.days_past_due,
                "next_due_date": row.next_due_date,
                "next_due_amount": row.next_due_amount,
            }
            event: Payload
            if isinstance(receipt, PaymentReversed):
                event = PaymentReversalApplied(**amounts, reversed_at=row.reversed_at)
            else:
                event = PaymentReceived(**amounts, posted_on=row.posted_on)
            self._publish(uow, row.customer_id, row.account_id, event)

    # --- helpers -------------------------------------------------------------------------------

    def _publish(self, uow: UnitOfWork, customer_id: str, account_id: str, data: Payload) -> None:
        now = self._clock.now()
        uow.publish(new_event(data, source=SOURCE, key=customer_id, time=now, subject=account_id))

    async def _lock_account(self, uow: UnitOfWork, account_id: str, what: str) -> Any:
        row = (
            (
                await uow.session.execute(
                    text("""
                    SELECT account_id, customer_id, currency FROM account
                    WHERE account_id = :a FOR UPDATE
                """),
                    {"a": account_id},
                )
            )
            .mappings()
            .first()
        )
        if row is None:
            raise PermanentError(f"account_id: {what} for an unknown account")
        return row

    async def _active_flags(self, uow: UnitOfWork, customers: set[str]) -> ActiveFlags:
        flags = ActiveFlags()
        if not customers:
            return flags
        rows = await uow.session.execute(ACTIVE_FLAGS_SQL, {"customers": sorted(customers)})
        for row in rows:
            if row.active:
                flags.add(row.customer_id, row.account_id, row.flag)
        return flags


def _standing(row: RowMapping) -> dict[str, Any]:
    """The standing an evaluated row's events carry (shared.events.Standing's fields)."""
    return {
        "balance": row["outstanding"],
        "first_delinquency": row["first_delinquency"],
        "next_due_date": row["next_due"],
        "next_due_amount": row["next_due_amount"],
    }


class ActiveFlags:
    """Active flags per customer; a customer-wide flag (no account) applies to every account."""

    def __init__(self) -> None:
        self._by_customer: dict[str, list[tuple[str | None, str]]] = {}

    def add(self, customer_id: str, account_id: str | None, flag: str) -> None:
        self._by_customer.setdefault(customer_id, []).append((account_id, flag))

    def of(self, customer_id: str, account_id: str) -> list[Any]:
        entries = self._by_customer.get(customer_id)
        if not entries:
            return []
        return sorted({flag for account, flag in entries if account in (None, account_id)})


def event_handlers(ledger: Ledger) -> dict[str, Handler]:
    """ce_type -> handler, shared by the Kafka consumer and ``POST /v1/events``. The registry
    guarantees ``event.data`` is the ce_type's payload class, which each command takes."""
    commands: dict[str, Callable[[UnitOfWork, Any], Awaitable[None]]] = {
        "payment.reversed": ledger.reverse_payment,
        "account.flagged": ledger.flag,
        "plan.agreed": ledger.agree_plan,
    }

    async def promise_made(uow: UnitOfWork, event: CloudEvent) -> None:
        # A promise without its own id is known by the event that announced it.
        await ledger.record_promise(uow, cast(PromiseMade, event.data), event.id)

    return {name: on_data(command) for name, command in commands.items()} | {
        "promise.made": promise_made
    }


def batch_event_handlers(ledger: Ledger) -> dict[str, BatchHandler]:
    """Types whose runs within a fetch are applied together, a few statements per run."""
    return {
        "customer.upserted": on_batch(ledger.upsert_customers),
        "loan.opened": on_batch(ledger.open_loans),
        "payment.posted": on_batch(ledger.post_payments),
    }
