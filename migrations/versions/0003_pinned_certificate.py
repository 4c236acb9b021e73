"""The pinned certificate: the SHA-256 fingerprint of the one certificate the server may present.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("email_settings") as table:
        table.add_column(sa.Column("pinned_cert_sha256", sa.String(length=64), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("email_settings") as table:
        table.drop_column("pinned_cert_sha256")
