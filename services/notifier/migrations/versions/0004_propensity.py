"""The propensity to pay the scheduler decided a contact with, passed on to the partner that
works a call or a visit (the desk orders its queues by it).

Revision ID: notifier_0004
Revises: notifier_0003
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "notifier_0004"
down_revision: str | None = "notifier_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE delivery ADD COLUMN propensity numeric(6, 4)")


def downgrade() -> None:
    op.execute("ALTER TABLE delivery DROP COLUMN propensity")
