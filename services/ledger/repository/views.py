"""Read models behind the ledger's API: plain queries, no rules."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from services.ledger.repository.rows import StateRow

ACCOUNT_SQL = text("""
SELECT a.account_id, a.customer_id, a.product, a.currency, a.principal, a.opened_on,
       a.days_past_due, a.bucket, a.overdue, a.in_arrears, a.evaluated_at,
       coalesce(sum(i.amount - i.paid), 0) AS outstanding,
       coalesce(sum(i.paid), 0) AS paid
FROM account a LEFT JOIN installment i ON i.account_id = a.account_id
WHERE a.account_id = :a
GROUP BY a.account_id
""")


async def account(
    session: AsyncSession, account_id: str, standing: StateRow | None
) -> dict[str, Any] | None:
    row = (await session.execute(ACCOUNT_SQL, {"a": account_id})).mappings().first()
    if row is None:
        return None
    result = dict(row)
    if standing is not None:  # days past due are derived at the time of asking
        result |= {
            "days_past_due": standing.dpd,
            "bucket": standing.bucket,
            "overdue": standing.overdue,
            "in_arrears": standing.in_arrears,
            "first_delinquency": standing.first_delinquency,
        }
    result["installments"] = [
        dict(r)
        for r in (
            await session.execute(
                text("""
                    SELECT installment_no, due_date, amount, paid, amount - paid AS outstanding,
                           missed_at IS NOT NULL AS missed
                    FROM installment WHERE account_id = :a ORDER BY installment_no
                """),
                {"a": account_id},
            )
        ).mappings()
    ]
    result["flags"] = await active_flags(session, row["customer_id"], account_id)
    plan = (
        (
            await session.execute(
                text("""
                SELECT plan_id, kind, status, agreed_at, total, hardship, source FROM plan
                WHERE account_id = :a ORDER BY seq DESC LIMIT 1
            """),
                {"a": account_id},
            )
        )
        .mappings()
        .first()
    )
    if plan is not None:
        result["plan"] = dict(plan) | {
            "installments": [
                dict(r)
                for r in (
                    await session.execute(
                        text("""
                            SELECT installment_no, due_date, amount FROM plan_installment
                            WHERE plan_id = :p ORDER BY installment_no
                        """),
                        {"p": plan["plan_id"]},
                    )
                ).mappings()
            ]
        }
    promise = (
        (
            await session.execute(
                text("""
                SELECT promise_id, amount, due_date, status FROM promise
                WHERE account_id = :a ORDER BY made_at DESC LIMIT 1
            """),
                {"a": account_id},
            )
        )
        .mappings()
        .first()
    )
    result["promise"] = dict(promise) if promise else None
    return result


async def active_flags(session: AsyncSession, customer_id: str, account_id: str) -> list[str]:
    rows = await session.execute(
        text("""
            SELECT DISTINCT ON (coalesce(account_id, ''), flag) flag, active
            FROM flag_change
            WHERE customer_id = :c AND (account_id IS NULL OR account_id = :a)
            ORDER BY coalesce(account_id, ''), flag, id DESC
        """),
        {"c": customer_id, "a": account_id},
    )
    return sorted({r.flag for r in rows if r.active})


async def history(session: AsyncSession, account_id: str) -> list[dict[str, Any]]:
    """Payments, reversals, bucket transitions, plans and flag changes in the order the ledger
    recorded them (``at`` is the payment's posting time, else the ledger's time)."""
    rows = await session.execute(
        text("""
            SELECT at, kind, ref, amount, from_bucket, to_bucket, dpd, detail FROM (
              SELECT seq, posted_at AS at, 'payment' AS kind, payment_id AS ref, amount,
                     NULL::text AS from_bucket, NULL::text AS to_bucket, NULL::int AS dpd,
                     NULL::text AS detail
              FROM payment WHERE account_id = :a
              UNION ALL
              SELECT reversal_seq, reversed_at, 'reversal', payment_id, amount, NULL, NULL, NULL,
                     reversal_reason
              FROM payment WHERE account_id = :a AND reversed_at IS NOT NULL
              UNION ALL
              SELECT seq, changed_at, 'bucket_change', id::text, NULL, from_bucket, to_bucket,
                     days_past_due, NULL
              FROM bucket_change WHERE account_id = :a
              UNION ALL
              SELECT seq, agreed_at, 'plan_agreed', plan_id, total, NULL, NULL, NULL,
                     kind || CASE WHEN hardship THEN ' under hardship' ELSE '' END
                          || coalesce(' via ' || source, '')
              FROM plan WHERE account_id = :a
              UNION ALL
              SELECT settled_seq, settled_at, 'plan_' || status, plan_id, total, NULL, NULL, NULL,
                     kind || CASE WHEN hardship THEN ' under hardship' ELSE '' END
              FROM plan WHERE account_id = :a AND settled_seq IS NOT NULL
              UNION ALL
              SELECT f.seq, f.changed_at, 'flag', f.id::text, NULL, NULL, NULL, NULL,
                     f.flag || CASE WHEN f.active THEN ' set' ELSE ' cleared' END
              FROM flag_change f JOIN account a ON a.customer_id = f.customer_id
              WHERE a.account_id = :a AND (f.account_id IS NULL OR f.account_id = :a)
            ) h ORDER BY seq
        """),
        {"a": account_id},
    )
    return [{k: v for k, v in r.items() if v is not None} for r in rows.mappings()]


async def customer_accounts(session: AsyncSession, customer_id: str) -> list[dict[str, Any]]:
    rows = await session.execute(
        text("""
            SELECT account_id, product, currency, days_past_due, bucket, overdue
            FROM account WHERE customer_id = :c ORDER BY account_id
        """),
        {"c": customer_id},
    )
    return [dict(r) for r in rows.mappings()]


async def customer_of(session: AsyncSession, account_id: str) -> str | None:
    return (
        await session.execute(
            text("SELECT customer_id FROM account WHERE account_id = :a"), {"a": account_id}
        )
    ).scalar()


async def applied_payments(session: AsyncSession, payment_ids: list[str]) -> set[str]:
    """Which of these payments the ledger has already applied."""
    if not payment_ids:
        return set()
    rows = await session.execute(
        text("SELECT payment_id FROM payment WHERE payment_id = ANY(CAST(:ids AS text[]))"),
        {"ids": payment_ids},
    )
    return {r[0] for r in rows}
