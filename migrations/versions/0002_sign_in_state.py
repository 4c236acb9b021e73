"""Failed sign-ins and admin sessions in the database, shared by every app process.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "login_failure",
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_at", sa.Float(), nullable=False),
        sa.Column("checking_until", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("address"),
    )
    op.create_index(op.f("ix_login_failure_last_at"), "login_failure", ["last_at"], unique=False)
    op.create_table(
        "admin_session",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("username", sa.String(length=255), nullable=False),
        sa.Column("password_fingerprint", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_admin_session_created_at"), "admin_session", ["created_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_admin_session_created_at"), table_name="admin_session")
    op.drop_table("admin_session")
    op.drop_index(op.f("ix_login_failure_last_at"), table_name="login_failure")
    op.drop_table("login_failure")
