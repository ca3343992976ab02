"""Reminders before the due date and plans agreed under hardship.

Each product says how many days before an instalment falls due its customer is reminded
(``due_soon_days``, default 3); an instalment remembers when ``installment.due_soon`` went out
for it, so it goes out once across redelivery and restarts. A plan agreed under hardship is
marked so (the bureau reports it with a payment-agreement special comment).

Revision ID: ledger_0007
Revises: ledger_0006
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "ledger_0007"
down_revision: str | None = "ledger_0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "ALTER TABLE product ADD COLUMN due_soon_days integer NOT NULL DEFAULT 3"
        " CHECK (due_soon_days >= 0 AND due_soon_days <= 60)"
    )
    op.execute("ALTER TABLE installment ADD COLUMN reminded_at timestamptz")
    # Every account is reviewed at the next pass, so that its next review day counts the
    # reminder days too.
    op.execute("UPDATE account SET review_at = NULL")
    op.execute("ALTER TABLE plan ADD COLUMN hardship boolean NOT NULL DEFAULT false")
    op.execute("ALTER TABLE plan ADD COLUMN source text")


def downgrade() -> None:
    op.execute("ALTER TABLE plan DROP COLUMN hardship, DROP COLUMN source")
    op.execute("ALTER TABLE installment DROP COLUMN reminded_at")
    op.execute("ALTER TABLE product DROP COLUMN due_soon_days")
