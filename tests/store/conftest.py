"""Store fixtures: every store test runs on a SQLite file and on a real PostgreSQL.

The conformance suite is organised by protocol (:mod:`bsi.store.protocols`):
each ``test_store_<concern>.py`` asks for the fixture of its concern (``devices``,
``catalogue``, ``declarations``, ``credentials``, ``events``, ``database``),
typed as that protocol, and uses another concern's fixture only to set up.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from store_facts import NOW

from bsi.store.database import open_engine
from bsi.store.protocols import (
    CatalogStore,
    CredentialStore,
    Database,
    DeclarationStore,
    DeviceStore,
    EventStore,
)
from bsi.store.store import DEFAULT_GROUP, Store
from migrated import sqlite_copy


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        engine = open_engine(f"sqlite:///{sqlite_copy(tmp_path)}")
    else:
        engine = open_engine(request.getfixturevalue("postgres_database")())
    yield engine
    engine.dispose()


@pytest.fixture
def store(engine: Engine) -> Store:
    store = Store(engine)
    store.ensure_group(DEFAULT_GROUP, NOW)
    return store


@pytest.fixture
def devices(store: Store) -> DeviceStore:
    return store


@pytest.fixture
def catalogue(store: Store) -> CatalogStore:
    return store


@pytest.fixture
def declarations(store: Store) -> DeclarationStore:
    return store


@pytest.fixture
def credentials(store: Store) -> CredentialStore:
    return store


@pytest.fixture
def events(store: Store) -> EventStore:
    return store


@pytest.fixture
def database(store: Store) -> Database:
    return store
