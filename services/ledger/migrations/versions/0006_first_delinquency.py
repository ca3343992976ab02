"""The date of first delinquency kept on the account (FCRA 623(a)(5)): set when it falls behind,
kept while it stays behind and when it is paid off behind, cleared once it is current again. The
bureau reports it; until now it was guessed from the events of a miss.

Revision ID: ledger_0006
Revises: ledger_0005
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "ledger_0006"
down_revision: str | None = "ledger_0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE account ADD COLUMN first_delinquency date")
    # Accounts behind today: the oldest unpaid due date is the best the ledger still knows.
    op.execute("""
        UPDATE account a SET first_delinquency = (
          SELECT min(i.due_date) FROM installment i
          WHERE i.account_id = a.account_id AND i.paid < i.amount)
        WHERE a.in_arrears
    """)


def downgrade() -> None:
    op.execute("ALTER TABLE account DROP COLUMN first_delinquency")
