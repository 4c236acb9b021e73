"""A Google service account's JSON key, encrypted like the password.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("email_settings") as table:
        table.add_column(sa.Column("google_service_account_key_encrypted", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("email_settings") as table:
        table.drop_column("google_service_account_key_encrypted")
