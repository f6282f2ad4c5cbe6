"""Fixtures shared by every test package."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from bsi.store.database import open_engine, upgrade
from pgcluster import (
    TEMPLATE,
    PostgresUnavailable,
    create_database,
    drop_database,
    postgres_cluster,
)
from realdata import shared_data_path

# Property tests check behaviour, not speed: on a loaded 2-core machine (CI, or
# engineers' runs side by side) generation and examples can be slow, which
# hypothesis would otherwise report as a failure.
settings.register_profile(
    "bsi", deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
settings.load_profile("bsi")

_names = itertools.count()


@pytest.fixture
def shared_data() -> Path:
    """The root of ``../shared/data`` (skips without it, fails under CI=true)."""
    return shared_data_path()


@pytest.fixture(scope="session")
def postgres_base() -> Iterator[str]:
    """One throwaway PostgreSQL for the session, with a migrated template database.

    Tests create their own database from ``TEMPLATE``; without PostgreSQL they
    skip, except under CI=true, where PostgreSQL is required.
    """
    try:
        with postgres_cluster() as base:
            engine = open_engine(create_database(base, TEMPLATE))
            upgrade(engine)
            engine.dispose()
            yield base
    except PostgresUnavailable as error:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required in CI: {error}")
        pytest.skip(f"PostgreSQL not available here: {error}")


@pytest.fixture
def postgres_database(request: pytest.FixtureRequest) -> Iterator[Callable[[], str]]:
    """Makes a database copied from the migrated template and returns its URL; each is
    dropped after the test (a session's copies would otherwise fill the disk until
    the cluster is removed at the end)."""
    base = request.getfixturevalue("postgres_base")
    made: list[str] = []

    def make() -> str:
        name = f"bsi_test_{os.getpid()}_{next(_names)}"
        made.append(name)
        return create_database(base, name, TEMPLATE)

    yield make
    for name in made:
        drop_database(base, name)
