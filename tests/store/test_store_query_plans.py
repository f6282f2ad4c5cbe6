"""Every compliance count and filtered device list the admin API and console run is served
by an index, on both databases (issue 18: no sequential scan of devices for filtered lists).

Each query is the store's own: the store method runs on a seeded, analysed table while a
cursor hook asks the database for the plan of every statement it sends (PostgreSQL
``EXPLAIN`` with sequential scans priced out, SQLite ``EXPLAIN QUERY PLAN``). A change of
the store's query that no index serves fails here, not at a million devices.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, event, insert, text
from store_facts import NOW

from bsi.store import store as store_module
from bsi.store.database import open_engine
from bsi.store.models import ContainerDecisionCount, Device, SupplementalBuildChange
from bsi.store.rollouts import SqlRolloutStore
from bsi.store.store import DeviceFilter, Store
from migrated import sqlite_copy
from pgcluster import TEMPLATE, create_database, drop_database

DEVICES = 2000
AFTER = "device-00100"
"""The cursor of a second page: every list is asked for the page after it."""
COMMON = {
    "platform": "macOS",
    "product_version": "26.3.1",
    "build": "25D2128",
    "supplemental_build": "25D771280a",
    "supplemental_extra": "(a)",
    "decision_outcome": "up-to-date",
    "decision_reason": "supplement-installed",
    "decision_supplement_build": "25D771280a",
}
"""Most devices; each filter below asks for a value about one device in a hundred has
(filtering is for finding the few): the plan an index gives is then the cheapest."""
RARE: dict[int, dict[str, Any]] = {
    1: {"platform": "iOS", "product_version": "26.2", "build": "23C55"},
    2: {"supplemental_build": "25D771280b", "supplemental_extra": "(b)"},
    3: {"decision_outcome": "deferred", "decision_reason": "rollout-wave"},
    4: {"decision_outcome": "unknown", "decision_reason": "not-reported"},
    5: {"decision_supplement_build": "25D771280b", "decision_outcome": "install"},
    6: {"decision_reason": "automatic", "decision_outcome": "install"},
}
GROUPS = ("default", "lab")


def rows(groups: dict[str, int]) -> Iterator[dict[str, Any]]:
    """A fleet of common devices, rare values, never-seen and retired ones."""
    for i in range(DEVICES):
        yield {
            **COMMON,
            **RARE.get(i % 100, {}),
            "id": f"device-{i:05d}",
            "group_id": groups["lab" if i % 100 == 7 else "default"],
            "enrolled_at": NOW,
            "last_seen_at": None if i % 11 == 0 else NOW - timedelta(minutes=i % 600),
            "decision_message": "",
            "revoked_at": NOW if i % 100 in (8, 9) else None,
            "decommissioned_at": NOW if i % 100 == 9 else None,
        }


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def seeded(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Store]:
    """One seeded, analysed database per backend for the whole module (queries only read)."""
    if request.param == "sqlite":
        engine = open_engine(f"sqlite:///{sqlite_copy(tmp_path_factory.mktemp('plans'))}")
    else:
        base = request.getfixturevalue("postgres_base")
        database = f"bsi_plans_{os.getpid()}"
        engine = open_engine(create_database(base, database, TEMPLATE))
    store = Store(engine)
    groups = {name: store.ensure_group(name, NOW) for name in GROUPS}
    with engine.begin() as connection:
        connection.execute(insert(Device), list(rows(groups)))
        connection.execute(
            insert(SupplementalBuildChange),
            [
                {"device_id": f"device-{i:05d}", "supplemental_build": b, "observed_at": NOW}
                for i in range(DEVICES)
                for b in (None, "25D771280b" if i % 100 == 2 else "25D771280a")
            ],
        )
        connection.execute(
            insert(ContainerDecisionCount),
            [
                {"device_id": f"device-{i:05d}", "position": 0, "outcome": "install"}
                | {"reason": "automatic", "supplement_build": "13.2 (a)", "count": 4}
                for i in range(3, DEVICES, 40)
            ],
        )
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM ANALYZE"))  # index-only scans need the visibility map
    else:
        with engine.begin() as connection:
            connection.execute(text("ANALYZE"))
    yield store
    engine.dispose()
    if request.param == "postgresql":
        drop_database(base, database)


@contextlib.contextmanager
def plans(engine: Engine) -> Iterator[list[str]]:
    """The plan of every statement on ``devices`` (or its build history) run meanwhile."""
    found: list[str] = []
    postgres = engine.dialect.name == "postgresql"

    def explain(_c: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if not re.search(r"\b(devices|supplemental_build_changes)\b", statement):
            return
        if postgres:
            cursor.execute("SET enable_seqscan = off")
            cursor.execute("EXPLAIN " + statement, parameters)
            found.append("\n".join(row[0] for row in cursor.fetchall()))
        else:
            cursor.execute("EXPLAIN QUERY PLAN " + statement, parameters)
            found.append("\n".join(row[3] for row in cursor.fetchall()))

    event.listen(engine, "before_cursor_execute", explain)
    try:
        yield found
    finally:
        event.remove(engine, "before_cursor_execute", explain)


def page(f: DeviceFilter) -> Callable[[Store], object]:
    return lambda store: store.list_devices(f, after=AFTER, limit=100)


LISTS: dict[str, tuple[DeviceFilter, str | None]] = {
    "group": (DeviceFilter(group="lab"), "ix_devices_group_id_id"),
    "platform": (DeviceFilter(platform="iOS"), "ix_devices_platform_id"),
    "product_version": (DeviceFilter(product_version="26.2"), "ix_devices_product_version_id"),
    "build": (DeviceFilter(build="23C55"), "ix_devices_build_id"),
    "supplemental_build": (
        DeviceFilter(supplemental_build="25D771280b"),
        "ix_devices_supplemental_build_id",
    ),
    "extra_version": (DeviceFilter(supplemental_extra="(b)"), "ix_devices_supplemental_extra_id"),
    "outcome": (DeviceFilter(decision_outcome="deferred"), "ix_devices_decision_outcome_id"),
    "outcome unknown (never reported included)": (
        DeviceFilter(decision_outcome="unknown"),
        "ix_devices_decision_outcome_id",
    ),
    "reason": (DeviceFilter(decision_reason="automatic"), "ix_devices_decision_reason_id"),
    "reason not-reported": (
        DeviceFilter(decision_reason="not-reported"),
        "ix_devices_decision_reason_id",
    ),
    "target build (console CVE page)": (
        DeviceFilter(decision_supplement_build="25D771280b"),
        "ix_devices_decision_supplement_build_id",
    ),
    "revoked": (DeviceFilter(lifecycle="revoked"), "ix_devices_revoked_id"),
    "decommissioned": (DeviceFilter(lifecycle="decommissioned"), "ix_devices_decommissioned_id"),
    # Filters of many devices or ranges: any index (the id order, or the range); no scan.
    "outcome and reason (console overview)": (
        DeviceFilter(decision_outcome="install", decision_reason="automatic"),
        None,
    ),
    "active": (DeviceFilter(lifecycle="active"), None),
    "none": (DeviceFilter(), None),
    "seen before": (DeviceFilter(seen_before=NOW - timedelta(hours=9)), None),
    "seen after": (DeviceFilter(seen_after=NOW - timedelta(minutes=5)), None),
    "stale": (DeviceFilter(stale_before=NOW - timedelta(hours=9)), None),
}
AGGREGATES: dict[str, tuple[Callable[[Store], object], str | None]] = {
    "patch windows (build changes)": (
        lambda store: store.build_changes(["25D771280b"]),
        "ix_build_changes_build_device_time",
    ),
    "rollout fleet (supplement page)": (
        lambda store: SqlRolloutStore(store.engine).fleet("iOS", "23C55"),
        "ix_devices_platform_id",
    ),
}


def unserved(plan: str, postgres: bool) -> list[str]:
    """What in ``plan`` reads a whole table (devices, or its build history) row by row."""
    if postgres:
        return re.findall(r"Seq Scan on (?:devices|supplemental_build_changes)\b.*", plan)
    return [
        line
        for line in plan.splitlines()
        if re.match(r"SCAN (devices|supplemental_build_changes)\b", line) and "USING" not in line
    ]


@pytest.mark.parametrize("name", [*LISTS, *AGGREGATES])
def test_each_admin_query_is_served_by_an_index(seeded: Store, name: str) -> None:
    postgres = seeded.engine.dialect.name == "postgresql"
    if name in LISTS:
        f, index = LISTS[name]
        run: Callable[[Store], object] = page(f)
    else:
        run, index = AGGREGATES[name]
    with plans(seeded.engine) as found:
        assert run(seeded)  # the seeded fleet answers every query
    assert found, "the store ran no statement on devices"
    for plan in found:
        assert unserved(plan, postgres) == [], plan
    if index is not None:
        assert any(index in plan for plan in found), "\n\n".join(found)
    if name in LISTS and index is not None:
        # the index gives the id order: one page reads its own rows, never sorts them all
        sorted_all = "Sort" if postgres else "TEMP B-TREE"
        assert not any(sorted_all in plan for plan in found), "\n\n".join(found)


def test_a_query_no_index_serves_is_caught(seeded: Store) -> None:
    """The check itself: a filter on a column without an index reads the whole table."""
    postgres = seeded.engine.dialect.name == "postgresql"
    with plans(seeded.engine) as found, seeded.engine.connect() as connection:
        connection.execute(text("SELECT id FROM devices WHERE model_identifier = 'Mac14,2'"))
    assert unserved(found[0], postgres) != []


@pytest.mark.parametrize(
    "f",
    [
        DeviceFilter(seen_after=NOW - timedelta(minutes=1)),
        DeviceFilter(seen_before=NOW - timedelta(minutes=598)),
        DeviceFilter(stale_before=NOW - timedelta(minutes=598)),
    ],
)
def test_a_narrow_last_seen_range_is_read_from_its_index_on_sqlite_too(
    seeded: Store, f: DeviceFilter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite has no value statistics: the store counts the range in the index first and
    names the index when few devices are in it; a wide range walks the id order. Both
    list the same devices."""
    postgres = seeded.engine.dialect.name == "postgresql"
    with plans(seeded.engine) as found:
        few = seeded.list_devices(f, limit=1000)
    assert few
    assert postgres or any("USING INDEX ix_devices_last_seen_at" in p for p in found[-1:])
    assert all(unserved(plan, postgres) == [] for plan in found)
    monkeypatch.setattr(store_module, "FEW_SEEN", 1)
    with plans(seeded.engine) as found:
        assert seeded.list_devices(f, limit=1000) == few
    assert postgres or "ix_devices_last_seen_at" not in found[-1]


def test_compliance_reads_no_device_rows(seeded: Store) -> None:
    """compliance/supplements and /cves, patch-windows' summary, the console's pages and
    /metrics count from the counts the database keeps: no statement reads devices."""
    with plans(seeded.engine) as found:
        counts = seeded.decision_counts()
    assert sum(counts.by_group.values()) == DEVICES - DEVICES // 100  # all but decommissioned
    assert sum(counts.containers.values()) > 0
    assert found == []
