"""Store fixtures: every store test runs on a SQLite file and on a real PostgreSQL."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine

from bsi.store.database import open_engine, upgrade
from bsi.store.store import Store
from pgcluster import TEMPLATE, create_database

NOW = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)
_names = itertools.count()


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        engine = open_engine(f"sqlite:///{tmp_path / 'bsi.db'}")
        upgrade(engine)
    else:
        base = request.getfixturevalue("postgres_base")
        url = create_database(base, f"bsi_test_{os.getpid()}_{next(_names)}", TEMPLATE)
        engine = open_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture
def store(engine: Engine) -> Store:
    store = Store(engine)
    store.ensure_group("default", NOW)
    return store
