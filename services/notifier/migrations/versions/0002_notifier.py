"""The notifier's records: customers' contact data (the only service that holds it), deliveries
with their send intent and result, every outcome, and partner webhook events seen.

Revision ID: notifier_0002
Revises: notifier_0001
Create Date: 2026-11-28
"""

from collections.abc import Sequence

from alembic import op

revision: str = "notifier_0002"
down_revision: str | None = "notifier_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = """
    CREATE TABLE customer (
      customer_id    text PRIMARY KEY,
      full_name      text,
      phone          text,
      email          text,
      postal_address text,
      phone_ref      text,
      email_ref      text,
      postal_ref     text,
      locale         text,
      country        text,
      updated_at     timestamptz NOT NULL
    );
    CREATE INDEX customer_phone_ref ON customer (phone_ref);
    CREATE INDEX customer_email_ref ON customer (email_ref);
    -- One row per contact.requested: the send intent, recorded before any partner is called,
    -- and its result after. status: pending, sending, sent, delivered, failed, expired, returned
    CREATE TABLE delivery (
      contact_id    text PRIMARY KEY,
      account_id    text NOT NULL,
      customer_id   text NOT NULL,
      channel       text NOT NULL,
      template      text NOT NULL,
      partner       text NOT NULL,
      locale        text,
      address_ref   text,
      not_before    timestamptz NOT NULL,
      not_after     timestamptz NOT NULL,
      offer         jsonb,
      total_overdue numeric(19, 4),
      currency      text,
      days_past_due integer,
      status        text NOT NULL DEFAULT 'pending',
      attempts      integer NOT NULL DEFAULT 0,
      retry_at      timestamptz,       -- wall time: retries are operational, not business time
      claimed_at    timestamptz,       -- wall time of the last claim (a crash leaves it stale)
      message_id    text,              -- the partner's id for what it sent
      rendered      text,              -- digest of the rendered message (no bodies are kept)
      last_error    text,
      outcome       text,
      created_at    timestamptz NOT NULL,
      sent_at       timestamptz
    );
    CREATE INDEX delivery_due ON delivery (not_before) WHERE status = 'pending';
    CREATE INDEX delivery_account ON delivery (account_id);
    CREATE INDEX delivery_address ON delivery (address_ref, sent_at);
    -- Every outcome reported for a contact (voice dispositions kept at least two years: no job
    -- deletes them).
    CREATE TABLE outcome (
      id          bigserial PRIMARY KEY,
      contact_id  text,
      account_id  text,
      channel     text,
      outcome     text NOT NULL,
      detail      jsonb NOT NULL DEFAULT '{}',
      at          timestamptz NOT NULL
    );
    CREATE INDEX outcome_account ON outcome (account_id, id);
    CREATE TABLE webhook_event (
      partner     text NOT NULL,
      event_id    text NOT NULL,
      kind        text NOT NULL,
      orphaned    boolean NOT NULL DEFAULT false,
      received_at timestamptz NOT NULL,
      PRIMARY KEY (partner, event_id)
    )
"""


def upgrade() -> None:
    for statement in SCHEMA.split(";"):  # asyncpg runs one statement per call
        if statement.strip():
            op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TABLE webhook_event, outcome, delivery, customer")
