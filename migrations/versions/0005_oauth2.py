"""Signing in with OAuth 2.0 (XOAUTH2): the method, the token endpoint, the client and its secret.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("email_settings") as table:
        table.add_column(sa.Column("auth_method", sa.String(length=16), nullable=False, server_default="password"))
        table.add_column(sa.Column("oauth2_token_url", sa.String(length=2048), nullable=False, server_default=""))
        table.add_column(sa.Column("oauth2_client_id", sa.String(length=1024), nullable=False, server_default=""))
        table.add_column(sa.Column("oauth2_scope", sa.String(length=1024), nullable=False, server_default=""))
        table.add_column(sa.Column("oauth2_client_secret_encrypted", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("email_settings") as table:
        for column in ("oauth2_client_secret_encrypted", "oauth2_scope", "oauth2_client_id", "oauth2_token_url"):
            table.drop_column(column)
        table.drop_column("auth_method")
