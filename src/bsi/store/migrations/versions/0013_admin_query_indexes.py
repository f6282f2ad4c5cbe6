"""admin query indexes: every compliance count and filtered device list reads an index

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30 10:30:00

Each single-column index of a device list filter becomes (column, id), so a
filtered page in id order reads only its rows; compliance counts devices from
one partial covering index; the lifecycle lists and each device's first
arrival on a build have their own. A device that never reported stores its
``unknown``/``not-reported`` decision (it read as that before, through NULL),
so the outcome and reason filters are plain equalities.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bsi.store.models import (
    DECISION_GROUP_COLUMNS,
    DEVICE_LIST_FILTERS,
    LIVE,
    NOT_REPORTED,
    NOT_REPORTED_MESSAGE,
)

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

SINGLE = (
    "group_id",
    "platform",
    "product_version",
    "build",
    "supplemental_build",
    "decision_reason",
)
"""The device columns that had an index of their own (0001)."""
PARTIAL = {
    "ix_devices_decision_groups": (DECISION_GROUP_COLUMNS, LIVE),
    "ix_devices_revoked_id": (("id",), "revoked_at IS NOT NULL"),
    "ix_devices_decommissioned_id": (("id",), "decommissioned_at IS NOT NULL"),
}


def upgrade() -> None:
    op.execute(
        sa.text(
            "UPDATE devices SET decision_outcome = :outcome, decision_reason = :reason, "
            "decision_message = :message WHERE decision_outcome IS NULL"
        ).bindparams(outcome=NOT_REPORTED[0], reason=NOT_REPORTED[1], message=NOT_REPORTED_MESSAGE)
    )
    for name in SINGLE:
        op.drop_index(f"ix_devices_{name}", table_name="devices")
    for name in DEVICE_LIST_FILTERS:
        op.create_index(f"ix_devices_{name}_id", "devices", [name, "id"])
    for index, (columns, where) in PARTIAL.items():
        op.create_index(
            index,
            "devices",
            list(columns),
            postgresql_where=sa.text(where),
            sqlite_where=sa.text(where),
        )
    op.drop_index("ix_supplemental_build_changes_supplemental_build", "supplemental_build_changes")
    op.create_index(
        "ix_build_changes_build_device_time",
        "supplemental_build_changes",
        ["supplemental_build", "device_id", "observed_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_build_changes_build_device_time", "supplemental_build_changes")
    op.create_index(
        "ix_supplemental_build_changes_supplemental_build",
        "supplemental_build_changes",
        ["supplemental_build"],
    )
    for index in PARTIAL:
        op.drop_index(index, table_name="devices")
    for name in DEVICE_LIST_FILTERS:
        op.drop_index(f"ix_devices_{name}_id", table_name="devices")
    for name in SINGLE:
        op.create_index(f"ix_devices_{name}", "devices", [name])
