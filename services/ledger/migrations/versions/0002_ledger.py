"""Customers, accounts, instalments, payments, allocations, delinquency history and flags.

Revision ID: ledger_0002
Revises: ledger_0001
Create Date: 2026-11-28
"""

from collections.abc import Sequence

from alembic import op

revision: str = "ledger_0002"
down_revision: str | None = "ledger_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Only what the ledger's rules need of a customer: names, phones and national ids live with
    # the services that contact or report, not here.
    # asyncpg runs one statement per call.
    for statement in SCHEMA.split(";"):
        if statement.strip():
            op.execute(statement)


SCHEMA = """
        -- One sequence orders everything an account's history shows, as the ledger recorded it.
        CREATE SEQUENCE history_seq;
        CREATE TABLE customer (
          customer_id text PRIMARY KEY,
          timezone    text NOT NULL,
          country     text NOT NULL,
          locale      text NOT NULL,
          updated_at  timestamptz NOT NULL
        );
        CREATE TABLE product (
          product    text PRIMARY KEY,
          grace_days integer NOT NULL DEFAULT 0 CHECK (grace_days >= 0)
        );
        CREATE TABLE account (
          account_id     text PRIMARY KEY,
          customer_id    text NOT NULL,
          product        text NOT NULL,
          currency       char(3) NOT NULL,
          principal      numeric(19, 4) NOT NULL,
          opened_on      date NOT NULL,
          days_past_due  integer NOT NULL DEFAULT 0,
          bucket         text NOT NULL DEFAULT 'current',
          overdue        numeric(19, 4) NOT NULL DEFAULT 0,
          in_arrears     boolean NOT NULL DEFAULT false,  -- delinquent since it was last cured
          evaluated_at   timestamptz
        );
        CREATE INDEX account_customer ON account (customer_id);
        CREATE TABLE installment (
          account_id     text NOT NULL REFERENCES account,
          installment_no integer NOT NULL,
          due_date       date NOT NULL,
          amount         numeric(19, 4) NOT NULL CHECK (amount > 0),
          paid           numeric(19, 4) NOT NULL DEFAULT 0 CHECK (paid >= 0 AND paid <= amount),
          missed_at      timestamptz,  -- set with the payment.missed event, so it is sent once
          PRIMARY KEY (account_id, installment_no)
        );
        CREATE INDEX installment_unpaid ON installment (account_id, due_date) WHERE paid < amount;
        CREATE TABLE payment (
          payment_id     text PRIMARY KEY,
          account_id     text NOT NULL REFERENCES account,
          amount         numeric(19, 4) NOT NULL CHECK (amount > 0),
          currency       char(3) NOT NULL,
          posted_at      timestamptz NOT NULL,
          unallocated    numeric(19, 4) NOT NULL DEFAULT 0,
          reversed_at    timestamptz,
          reversal_reason text,
          seq            bigint NOT NULL DEFAULT nextval('history_seq'),
          reversal_seq   bigint
        );
        CREATE INDEX payment_account ON payment (account_id, posted_at);
        CREATE TABLE allocation (
          payment_id     text NOT NULL REFERENCES payment,
          account_id     text NOT NULL,
          installment_no integer NOT NULL,
          amount         numeric(19, 4) NOT NULL CHECK (amount > 0),
          PRIMARY KEY (payment_id, installment_no),
          FOREIGN KEY (account_id, installment_no) REFERENCES installment
        );
        CREATE TABLE bucket_change (
          id             bigserial PRIMARY KEY,
          account_id     text NOT NULL REFERENCES account,
          from_bucket    text NOT NULL,
          to_bucket      text NOT NULL,
          days_past_due  integer NOT NULL,
          changed_at     timestamptz NOT NULL,
          seq            bigint NOT NULL DEFAULT nextval('history_seq')
        );
        CREATE INDEX bucket_change_account ON bucket_change (account_id, id);
        CREATE TABLE flag_change (
          id          bigserial PRIMARY KEY,
          account_id  text,
          customer_id text NOT NULL,
          flag        text NOT NULL,
          active      boolean NOT NULL,
          changed_at  timestamptz NOT NULL,
          seq         bigint NOT NULL DEFAULT nextval('history_seq')
        );
        CREATE INDEX flag_change_customer ON flag_change (customer_id, id);
"""


def downgrade() -> None:
    op.execute(
        "DROP TABLE flag_change, bucket_change, allocation, payment, installment, account, "
        "product, customer; DROP SEQUENCE history_seq"
    )
