"""Migrated SQLite databases for tests, without migrating each time.

The first call migrates a template database from nothing (so migrating from
nothing still runs in every session) and later calls copy it, which is much
faster; ``bsi serve`` on a fresh data directory and ``bsi db upgrade`` keep
their own tests of migrating. PostgreSQL tests copy their template the same
way (tests/pgcluster.py).
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

from bsi.store.database import open_engine, upgrade


@functools.cache
def _template() -> Path:
    directory = Path(tempfile.mkdtemp(prefix="bsi-sqlite-template-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    template = directory / "bsi.db"
    engine = open_engine(f"sqlite:///{template}")
    upgrade(engine)
    engine.dispose()
    return template


def sqlite_copy(directory: Path) -> Path:
    """``directory/bsi.db`` (the embedded default's file) as a migrated database; its path."""
    directory.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copyfile(_template(), directory / "bsi.db"))
