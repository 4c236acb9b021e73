"""The server the password of SMTP_PASSWORD_FILE is bound to, kept apart so that clear keeps it.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("email_settings") as table:
        table.add_column(sa.Column("password_file_server", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("email_settings") as table:
        table.drop_column("password_file_server")
