"""supplements remember the SHA-256 of the cryptex the TUF repository signed

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29 23:55:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("catalog_supplements") as batch:
        batch.add_column(sa.Column("target_sha256", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("catalog_supplements") as batch:
        batch.drop_column("target_sha256")
