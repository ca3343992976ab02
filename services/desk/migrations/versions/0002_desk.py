"""The desk: people and their sessions, work items and customer locks, the outcomes and the
webhooks that report them, the read-only context it keeps, and training (apart from all of it).

Revision ID: desk_0002
Revises: desk_0001
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "desk_0002"
down_revision: str | None = "desk_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = """
    CREATE TABLE person (
      username      text PRIMARY KEY,
      display_name  text NOT NULL,
      role          text NOT NULL,
      team          text NOT NULL DEFAULT '',
      languages     text[] NOT NULL DEFAULT '{}',
      countries     text[] NOT NULL DEFAULT '{}',
      skills        text[] NOT NULL DEFAULT '{}',
      authority     jsonb,
      password_hash text NOT NULL,
      active        boolean NOT NULL DEFAULT true,
      created_at    timestamptz NOT NULL
    );
    -- a browser session: only the token's hash is kept, the CSRF token is bound to it
    CREATE TABLE web_session (
      token_hash text PRIMARY KEY,
      username   text NOT NULL REFERENCES person (username),
      csrf       text NOT NULL,
      expires_at timestamptz NOT NULL
    );
    CREATE INDEX web_session_user ON web_session (username);
    CREATE TABLE login_failure (
      username text NOT NULL,
      at       timestamptz NOT NULL
    );
    CREATE INDEX login_failure_user ON login_failure (username, at);

    -- what the notifier asked the desk to do: a call or a visit, one per contact id
    CREATE TABLE work_item (
      contact_id    text PRIMARY KEY,
      channel       text NOT NULL,
      account_id    text NOT NULL,
      customer_id   text NOT NULL,
      country       text,
      locale        text,
      timezone      text,
      address       text NOT NULL,
      full_name     text,
      script        text NOT NULL,
      template      text,
      purpose       text,
      offer         jsonb,
      total_overdue numeric(19, 4),
      currency      text,
      days_past_due integer,
      district      text,
      not_before    timestamptz NOT NULL,
      not_after     timestamptz NOT NULL,
      priority      numeric(12, 4) NOT NULL DEFAULT 0,
      priority_why  jsonb,
      status        text NOT NULL DEFAULT 'queued',  -- queued, held, approval, done, expired
      holder        text,
      held_until    timestamptz,
      worked_by     text,
      outcome       text,
      outcome_at    timestamptz,
      expired_reason text,
      received_at   timestamptz NOT NULL
    );
    CREATE INDEX work_item_queue ON work_item (status, channel, priority DESC);
    CREATE INDEX work_item_customer ON work_item (customer_id);
    -- two collectors never hold one customer: one row per customer held, until it expires
    CREATE TABLE customer_lock (
      customer_id text PRIMARY KEY,
      contact_id  text NOT NULL,
      holder      text NOT NULL,
      until       timestamptz NOT NULL
    );
    -- every outcome logged (and what it reported), for the results and the kept rate
    CREATE TABLE outcome (
      event_id     text PRIMARY KEY,
      contact_id   text NOT NULL,
      account_id   text NOT NULL,
      username     text NOT NULL,
      outcome      text NOT NULL,
      status       text NOT NULL,
      detail       jsonb NOT NULL DEFAULT '{}',
      at           timestamptz NOT NULL,
      kept         boolean
    );
    CREATE INDEX outcome_user ON outcome (username);
    -- a plan beyond the collector's authority, waiting for a team lead
    CREATE TABLE approval (
      approval_id text PRIMARY KEY,
      contact_id  text NOT NULL,
      account_id  text NOT NULL,
      requested_by text NOT NULL,
      terms       jsonb NOT NULL,
      reasons     jsonb NOT NULL,
      status      text NOT NULL DEFAULT 'pending',  -- pending, approved, declined
      decided_by  text,
      decided_at  timestamptz,
      created_at  timestamptz NOT NULL
    );
    -- the signed webhooks to the notifier, sent by the worker until accepted
    CREATE TABLE webhook_out (
      event_id   text PRIMARY KEY,
      -- one customer's webhooks go in the order they were written (a promise, then a plan)
      seq        bigserial NOT NULL,
      customer_id text NOT NULL,
      kind       text NOT NULL DEFAULT 'status',
      body       jsonb NOT NULL,
      attempts   integer NOT NULL DEFAULT 0,
      next_at    timestamptz NOT NULL,
      sent_at    timestamptz,
      last_error text,
      created_at timestamptz NOT NULL
    );
    CREATE INDEX webhook_out_due ON webhook_out (customer_id, seq) WHERE sent_at IS NULL;

    -- read-only context from core-banking.events (the national id only masked)
    CREATE TABLE customer (
      customer_id text PRIMARY KEY,
      full_name   text,
      national_id_last4 text,
      phone       text,
      locale      text,
      country     text,
      timezone    text,
      updated_at  timestamptz NOT NULL
    );
    -- an account's last broken promise (ledger.events): its next call comes first
    CREATE TABLE broken_promise (
      account_id text PRIMARY KEY,
      broken_at  timestamptz NOT NULL
    );
    -- the campaign's figures, counted from the events as they arrive
    CREATE TABLE figure (
      name  text PRIMARY KEY,
      value numeric(19, 4) NOT NULL DEFAULT 0
    );

    -- training: simulated customers only, nothing here reaches an account or a topic
    CREATE TABLE training_session (
      session_id text PRIMARY KEY,
      username   text NOT NULL,
      persona    text NOT NULL,
      locale     text NOT NULL,
      seed       integer NOT NULL,
      local_time text NOT NULL,
      state      jsonb NOT NULL,
      transcript jsonb NOT NULL DEFAULT '[]',
      status     text NOT NULL DEFAULT 'open',  -- open, ended
      outcome    text,
      score      integer,
      deductions jsonb,
      started_at timestamptz NOT NULL,
      ended_at   timestamptz
    );
    CREATE INDEX training_session_user ON training_session (username);
"""


def upgrade() -> None:
    for statement in SCHEMA.split(";"):  # asyncpg runs one statement per call
        if statement.strip():
            op.execute(statement)


def downgrade() -> None:
    for table in (
        "training_session",
        "figure",
        "customer",
        "webhook_out",
        "approval",
        "outcome",
        "customer_lock",
        "work_item",
        "login_failure",
        "web_session",
        "person",
    ):
        op.execute(f"DROP TABLE IF EXISTS {table}")
