"""supplements keep the CVSS 3.x vectors of their CVEs

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30 08:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("catalog_supplements") as batch:
        batch.add_column(sa.Column("cvss", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("catalog_supplements") as batch:
        batch.drop_column("cvss")
