"""Humane collection: what a delivery is for (and, for a reminder, what falls due), the
customer's time zone (a callback asked for "at 19:30" is their 19:30), fingerprints of what the
self-service page's light identity check compares (never the birth date or national id
themselves), and the page's wrong answers and locks.

Revision ID: notifier_0003
Revises: notifier_0002
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "notifier_0003"
down_revision: str | None = "notifier_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("""
        ALTER TABLE delivery
          ADD COLUMN purpose text,
          ADD COLUMN due_date date,
          ADD COLUMN amount_due numeric(19, 4)
    """)
    op.execute("""
        ALTER TABLE customer
          ADD COLUMN timezone text,
          ADD COLUMN birth_ref text,
          ADD COLUMN nid4_ref text
    """)
    op.execute("""
        CREATE TABLE self_service_check (
          customer_id  text PRIMARY KEY,
          failures     integer NOT NULL DEFAULT 0,
          locked_until timestamptz,
          updated_at   timestamptz NOT NULL
        )
    """)


def downgrade() -> None:
    op.execute("DROP TABLE self_service_check")
    op.execute(
        "ALTER TABLE customer DROP COLUMN timezone, DROP COLUMN birth_ref, DROP COLUMN nid4_ref"
    )
    op.execute(
        "ALTER TABLE delivery DROP COLUMN purpose, DROP COLUMN due_date, DROP COLUMN amount_due"
    )
