"""decided generation: the wake-up generation the stored decisions were last made at

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-02 18:30:00

A change that can alter devices' decisions (a catalogue, a policy, a rollout)
moves the wake-up generation on, and a decision pass then decides the devices
it affects. A server that stopped between the two (a restart, a crash, a
killed decision process) left the stored decisions behind the change, and no
later server knew: compliance answered from them until the next change. A
completed pass now records the generation it decided at, and a server that
starts behind it decides every device again (``bsi.server.service``).

Existing databases start at 0: the first server after the upgrade decides
every device once, unless nothing was ever changed.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("wakeup_generation") as table:
        table.add_column(
            sa.Column("decided_generation", sa.BigInteger(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("wakeup_generation") as table:
        table.drop_column("decided_generation")
