"""Outbox, outbox lanes and inbox: the delivery-guarantee tables of the desk service.

Revision ID: desk_0001
Revises:
Create Date: 2026-11-28
"""

from collections.abc import Sequence

from alembic import op

from shared.outbox import create_backbone_schema, drop_backbone_schema

revision: str = "desk_0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_backbone_schema(op)


def downgrade() -> None:
    drop_backbone_schema(op)
