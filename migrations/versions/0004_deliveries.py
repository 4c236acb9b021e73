"""The record of deliveries (tests, sendmail, the Python API) and their running totals.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "delivery",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("surface", sa.String(length=16), nullable=False),
        sa.Column("recipients", sa.Integer(), nullable=False),
        sa.Column("sent", sa.Boolean(), nullable=False),
        sa.Column("temporary", sa.Boolean(), nullable=False),
        sa.Column("failed_step", sa.String(length=16), nullable=False),
        sa.Column("cause", sa.Text(), nullable=False),
        sa.Column("fix", sa.Text(), nullable=False),
        sa.Column("server", sa.String(length=300), nullable=False),
        sa.Column("elapsed_ms", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_delivery_at"), "delivery", ["at"], unique=False)
    op.create_table(
        "delivery_total",
        sa.Column("surface", sa.String(length=16), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("failed_step", sa.String(length=16), nullable=False),
        sa.Column("le_ms", sa.Integer(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("sum_ms", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("surface", "outcome", "failed_step", "le_ms"),
    )


def downgrade() -> None:
    op.drop_table("delivery_total")
    op.drop_index(op.f("ix_delivery_at"), table_name="delivery")
    op.drop_table("delivery")
