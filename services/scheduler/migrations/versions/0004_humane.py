"""Humane collection: each timer's purpose (a collection step, a reminder before the due date,
a hardship treatment's step, a callback the customer asked for) and what its message needs; an
account's hardship pause and how often it was late before; the contact log looked up by
address, so that a cap per number counts every customer who shares it.

Revision ID: scheduler_0004
Revises: scheduler_0003
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "scheduler_0004"
down_revision: str | None = "scheduler_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("""
        ALTER TABLE timer
          ADD COLUMN purpose text NOT NULL DEFAULT 'collection'
            CHECK (purpose IN ('collection', 'reminder', 'hardship', 'callback')),
          ADD COLUMN context jsonb
    """)
    op.execute("""
        ALTER TABLE account
          ADD COLUMN hardship_until timestamptz,
          ADD COLUMN hardship_reason text,
          ADD COLUMN times_late integer NOT NULL DEFAULT 0
    """)
    op.execute(
        "CREATE INDEX contact_log_address ON contact_log (address_ref, requested_at)"
        " WHERE address_ref IS NOT NULL"
    )


def downgrade() -> None:
    op.execute("DROP INDEX contact_log_address")
    op.execute(
        "ALTER TABLE account DROP COLUMN hardship_until, DROP COLUMN hardship_reason,"
        " DROP COLUMN times_late"
    )
    op.execute("ALTER TABLE timer DROP COLUMN purpose, DROP COLUMN context")
