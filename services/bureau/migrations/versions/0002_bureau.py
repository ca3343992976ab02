"""The bureau's reporting state, cycles, per-account reports and archived files.

Revision ID: bureau_0002
Revises: bureau_0001
Create Date: 2026-11-28
"""

from collections.abc import Sequence

from alembic import op

revision: str = "bureau_0002"
down_revision: str | None = "bureau_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = """
    CREATE TABLE customer (
      customer_id    text PRIMARY KEY,
      full_name      text,
      national_id    text,
      birth_date     date,
      postal_address text,
      country        text,
      updated_at     timestamptz NOT NULL
    );
    CREATE TABLE flag (
      customer_id text NOT NULL,
      account_id  text NOT NULL DEFAULT '',
      flag        text NOT NULL,
      active      boolean NOT NULL,
      PRIMARY KEY (customer_id, account_id, flag)
    );
    CREATE TABLE account (
      account_id              text PRIMARY KEY,
      customer_id             text NOT NULL,
      currency                text,
      bucket                  text NOT NULL DEFAULT 'current',
      days_past_due           integer NOT NULL DEFAULT 0,
      overdue                 numeric(19, 4) NOT NULL DEFAULT 0,
      first_delinquency       date,
      last_payment_on         date,
      opened_on               date,
      plan_active             boolean NOT NULL DEFAULT false,
      dispute                 text,          -- open, resolved, resolved_disagrees
      pre_notice_delivered_at timestamptz,
      notice_sent_at          timestamptz,
      notice_returned_at      timestamptz,
      conversation_at         timestamptz,
      ratings                 jsonb NOT NULL DEFAULT '{}',  -- "YYYY-MM" -> worst rating
      reported_status         text,
      reported_cycle          text,
      rejected_at             timestamptz,   -- the bureau refused its last record
      updated_at              timestamptz NOT NULL
    );
    CREATE INDEX account_in_scope ON account (account_id)
      WHERE days_past_due >= 30 OR reported_status IS NOT NULL;
    CREATE TABLE cycle (
      cycle_id    text PRIMARY KEY,
      started_at  timestamptz NOT NULL,
      finished_at timestamptz,
      status      text NOT NULL DEFAULT 'running'  -- running, built, submitted
    );
    CREATE TABLE report (
      cycle_id   text NOT NULL REFERENCES cycle,
      account_id text NOT NULL,
      country    text NOT NULL,
      kind       text NOT NULL,  -- submitted, corrected, blocked
      status     text,
      compliance_code text,
      reasons    text[] NOT NULL DEFAULT '{}',
      line       text,           -- the record as it goes in the file (Metro 2 or JSON line)
      file_id    text,
      ack        text,           -- the bureau's answer for this record: accepted, rejected
      PRIMARY KEY (cycle_id, account_id)
    );
    CREATE INDEX report_account ON report (account_id, cycle_id);
    CREATE TABLE bureau_file (
      file_id      text PRIMARY KEY,  -- the file's SHA-256
      cycle_id     text NOT NULL REFERENCES cycle,
      country      text NOT NULL,
      format       text NOT NULL,     -- metro2 | cn-jsonl
      path         text NOT NULL,
      records      integer NOT NULL,
      created_at   timestamptz NOT NULL,
      submitted_at timestamptz,
      submission   text,
      UNIQUE (cycle_id, country)
    )
"""


def upgrade() -> None:
    for statement in SCHEMA.split(";"):  # asyncpg runs one statement per call
        if statement.strip():
            op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TABLE bureau_file, report, cycle, account, flag, customer")
