"""The database under every store: schema, migrations, readiness; and which protocol owns
which operation."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, text
from store_facts import NOW

from bsi.store.database import (
    DatabaseError,
    _alembic_config,
    current_revision,
    head_revision,
    open_engine,
    upgrade,
)
from bsi.store.models import Base
from bsi.store.protocols import (
    CatalogStore,
    CredentialStore,
    Database,
    DeclarationStore,
    DeviceStore,
    EventStore,
)
from bsi.store.store import NewEnrollment, Store

CONCERNS = (DeviceStore, CatalogStore, DeclarationStore, CredentialStore, EventStore, Database)


def test_every_store_operation_belongs_to_exactly_one_protocol() -> None:
    """What the service can reach is what the conformance tests organise by."""
    owners: dict[str, list[str]] = {}
    for protocol in CONCERNS:
        for name, member in vars(protocol).items():
            if callable(member) and not name.startswith("_"):
                owners.setdefault(name, []).append(protocol.__name__)
    shared = {name: found for name, found in owners.items() if len(found) > 1}
    assert shared == {}
    operations = {
        name
        for name, member in inspect.getmembers(Store, inspect.isfunction)
        if not name.startswith("_")
    }
    assert operations == set(owners)


def test_schema_is_at_head_and_matches_the_models(engine: Engine) -> None:
    assert current_revision(engine) == head_revision(engine)
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []


def test_a_database_at_another_schema_is_not_ready(engine: Engine, database: Database) -> None:
    database.require_current_schema()
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0001'"))
    with pytest.raises(DatabaseError, match="bsi db upgrade"):
        database.require_current_schema()
    database.dispose()  # closed connections are opened again on the next use
    with pytest.raises(DatabaseError, match="schema is at 0001"):
        database.require_current_schema()


def test_widening_enrollment_ids_keeps_every_device_and_its_build_history(tmp_path: Path) -> None:
    """SQLite rebuilds ``devices`` to widen its id; its DROP must not cascade the history away."""
    engine = open_engine(f"sqlite:///{tmp_path / 'old.db'}")
    config = _alembic_config(engine)
    command.upgrade(config, "0002")
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO device_groups (id, name, created_at) VALUES (1, 'default', :t)"),
            {"t": NOW},
        )
        connection.execute(
            text(
                "INSERT INTO devices (id, group_id, enrolled_at, status_items, status_errors) "
                "VALUES ('D1', 1, :t, '{}', '[]')"
            ),
            {"t": NOW},
        )
        connection.execute(
            text(
                "INSERT INTO supplemental_build_changes (device_id, supplemental_build, "
                "observed_at) VALUES ('D1', '25D771280a', :t)"
            ),
            {"t": NOW},
        )
    upgrade(engine)
    store = Store(engine)
    assert [c.device_id for c in store.build_changes(["25D771280a"])] == ["D1"]
    long_id = "D1:" + "u" * 200
    store.register_enrollments([NewEnrollment(long_id, parent_id="D1")], NOW)
    assert store.enrollment(long_id) is not None
    engine.dispose()
