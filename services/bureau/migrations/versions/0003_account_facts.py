"""What a Metro 2 base segment and a CN record need from the ledger's events: the principal and
schedule as opened, the whole balance, the plan's instalments, payments (for the actual payment
of a period and the date of last payment), the rating when paid off, and the status recorded at
each cycle (the payment history profile is the months before the date of account information,
each as it stood at that month's cycle). ``ratings`` (the worst bucket seen in a calendar month,
written by events) goes: it put this month's status first.

Revision ID: bureau_0003
Revises: bureau_0002
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "bureau_0003"
down_revision: str | None = "bureau_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UPGRADE = """
    ALTER TABLE account
      ADD COLUMN principal        numeric(19, 4),
      ADD COLUMN schedule_dues    date[],
      ADD COLUMN schedule_amounts numeric(19, 4)[],
      ADD COLUMN balance          numeric(19, 4),
      ADD COLUMN plan_dues        date[],
      ADD COLUMN plan_amounts     numeric(19, 4)[],
      ADD COLUMN closed_rating    text,      -- the rating when the balance reached zero
      ADD COLUMN next_due_date    date,      -- the next unpaid instalment, as the ledger said
      ADD COLUMN next_due_amount  numeric(19, 4),
      ADD COLUMN history          jsonb NOT NULL DEFAULT '{}',  -- "YYYY-MM" -> profile value
      DROP COLUMN ratings,
      DROP COLUMN last_payment_on;           -- from the payments now, net of reversals
    ALTER TABLE customer ADD COLUMN timezone text;
    DROP INDEX account_in_scope;
    CREATE INDEX account_in_scope ON account (account_id)
      WHERE days_past_due >= 30 OR reported_status IS NOT NULL OR bucket <> 'current';
    CREATE TABLE payment (
      payment_id  text PRIMARY KEY,
      account_id  text NOT NULL,
      amount      numeric(19, 4) NOT NULL,
      posted_at   timestamptz NOT NULL,
      posted_on   date NOT NULL,             -- in the customer's calendar
      reversed_at timestamptz
    );
    CREATE INDEX payment_account ON payment (account_id, posted_at)
"""

DOWNGRADE = """
    DROP TABLE payment;
    ALTER TABLE customer DROP COLUMN timezone;
    DROP INDEX account_in_scope;
    CREATE INDEX account_in_scope ON account (account_id)
      WHERE days_past_due >= 30 OR reported_status IS NOT NULL;
    ALTER TABLE account
      DROP COLUMN principal, DROP COLUMN schedule_dues, DROP COLUMN schedule_amounts,
      DROP COLUMN balance, DROP COLUMN plan_dues, DROP COLUMN plan_amounts,
      DROP COLUMN closed_rating, DROP COLUMN history, DROP COLUMN next_due_date,
      DROP COLUMN next_due_amount,
      ADD COLUMN ratings jsonb NOT NULL DEFAULT '{}',
      ADD COLUMN last_payment_on date
"""


def _run(script: str) -> None:
    for statement in script.split(";"):  # asyncpg runs one statement per call
        if statement.strip():
            op.execute(statement)


def upgrade() -> None:
    _run(UPGRADE)


def downgrade() -> None:
    _run(DOWNGRADE)
