"""A plan agreed under hardship, and its kind: a payment holiday (an extension) agreed under
hardship is forbearance (Metro 2 special comment CP); any other plan is a payment agreement (AC).

Revision ID: bureau_0004
Revises: bureau_0003
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "bureau_0004"
down_revision: str | None = "bureau_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("""
        ALTER TABLE account
          ADD COLUMN plan_hardship boolean NOT NULL DEFAULT false,
          ADD COLUMN plan_kind text
    """)


def downgrade() -> None:
    op.execute("ALTER TABLE account DROP COLUMN plan_hardship, DROP COLUMN plan_kind")
