"""The date each account next needs evaluating, so a clock move touches only those.

Revision ID: ledger_0004
Revises: ledger_0003
Create Date: 2026-11-28
"""

from collections.abc import Sequence

from alembic import op

revision: str = "ledger_0004"
down_revision: str | None = "ledger_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # NULL means "evaluate at the next pass" (new accounts, a changed time zone, a resumed plan).
    op.execute("ALTER TABLE account ADD COLUMN review_on date")
    op.execute("CREATE INDEX account_review_on ON account (review_on)")


def downgrade() -> None:
    op.execute("ALTER TABLE account DROP COLUMN review_on")
