"""decision group counts: live devices per decision group, kept by database triggers

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-30 10:45:00

Compliance counted a million devices' rows (or index entries) on every read:
~0.5 s at 1 M devices. ``decision_group_counts`` holds the counts and
``decision_group_deltas`` what changed since; triggers on ``devices`` append a
-1 for the group a row leaves and a +1 for the one it enters (only when a group
column or ``decommissioned_at`` changes), inside the writer's transaction.
The covering index 0013 added for the old count goes (one index fewer to write).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bsi.store.models import DECISION_GROUP_COLUMNS, LIVE, Device, column_length

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

COLUMNS = ", ".join(DECISION_GROUP_COLUMNS)
WATCHED = (*DECISION_GROUP_COLUMNS, "decommissioned_at")


def key(row: str) -> str:
    """The group of ``row`` (OLD or NEW, or the table's own) with '' for NULL."""
    prefix = f"{row}." if row else ""
    return ", ".join(f"coalesce({prefix}{name}, '')" for name in DECISION_GROUP_COLUMNS)


def delta(row: str, change: int, select: bool = False) -> str:
    values = f"{key(row)}, {change}"
    source = f"SELECT {values} WHERE {row}.{LIVE}" if select else f"VALUES ({values})"
    return f"INSERT INTO decision_group_deltas ({COLUMNS}, change) {source}"


def group_columns(*, primary_key: bool) -> list[sa.Column[str]]:
    return [
        sa.Column(
            name,
            sa.String(column_length(Device, name)),
            primary_key=primary_key,
            nullable=False,
        )
        for name in DECISION_GROUP_COLUMNS
    ]


SQLITE = [
    f"CREATE TRIGGER decision_groups_insert AFTER INSERT ON devices WHEN NEW.{LIVE} "
    f"BEGIN {delta('NEW', 1)}; END",
    f"CREATE TRIGGER decision_groups_delete AFTER DELETE ON devices WHEN OLD.{LIVE} "
    f"BEGIN {delta('OLD', -1)}; END",
    f"CREATE TRIGGER decision_groups_update AFTER UPDATE OF {', '.join(WATCHED)} ON devices "
    f"WHEN {' OR '.join(f'OLD.{c} IS NOT NEW.{c}' for c in WATCHED)} "
    f"BEGIN {delta('OLD', -1, select=True)}; {delta('NEW', 1, select=True)}; END",
]
POSTGRESQL = [
    "CREATE FUNCTION bsi_decision_group_delta() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    f"IF TG_OP <> 'INSERT' AND OLD.{LIVE} THEN {delta('OLD', -1)}; END IF; "
    f"IF TG_OP <> 'DELETE' AND NEW.{LIVE} THEN {delta('NEW', 1)}; END IF; "
    "RETURN NULL; END $$",
    "CREATE TRIGGER decision_groups_insert_delete AFTER INSERT OR DELETE ON devices "
    "FOR EACH ROW EXECUTE FUNCTION bsi_decision_group_delta()",
    f"CREATE TRIGGER decision_groups_update AFTER UPDATE OF {', '.join(WATCHED)} ON devices "
    f"FOR EACH ROW WHEN (({', '.join(f'OLD.{c}' for c in WATCHED)}) IS DISTINCT FROM "
    f"({', '.join(f'NEW.{c}' for c in WATCHED)})) EXECUTE FUNCTION bsi_decision_group_delta()",
]


def upgrade() -> None:
    op.create_table(
        "decision_group_counts",
        *group_columns(primary_key=True),
        sa.Column("count", sa.Integer(), nullable=False),
    )
    op.create_table(
        "decision_group_deltas",
        sa.Column("id", sa.Integer(), primary_key=True),
        *group_columns(primary_key=False),
        sa.Column("change", sa.Integer(), nullable=False),
    )
    postgresql = op.get_bind().dialect.name == "postgresql"
    for statement in POSTGRESQL if postgresql else SQLITE:
        op.execute(statement)
    op.execute(
        f"INSERT INTO decision_group_counts ({COLUMNS}, count) SELECT {key('')}, count(*) "
        f"FROM devices WHERE {LIVE} GROUP BY {', '.join(map(str, range(1, 7)))}"
    )
    op.drop_index("ix_devices_decision_groups", table_name="devices")


def downgrade() -> None:
    op.create_index(
        "ix_devices_decision_groups",
        "devices",
        list(DECISION_GROUP_COLUMNS),
        postgresql_where=sa.text(LIVE),
        sqlite_where=sa.text(LIVE),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER decision_groups_update ON devices")
        op.execute("DROP TRIGGER decision_groups_insert_delete ON devices")
        op.execute("DROP FUNCTION bsi_decision_group_delta()")
    else:
        for trigger in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER decision_groups_{trigger}")
    op.drop_table("decision_group_deltas")
    op.drop_table("decision_group_counts")
