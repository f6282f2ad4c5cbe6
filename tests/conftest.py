"""Fixtures shared by every test package."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from bsi.store.database import open_engine, upgrade
from pgcluster import TEMPLATE, PostgresUnavailable, create_database, postgres_cluster
from realdata import shared_data_path

# Property tests check behaviour, not speed: on a loaded 2-core machine (CI, or
# engineers' runs side by side) generation and examples can be slow, which
# hypothesis would otherwise report as a failure.
settings.register_profile(
    "bsi", deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
settings.load_profile("bsi")


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
