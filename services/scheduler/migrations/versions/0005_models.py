"""Propensity models as versioned data: stored as drafts, published (several at once: each
strategy variant names the one it scores with), retired when no published strategy uses them.

Revision ID: scheduler_0005
Revises: scheduler_0004
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "scheduler_0005"
down_revision: str | None = "scheduler_0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("""
        CREATE TABLE model_version (
          version      integer PRIMARY KEY,
          kind         text NOT NULL,
          status       text NOT NULL CHECK (status IN ('draft', 'published', 'retired')),
          body         jsonb NOT NULL,
          checksum     text NOT NULL,
          created_at   timestamptz NOT NULL,
          published_at timestamptz,
          retired_at   timestamptz
        )
    """)


def downgrade() -> None:
    op.execute("DROP TABLE model_version")
