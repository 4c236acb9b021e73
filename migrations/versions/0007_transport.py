"""How mail leaves: SMTP, or Microsoft Graph's sendMail.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("email_settings") as table:
        table.add_column(sa.Column("transport", sa.String(length=32), nullable=False, server_default="smtp"))


def downgrade() -> None:
    with op.batch_alter_table("email_settings") as table:
        table.drop_column("transport")
