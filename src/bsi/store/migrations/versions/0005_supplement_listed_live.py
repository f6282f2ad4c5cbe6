"""supplements remember that a live GDMF listing named them

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 21:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("catalog_supplements") as batch:
        batch.add_column(
            sa.Column("listed_live", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("catalog_supplements") as batch:
        batch.drop_column("listed_live")
