"""Payment plans (with the delinquency pause) and promises to pay.

Revision ID: ledger_0003
Revises: ledger_0002
Create Date: 2026-11-28
"""

from collections.abc import Sequence

from alembic import op

revision: str = "ledger_0003"
down_revision: str | None = "ledger_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = """
    -- The pause, as Apache Fineract keeps it: while a plan is kept, days past due stay at
    -- frozen_dpd, and the days it lasted are added to paused_days and subtracted afterwards.
    ALTER TABLE account
      ADD COLUMN paused_since date,
      ADD COLUMN frozen_dpd integer,
      ADD COLUMN paused_days integer NOT NULL DEFAULT 0;
    CREATE TABLE plan (
      plan_id     text PRIMARY KEY,
      account_id  text NOT NULL REFERENCES account,
      kind        text NOT NULL,
      status      text NOT NULL DEFAULT 'active',  -- active | broken | completed
      agreed_at   timestamptz NOT NULL,
      total       numeric(19, 4) NOT NULL,
      settled_at  timestamptz,
      seq         bigint NOT NULL DEFAULT nextval('history_seq'),
      settled_seq bigint
    );
    CREATE UNIQUE INDEX plan_one_active ON plan (account_id) WHERE status = 'active';
    CREATE TABLE plan_installment (
      plan_id        text NOT NULL REFERENCES plan,
      installment_no integer NOT NULL,
      due_date       date NOT NULL,
      amount         numeric(19, 4) NOT NULL CHECK (amount > 0),
      PRIMARY KEY (plan_id, installment_no)
    );
    CREATE TABLE promise (
      promise_id  text PRIMARY KEY,
      account_id  text NOT NULL REFERENCES account,
      amount      numeric(19, 4) NOT NULL CHECK (amount > 0),
      due_date    date NOT NULL,
      made_at     timestamptz NOT NULL,
      status      text NOT NULL DEFAULT 'pending',  -- pending | kept | broken
      settled_at  timestamptz
    );
    CREATE INDEX promise_pending ON promise (account_id) WHERE status = 'pending'
"""


def upgrade() -> None:
    for statement in SCHEMA.split(";"):  # asyncpg runs one statement per call
        if statement.strip():
            op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TABLE promise, plan_installment, plan")
    op.execute(
        "ALTER TABLE account DROP COLUMN paused_since, DROP COLUMN frozen_dpd, "
        "DROP COLUMN paused_days"
    )
