"""The scheduler's state: customers and accounts as it knows them (addresses only as
fingerprints), contact history, scores, strategies, assignments, timers and the decision log.

Revision ID: scheduler_0002
Revises: scheduler_0001
Create Date: 2026-11-28
"""

from collections.abc import Sequence

from alembic import op

revision: str = "scheduler_0002"
down_revision: str | None = "scheduler_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = """
    CREATE TABLE customer (
      customer_id   text PRIMARY KEY,
      country       text,
      timezone      text,
      locale        text,
      credit_score  integer,
      -- fingerprints (keyed SHA-256) of the addresses, never the addresses themselves
      phone_ref     text,
      email_ref     text,
      postal_ref    text,
      ceased        boolean NOT NULL DEFAULT false,
      updated_at    timestamptz NOT NULL
    );
    CREATE TABLE flag (
      customer_id text NOT NULL,
      account_id  text NOT NULL DEFAULT '',  -- '' : the whole customer
      flag        text NOT NULL,
      active      boolean NOT NULL,
      changed_at  timestamptz NOT NULL,
      PRIMARY KEY (customer_id, account_id, flag)
    );
    CREATE TABLE account (
      account_id      text PRIMARY KEY,
      customer_id     text NOT NULL,
      product         text,
      currency        text,
      bucket          text NOT NULL DEFAULT 'current',
      days_past_due   integer NOT NULL DEFAULT 0,
      overdue         numeric(19, 4) NOT NULL DEFAULT 0,
      dispute_open    boolean NOT NULL DEFAULT false,
      plan_kept       boolean NOT NULL DEFAULT false,
      promise_due     date,
      payments_90d    integer NOT NULL DEFAULT 0,
      broken_promises integer NOT NULL DEFAULT 0,
      kept_promises   integer NOT NULL DEFAULT 0,
      updated_at      timestamptz NOT NULL
    );
    CREATE INDEX account_customer ON account (customer_id);
    CREATE TABLE payment_seen (
      account_id text NOT NULL,
      payment_id text NOT NULL,
      at         timestamptz NOT NULL,
      PRIMARY KEY (account_id, payment_id)
    );
    CREATE TABLE opt_out (
      customer_id text NOT NULL,
      channel     text NOT NULL,
      address_ref text NOT NULL,  -- '' : the channel, whatever the address
      at          timestamptz NOT NULL,
      PRIMARY KEY (customer_id, channel, address_ref)
    );
    -- Every contact requested and what became of it, the call records kept for the packs' two
    -- years (no job deletes them).
    CREATE TABLE contact_log (
      contact_id   text PRIMARY KEY,
      customer_id  text NOT NULL,
      account_id   text NOT NULL,
      channel      text NOT NULL,
      address_ref  text,
      requested_at timestamptz NOT NULL,
      outcome      text,
      attempted_at timestamptz
    );
    CREATE INDEX contact_log_customer ON contact_log (customer_id, requested_at);
    CREATE INDEX contact_log_account ON contact_log (account_id);
    CREATE TABLE score (
      account_id    text PRIMARY KEY,
      value         numeric(6, 4) NOT NULL,
      band          text NOT NULL,
      model_version integer NOT NULL,
      inputs        jsonb NOT NULL,
      contributions jsonb NOT NULL,
      computed_at   timestamptz NOT NULL
    );
    CREATE TABLE strategy_version (
      strategy_id  text NOT NULL,
      version      integer NOT NULL,
      status       text NOT NULL,  -- draft | published | retired
      body         jsonb NOT NULL,
      checksum     text NOT NULL,
      created_at   timestamptz NOT NULL,
      published_at timestamptz,
      retired_at   timestamptz,
      PRIMARY KEY (strategy_id, version)
    );
    CREATE UNIQUE INDEX strategy_one_published ON strategy_version (strategy_id)
      WHERE status = 'published';
    CREATE TABLE assignment (
      account_id  text NOT NULL,
      strategy_id text NOT NULL,
      version     integer NOT NULL,
      variant     text NOT NULL,
      assigned_at timestamptz NOT NULL,
      PRIMARY KEY (account_id, strategy_id, version)
    );
    -- One row per treatment started: which path an account is on and since when.
    CREATE TABLE treatment (
      account_id  text PRIMARY KEY,
      strategy_id text NOT NULL,
      version     integer NOT NULL,
      variant     text NOT NULL,
      name        text NOT NULL,
      bucket      text NOT NULL,
      started_at  timestamptz NOT NULL
    );
    CREATE TABLE timer (
      contact_id  text PRIMARY KEY,
      account_id  text NOT NULL,
      customer_id text NOT NULL,
      strategy_id text NOT NULL,
      version     integer NOT NULL,
      variant     text NOT NULL,
      treatment   text NOT NULL,
      step_no     integer NOT NULL,
      channel     text NOT NULL,
      template    text NOT NULL,
      offer       jsonb,
      due_at      timestamptz NOT NULL,
      status      text NOT NULL DEFAULT 'pending',  -- pending | fired | suppressed | cancelled
      created_at  timestamptz NOT NULL,
      settled_at  timestamptz
    );
    CREATE INDEX timer_due ON timer (due_at) WHERE status = 'pending';
    CREATE INDEX timer_account ON timer (account_id) WHERE status = 'pending';
    CREATE TABLE decision (
      id          bigserial PRIMARY KEY,
      account_id  text NOT NULL,
      -- segment | variant | scheduled | deferred | suppressed | cancelled | fired
      kind        text NOT NULL,
      contact_id  text,
      reasons     text[] NOT NULL DEFAULT '{}',
      inputs      jsonb NOT NULL DEFAULT '{}',
      at          timestamptz NOT NULL
    );
    CREATE INDEX decision_account ON decision (account_id, id)
"""


def upgrade() -> None:
    for statement in SCHEMA.split(";"):  # asyncpg runs one statement per call
        if statement.strip():
            op.execute(statement)


def downgrade() -> None:
    op.execute(
        "DROP TABLE decision, timer, treatment, assignment, payment_seen, strategy_version, "
        "score, contact_log, opt_out, account, flag, customer"
    )
