"""container group counts: live hosts' running containers per group, kept by triggers

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-30 11:00:00

Compliance joined every container row to its host (a nested loop of index
lookups: ~60 ms for 4,000 rows on PostgreSQL, growing with the container hosts).
Like 0014, triggers append +n/-n changes: on ``container_decisions`` (a host's
rows inserted or deleted, counted under the host's platform while it is live)
and on ``devices`` (a host's platform or ``decommissioned_at`` changed moves all
its rows).
"""

from __future__ import annotations

from alembic import op

from bsi.store.models import (
    CONTAINER_GROUP_COLUMNS,
    LIVE,
    container_group_counts,
    container_group_deltas,
)

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

COLUMNS = ", ".join(CONTAINER_GROUP_COLUMNS)
OWN = CONTAINER_GROUP_COLUMNS[1:]
"""The container row's own columns (the platform is its host's)."""
INSERT = f"INSERT INTO container_group_deltas ({COLUMNS}, change) "


def row(container: str, platform: str, sign: str) -> str:
    own = ", ".join(f"coalesce({container}.{name}, '')" for name in OWN)
    return f"SELECT coalesce({platform}, ''), {own}, {sign}{container}.count"


def of_container(container: str, sign: str) -> str:
    """The change a container row (OLD or NEW) makes under its live host."""
    return (
        INSERT
        + row(container, "d.platform", sign)
        + f" FROM devices AS d WHERE d.id = {container}.device_id AND d.{LIVE}"
    )


def of_host(host: str, sign: str) -> str:
    """The change all of a host's (OLD or NEW) container rows make while it is live."""
    return (
        INSERT
        + row("c", f"{host}.platform", sign)
        + f" FROM container_decisions AS c WHERE c.device_id = {host}.id AND {host}.{LIVE}"
    )


HOST_CHANGED = (
    "OLD.platform IS NOT NEW.platform OR OLD.decommissioned_at IS NOT NEW.decommissioned_at"
)
SQLITE = [
    "CREATE TRIGGER container_groups_insert AFTER INSERT ON container_decisions "
    f"BEGIN {of_container('NEW', '')}; END",
    "CREATE TRIGGER container_groups_delete AFTER DELETE ON container_decisions "
    f"BEGIN {of_container('OLD', '-')}; END",
    "CREATE TRIGGER container_hosts_update AFTER UPDATE OF platform, decommissioned_at "
    f"ON devices WHEN {HOST_CHANGED} BEGIN {of_host('OLD', '-')}; {of_host('NEW', '')}; END",
]
POSTGRESQL = [
    "CREATE FUNCTION bsi_container_group_delta() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    f"IF TG_OP = 'DELETE' THEN {of_container('OLD', '-')}; "
    f"ELSE {of_container('NEW', '')}; END IF; RETURN NULL; END $$",
    "CREATE TRIGGER container_groups_insert_delete AFTER INSERT OR DELETE "
    "ON container_decisions FOR EACH ROW EXECUTE FUNCTION bsi_container_group_delta()",
    "CREATE FUNCTION bsi_container_host_delta() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    f"{of_host('OLD', '-')}; {of_host('NEW', '')}; RETURN NULL; END $$",
    "CREATE TRIGGER container_hosts_update AFTER UPDATE OF platform, decommissioned_at "
    "ON devices FOR EACH ROW WHEN ((OLD.platform, OLD.decommissioned_at) IS DISTINCT FROM "
    "(NEW.platform, NEW.decommissioned_at)) EXECUTE FUNCTION bsi_container_host_delta()",
]


def upgrade() -> None:
    for table in (container_group_counts, container_group_deltas):
        table.create(op.get_bind())  # exactly the models' tables
    postgresql = op.get_bind().dialect.name == "postgresql"
    for statement in POSTGRESQL if postgresql else SQLITE:
        op.execute(statement)
    own = ", ".join(f"coalesce(c.{name}, '')" for name in OWN)
    op.execute(
        f"INSERT INTO container_group_counts ({COLUMNS}, count) "
        f"SELECT coalesce(d.platform, ''), {own}, sum(c.count) FROM container_decisions AS c "
        f"JOIN devices AS d ON d.id = c.device_id WHERE d.{LIVE} GROUP BY 1, 2, 3, 4, 5"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER container_hosts_update ON devices")
        op.execute("DROP TRIGGER container_groups_insert_delete ON container_decisions")
        op.execute("DROP FUNCTION bsi_container_host_delta()")
        op.execute("DROP FUNCTION bsi_container_group_delta()")
    else:
        op.execute("DROP TRIGGER container_hosts_update")
        op.execute("DROP TRIGGER container_groups_delete")
        op.execute("DROP TRIGGER container_groups_insert")
    op.drop_table("container_group_deltas")
    op.drop_table("container_group_counts")
