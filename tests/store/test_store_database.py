"""The database under every store: schema, migrations, readiness; and which protocol owns
which operation."""

from __future__ import annotations

import contextlib
import inspect
import shutil
import sqlite3
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, create_engine, text
from store_facts import NOW, counted

from bsi.store.database import (
    WAL_AUTOCHECKPOINT_PAGES,
    WAL_FILE_LIMIT_BYTES,
    DatabaseError,
    _alembic_config,
    checkpoint,
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
from bsi.store.store import DeviceFilter, NewEnrollment, Store

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
    assert current_revision(engine) == head_revision()
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []


def test_a_checkpoint_moves_what_committed_into_the_database_file(
    engine: Engine, database: Database, tmp_path: Path
) -> None:
    """A commit leaves a small SQLite log alone (the server checkpoints it off the status
    writer's path); the checkpoint puts it in the database file itself, which a copy of
    that file alone shows. PostgreSQL has nothing to do."""
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO device_groups (name, created_at) VALUES ('c', :t)"), {"t": NOW}
        )
    if engine.dialect.name != "sqlite":
        assert checkpoint(engine) is None
        database.checkpoint()
        return
    with engine.connect() as connection:
        pages = connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()
        limit = connection.exec_driver_sql("PRAGMA journal_size_limit").scalar()
    assert pages == WAL_AUTOCHECKPOINT_PAGES  # the bound when the server's checkpoints lag
    assert limit == WAL_FILE_LIMIT_BYTES  # and the log file's, once copied
    assert "c" not in groups_in_file_alone(engine, tmp_path / "before.db")
    database.checkpoint()
    assert "c" in groups_in_file_alone(engine, tmp_path / "after.db")
    logged, copied = checkpoint(engine) or (-1, -2)
    assert logged == copied  # nobody read or wrote meanwhile: the whole log


def test_a_checkpoint_with_every_connection_busy_is_refused_as_a_database_error(
    tmp_path: Path,
) -> None:
    """The server's checkpoint task finds every pooled connection taken: a
    :class:`DatabaseError` naming the database, which the task logs and tries again at
    its next beat, not a pool error of SQLAlchemy's."""
    url = f"sqlite:///{tmp_path / 'busy.db'}"
    engine = create_engine(url, pool_size=1, max_overflow=0, pool_timeout=0.1)
    try:
        with (
            engine.connect(),  # the only connection, held
            pytest.raises(DatabaseError, match=r"cannot checkpoint .*QueuePool limit"),
        ):
            checkpoint(engine)
        assert checkpoint(engine) is not None  # let go: it runs
    finally:
        engine.dispose()


def groups_in_file_alone(engine: Engine, copy: Path) -> set[str]:
    """The group names a copy of the SQLite database file holds, without its log."""
    assert engine.url.database is not None
    shutil.copyfile(engine.url.database, copy)
    with contextlib.closing(sqlite3.connect(copy)) as connection:
        return {name for (name,) in connection.execute("SELECT name FROM device_groups")}


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


def test_upgrading_a_populated_database_counts_its_devices_and_containers(engine: Engine) -> None:
    """0013 stores never-reported devices' decision; 0014 and 0015 count what is there."""
    command.downgrade(_alembic_config(engine), "0012")
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO device_groups (id, name, created_at) VALUES (1, 'default', :t)"),
            {"t": NOW},
        )
        for device, outcome, decommissioned in (
            ("never", None, None),
            ("host", "install", None),
            ("gone", "install", NOW),
        ):
            connection.execute(
                text(
                    "INSERT INTO devices (id, group_id, enrolled_at, status_items, status_errors, "
                    "status_invalid, platform, decision_outcome, decision_reason, "
                    "decommissioned_at) VALUES (:id, 1, :t, '{}', '[]', '[]', :p, :o, :r, :d)"
                ),
                {"id": device, "t": NOW, "p": outcome and "Debian", "o": outcome}
                | {"r": outcome and "automatic", "d": decommissioned},
            )
            connection.execute(
                text(
                    "INSERT INTO container_decisions (device_id, position, outcome, reason, "
                    "supplement_build, count) "
                    "VALUES (:id, 0, 'install', 'automatic', '13.2 (a)', 2)"
                ),
                {"id": device},
            )
    upgrade(engine)
    store = Store(engine)
    kept = store.decision_counts()
    assert kept == counted(engine)
    assert sum(kept.by_group.values()) == 2
    assert sum(kept.containers.values()) == 4  # "never" and "host": live hosts
    (never,) = store.list_devices(DeviceFilter(decision_reason="not-reported"))
    assert (never.device_id, never.decision_outcome) == ("never", "unknown")
