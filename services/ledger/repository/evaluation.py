"""The ledger's evaluation SQL: where accounts stand, set-based over every account due for
review (or some), the instalments newly missed, and the plans and promises settled.

``services/ledger/domain/standing.py`` is the specification these statements implement; the
differential property test holds them to it. Statements only: nothing here commits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import RowMapping, TextClause, text
from sqlalchemy.ext.asyncio import AsyncSession

from services.ledger.domain.delinquency import bucket_case_sql, next_bucket_start_sql
from services.ledger.repository.rows import Evaluated, FlagRow, ReceiptRow, Settled, StateRow

# Everything below runs on every clock move over all accounts: keep it to set-based statements.
_LOCAL = """
  SELECT a.account_id, a.customer_id, a.currency, a.product, a.days_past_due AS old_dpd,
         a.bucket AS old_bucket, a.overdue AS old_overdue, a.in_arrears AS old_in_arrears,
         a.paused_since, a.frozen_dpd, a.paused_days, coalesce(c.timezone, 'UTC') AS tz,
         a.first_delinquency AS old_first_delinquency,
         (CAST(:now AS timestamptz) AT TIME ZONE coalesce(c.timezone, 'UTC'))::date AS today,
         coalesce(p.grace_days, 0) AS grace, coalesce(p.due_soon_days, 3) AS lead
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
    text("""
        CREATE TEMP TABLE review_due ON COMMIT DROP AS
        SELECT account_id, (row_number() OVER (ORDER BY account_id) - 1) / CAST(:size AS int)
               AS chunk
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
         min(i.due_date) FILTER (WHERE i.paid < i.amount AND i.reminded_at IS NULL
                                   AND i.due_date - l.lead > l.today) AS next_remind,
         coalesce(sum(i.amount - i.paid) FILTER (WHERE i.due_date < l.today), 0) AS overdue,
         sum(i.amount - i.paid) AS outstanding,
         (array_agg(i.amount - i.paid ORDER BY i.due_date, i.installment_no)
            FILTER (WHERE i.paid < i.amount AND i.due_date >= l.today))[1] AS next_due_amount
  FROM installment i JOIN local l ON l.account_id = i.account_id
  GROUP BY i.account_id
),
counted AS (
  SELECT l.*, coalesce(d.overdue, 0) AS overdue, coalesce(d.outstanding, 0) AS outstanding,
         d.oldest_unpaid, d.next_due, d.next_due_amount, d.next_miss, d.next_remind,
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
           CASE WHEN c.lead > 0 AND c.paused_since IS NULL
                THEN c.next_remind - c.lead END,  -- its customer is reminded
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

# One pass: move what changed, mark newly missed instalments (so that payment.missed goes out
# exactly once each) and instalments newly due soon (installment.due_soon, once each), returning
# every kind of row for Python to turn into events.
EVALUATE_SQL = _both(
    "WITH "
    + _STATE
    + """,
changed AS (
  UPDATE account a
  SET days_past_due = n.dpd, bucket = n.bucket, overdue = n.overdue,
      in_arrears = n.in_arrears, evaluated_at = CAST(:now AS timestamptz),
      -- forgotten only once nothing is overdue: right after a plan ends the paused days can
      -- bring the count to 0 with the old instalment still unpaid (standing.stand)
      paused_days = CASE WHEN n.overdue > 0 THEN a.paused_days ELSE 0 END,
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
),
-- once per instalment, the product's days before it falls due (none while a plan is kept:
-- the plan's own dates stand for the schedule's)
reminded AS (
  UPDATE installment i SET reminded_at = CAST(:now AS timestamptz)
  FROM next n
  WHERE i.account_id = n.account_id AND n.lead > 0 AND n.paused_since IS NULL
    AND i.reminded_at IS NULL AND i.paid < i.amount
    AND i.due_date >= n.today AND i.due_date - n.today <= n.lead
  RETURNING i.account_id, n.customer_id, n.currency, n.product, i.installment_no, i.due_date,
            i.amount - i.paid AS amount_due, n.overdue, n.dpd, n.bucket, n.first_delinquency,
            n.outstanding, n.next_due, n.next_due_amount, i.due_date - n.today AS days_until_due
)
SELECT * FROM (
  SELECT 'missed' AS kind, account_id, customer_id, currency, product, NULL AS old_bucket, bucket,
         dpd AS days_past_due, overdue, NULL::boolean AS old_in_arrears,
         NULL::boolean AS in_arrears, installment_no, due_date, amount_due, first_delinquency,
         outstanding, next_due, next_due_amount, NULL::integer AS days_until_due
  FROM missed
  UNION ALL
  SELECT 'due_soon', account_id, customer_id, currency, product, NULL, bucket, dpd, overdue,
         NULL, NULL, installment_no, due_date, amount_due, first_delinquency, outstanding,
         next_due, next_due_amount, days_until_due
  FROM reminded
  UNION ALL
  SELECT 'changed', account_id, customer_id, currency, product, old_bucket, bucket, days_past_due,
         overdue, old_in_arrears, in_arrears, NULL, NULL, NULL, first_delinquency, outstanding,
         next_due, next_due_amount, NULL
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


RECEIPTS_SQL = text("""
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
""")


def _params(now: datetime, accounts: Sequence[str] | None) -> dict[str, Any]:
    params: dict[str, Any] = {"now": now}
    if accounts is not None:
        params["accounts"] = list(accounts)
    return params


def _pick(statements: tuple[TextClause, TextClause], accounts: Sequence[str] | None) -> TextClause:
    return statements[0 if accounts is None else 1]


def _state(row: RowMapping) -> StateRow:
    return StateRow(**{k: row[k] for k in StateRow.__slots__ if k in row})


async def state(session: AsyncSession, now: datetime, account_id: str) -> StateRow | None:
    """Where one account stands at ``now``: days past due, bucket, overdue, in arrears."""
    row = (await session.execute(STATE_SQL[1], _params(now, [account_id]))).mappings().first()
    return None if row is None else _state(row)


async def standings(
    session: AsyncSession, now: datetime, account_ids: Sequence[str]
) -> list[StateRow]:
    """Where many accounts stand at ``now``, in one set-based statement (for reconciliation)."""
    rows = await session.execute(
        text(
            "SELECT s.*, a.currency, EXISTS (SELECT 1 FROM plan p WHERE p.account_id ="
            " s.account_id AND p.status = 'active') AS plan_active FROM ("
            + STATE_SQL[1].text
            + ") s JOIN account a USING (account_id)"
        ),
        _params(now, account_ids),
    )
    return [_state(r) for r in rows.mappings()]


async def settle_plans(
    session: AsyncSession, now: datetime, accounts: Sequence[str] | None
) -> list[Settled]:
    """Plans completed or broken at ``now`` (:func:`standing.plan_verdict`), settled; an account
    a settled plan had paused resumes counting."""
    rows = await session.execute(_pick(SETTLE_PLANS_SQL, accounts), _params(now, accounts))
    return [Settled(r.plan_id, r.account_id, r.customer_id, r.status) for r in rows]


async def settle_promises(
    session: AsyncSession, now: datetime, accounts: Sequence[str] | None
) -> list[Settled]:
    """Promises kept or broken at ``now`` (:func:`standing.promise_verdict`), settled."""
    rows = await session.execute(_pick(SETTLE_PROMISES_SQL, accounts), _params(now, accounts))
    return [Settled(r.promise_id, r.account_id, r.customer_id, r.status) for r in rows]


async def review_chunks(session: AsyncSession, now: datetime, size: int = REVIEW_CHUNK) -> int:
    """Number the accounts due for review at ``now`` into chunks of ``size``; returns how many
    chunks."""
    *prepare, count = REVIEW_DUE_SQL
    for statement in prepare:
        await session.execute(statement, {"now": now, "size": size})
    chunks: int = (await session.execute(count)).scalar_one()
    return chunks


async def evaluate(
    session: AsyncSession, now: datetime, accounts: Sequence[str] | None, chunk: int = 0
) -> list[Evaluated]:
    """Bring one chunk of the accounts due for review (or ``accounts``) up to ``now``: stores
    what changed, marks instalments newly missed, and returns those rows (a chunk's worth)."""
    rows = await session.execute(
        _pick(EVALUATE_SQL, accounts), _params(now, accounts) | {"chunk": chunk}
    )
    return [Evaluated(**row) for row in rows.mappings()]


async def active_flags(session: AsyncSession, customers: Sequence[str]) -> list[FlagRow]:
    rows = await session.execute(ACTIVE_FLAGS_SQL, {"customers": list(customers)})
    return [FlagRow(r.customer_id, r.account_id, r.flag, r.active) for r in rows]


async def receipts(
    session: AsyncSession, now: datetime, payment_ids: Sequence[str]
) -> dict[str, ReceiptRow]:
    rows = await session.execute(RECEIPTS_SQL, {"payments": list(payment_ids), "now": now})
    return {r.payment_id: ReceiptRow(**r._mapping) for r in rows}
