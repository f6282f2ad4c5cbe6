"""supplement base: package and file prerequisites, fixed_in

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 21:05:00

A supplement's base may be installed package versions or file digests
instead of a build (see bsi.domain.prerequisite): ``base`` holds that
document (and ``fixed_in``), and ``prerequisite_build`` is null for them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("catalog_supplements") as batch:
        batch.add_column(sa.Column("base", sa.JSON(), nullable=True))
        batch.alter_column("prerequisite_build", existing_type=sa.String(length=16), nullable=True)


def downgrade() -> None:
    op.execute("DELETE FROM catalog_supplements WHERE prerequisite_build IS NULL")
    with op.batch_alter_table("catalog_supplements") as batch:
        batch.alter_column("prerequisite_build", existing_type=sa.String(length=16), nullable=False)
        batch.drop_column("base")
