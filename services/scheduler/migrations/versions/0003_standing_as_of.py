"""When the account's days past due were true, and the next instalment still unpaid: a contact
fired days after the miss (or after a holiday) states what is owed as of its own moment.

Revision ID: scheduler_0003
Revises: scheduler_0002
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "scheduler_0003"
down_revision: str | None = "scheduler_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("""
        ALTER TABLE account
          ADD COLUMN dpd_as_of timestamptz,
          ADD COLUMN next_due_date date,
          ADD COLUMN next_due_amount numeric(19, 4)
    """)
    op.execute("UPDATE account SET dpd_as_of = updated_at")


def downgrade() -> None:
    op.execute("""
        ALTER TABLE account
          DROP COLUMN dpd_as_of, DROP COLUMN next_due_date, DROP COLUMN next_due_amount
    """)
