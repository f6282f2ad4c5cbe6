"""How fast the admin API's and console's compliance counts and device lists run on a big
fleet, beside the same queries without the indexes of migration 0013 (issue 18 item 5).

For each database (SQLite, the embedded default; PostgreSQL from ``--postgres-url``, else
a throwaway cluster from ``benchmarks/pg.py`` unless ``--no-postgres``) it:

1. migrates a fresh database and seeds ``--devices`` devices with bulk Core inserts: a
   spread over groups (one of only 100 devices), platforms, versions, decisions
   (``unknown``/``not-reported`` among them), supplemental builds, last check-ins over a
   month (some never), revoked and decommissioned devices, a status report per device,
   each device's supplemental build history and container hosts' container decisions;
   then analyses it (``VACUUM ANALYZE`` / ``ANALYZE``), as autovacuum and ``bsi`` would;
2. times every query below through the store's own methods (what the routes call), each
   the median of ``--repeat`` runs after one warm-up, and ``SELECT count(*) FROM devices``;
3. times compliance's count with ``FOLD_DELTAS`` group changes not yet folded (the most
   it reads before folding) and one fold of them;
4. goes back to schema 0012 (``alembic downgrade``: the single-column indexes of before,
   no kept counts; compliance counted every live device's row) and times each query
   again: the reference, measured in the same run;
5. times one batch of 10,000 check-ins (``touch_devices``) and one of 10,000 changed
   decisions (``store_decisions``) on both schemas: what the indexes and the count
   triggers cost writes.

It prints milliseconds per query with, beside each, the time without the indexes and
their ratio, and whether it meets the goal (< 100 ms at 1,000,000 devices).

    nice -n 10 .venv/bin/python benchmarks/admin_queries.py                  # 100,000
    nice -n 10 .venv/bin/python benchmarks/admin_queries.py --devices 1000000 --no-postgres
"""

from __future__ import annotations

import argparse
import contextlib
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from alembic import command
from pg import PostgresUnavailable, postgres_cluster
from sqlalchemy import Engine, insert, text

from bsi.domain.eligibility import Decision, Outcome, Reason
from bsi.store.database import _alembic_config, open_engine, upgrade
from bsi.store.models import (
    DECISION_GROUP_COLUMNS,
    LIVE,
    NOT_REPORTED,
    ContainerDecisionCount,
    Device,
    SupplementalBuildChange,
)
from bsi.store.store import DEFAULT_GROUP, FOLD_DELTAS, DecidedDevice, DeviceFilter, Store

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
BEFORE = "0012"
"""The schema before the admin query indexes: the reference."""
GOAL_MS = 100.0
MOVED = Decision(Outcome.BLOCKED, Reason.BATTERY_LOW, "benchmark: a group no device is in")
BACK = Decision(Outcome.INSTALL, Reason.AUTOMATIC, "benchmark: out of it again")
BATCH = 10_000
"""Check-ins per ``touch_devices`` batch timed (the fleet must have twice as many)."""

PLATFORMS = (  # (platform, weight, [(version, build, supplement this build can take)])
    ("macOS", 60, [("26.3.1", "25D2128", "25D771280a"), ("26.2", "25C56", None)]),
    ("iOS", 30, [("26.3.1", "23D8133", "23D8133a"), ("18.7.5", "22H311", None)]),
    ("Debian", 10, [("13", "13.2", "13.2 (a)")]),
)
DECISIONS = (  # (outcome, reason, weight, runs the supplement)
    ("up-to-date", "supplement-installed", 600, True),
    ("up-to-date", "included-in-release", 100, False),
    ("install", "automatic", 60, False),
    ("install", "offered-to-user", 40, False),
    ("restart-pending", "supplement-installed", 30, False),
    ("deferred", "rollout-wave", 40, False),
    ("deferred", "maintenance-window", 10, False),
    ("blocked", "not-latest-minor", 50, False),
    ("blocked", "unsupported-device", 20, False),
    ("unknown", "unknown-model", 20, False),
    ("unknown", "status-invalid", 5, False),
    (*NOT_REPORTED, 10, False),
)
GROUPS = (("default", 900), ("pilot", 50), ("lab", 49))
RARE_GROUP = "canary"
"""100 devices: a group filter that finds few."""
STATUS = {
    "device.operating-system.family": "macOS",
    "device.model.identifier": "Mac14,2",
    "softwareupdate.device-id": "J413AP",
    "management.client-capabilities.supported-payloads.status-items": [
        "device.operating-system.build-version",
        "device.operating-system.supplemental.build-version",
        "device.operating-system.supplemental.extra-version",
        "softwareupdate.install-state",
        "softwareupdate.pending-version",
    ],
    "softwareupdate.install-state": "none",
}
"""About the size of a real stored report (the devices row is as wide as in production)."""


def seed(engine: Engine, devices: int) -> None:
    """``devices`` devices with the spread the docstring describes, in bulk inserts."""
    store = Store(engine)
    groups = [(store.ensure_group(name, NOW), weight) for name, weight in GROUPS]
    rare = store.ensure_group(RARE_GROUP, NOW)
    pick = random.Random(18)
    group_ids = [g for g, weight in groups for _ in range(weight)]
    decisions = [d for d in DECISIONS for _ in range(d[2])]
    platforms = [p for p in PLATFORMS for _ in range(p[1])]
    rare_every = max(devices // 100, 1)
    rows: list[dict[str, Any]] = []
    changes: list[dict[str, Any]] = []
    containers: list[dict[str, Any]] = []
    with engine.begin() as connection:

        def flush() -> None:
            for model, batch in (
                (Device, rows),
                (SupplementalBuildChange, changes),
                (ContainerDecisionCount, containers),
            ):
                if batch:
                    connection.execute(insert(model), batch)
                    batch.clear()

        for index in range(devices):
            device_id = f"{index:08d}-{pick.getrandbits(64):016x}"
            platform, _, versions = pick.choice(platforms)
            version, build, supplement = pick.choice(versions)
            outcome, reason, _, installed = pick.choice(decisions)
            on = supplement if installed and supplement else None
            seen = None if pick.random() < 0.02 else NOW - timedelta(seconds=pick.randrange(2**21))
            retired = pick.random()
            rows.append(
                {
                    "id": device_id,
                    "group_id": rare if index % rare_every == 0 else group_ids[index % 999],
                    "enrolled_at": NOW - timedelta(days=90),
                    "last_seen_at": seen,
                    "platform": platform,
                    "product_version": version,
                    "build": build,
                    "supplemental_build": on,
                    "supplemental_extra": "(a)" if on else None,
                    "model_identifier": "Mac14,2",
                    "decision_outcome": outcome,
                    "decision_reason": reason,
                    "decision_supplement_build": supplement if outcome != "unknown" else None,
                    "decision_message": f"{outcome}: {reason}",
                    "status_items": {**STATUS, "device.operating-system.build-version": build},
                    "revoked_at": NOW if retired < 0.015 else None,
                    "decommissioned_at": NOW if retired < 0.01 else None,
                }
            )
            if on:
                changes.append({"device_id": device_id, "supplemental_build": on})
                changes[-1]["observed_at"] = NOW - timedelta(hours=pick.randrange(1, 400))
            if platform == "Debian" and pick.random() < 0.2:
                containers.append(
                    {"device_id": device_id, "position": 0, "installed_build": None}
                    | {"outcome": "install", "reason": "automatic", "supplement_build": supplement}
                    | {"count": pick.randrange(1, 12)}
                )
            if len(rows) >= 10_000:
                flush()
        flush()


def analyse(engine: Engine) -> None:
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM ANALYZE"))
    else:
        with engine.begin() as connection:
            connection.execute(text("ANALYZE"))


def counted_from_rows(engine: Engine) -> Callable[[], object]:
    """How schema 0012 counted compliance's decision groups: every live device's row."""
    columns = ", ".join(DECISION_GROUP_COLUMNS)
    query = text(f"SELECT {columns}, count(*) FROM devices WHERE {LIVE} GROUP BY {columns}")

    def run() -> object:
        with engine.connect() as connection:
            return connection.execute(query).all()

    return run


def queries(store: Store, devices: int, *, before: bool) -> dict[str, Callable[[], object]]:
    """Each query the admin API and console run on devices, through the store (``before``:
    compliance's count as schema 0012 had it, which the store no longer has)."""
    stale = NOW - timedelta(days=7)
    middle = f"{devices // 2:08d}"

    def page(**filters: Any) -> Callable[[], object]:
        after = filters.pop("after", None)
        return lambda: store.list_devices(DeviceFilter(**filters), after=after, limit=100)

    return {
        "compliance/*, overview, /metrics: decision counts": counted_from_rows(store.engine)
        if before
        else store.decision_counts,
        "patch windows: build changes of 13.2 (a)": lambda: store.build_changes(["13.2 (a)"]),
        "devices (no filter)": page(),
        "devices?outcome=unknown": page(decision_outcome="unknown"),
        "devices?outcome=install": page(decision_outcome="install"),
        "devices?outcome=up-to-date, page 2": page(decision_outcome="up-to-date", after=middle),
        "devices?reason=not-reported": page(decision_reason="not-reported"),
        "devices?outcome=blocked&reason=unsupported-device": page(
            decision_outcome="blocked", decision_reason="unsupported-device"
        ),
        "devices?target_build=13.2 (a)": page(decision_supplement_build="13.2 (a)"),
        f"devices?group={RARE_GROUP} (100 devices)": page(group=RARE_GROUP),
        f"devices?group={DEFAULT_GROUP}": page(group=DEFAULT_GROUP),
        "devices?platform=Debian": page(platform="Debian"),
        "devices?product_version=18.7.5": page(product_version="18.7.5"),
        "devices?build=25C56": page(build="25C56"),
        "devices?supplemental_build=23D8133a": page(supplemental_build="23D8133a"),
        "devices?extra_version=(a)": page(supplemental_extra="(a)"),
        "devices?stale_hours=168": page(stale_before=stale),
        "devices?seen_after=1h ago": page(seen_after=NOW - timedelta(hours=1)),
        "devices?lifecycle=revoked": page(lifecycle="revoked"),
        "devices?lifecycle=decommissioned": page(lifecycle="decommissioned"),
    }


def median_ms(run: Callable[[], object], repeat: int) -> float:
    run()  # warm-up: caches, pages
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def touch_ms(store: Store, offset: int) -> float:
    """One batch of ``BATCH`` check-ins (``last_seen_at`` of existing devices)."""
    with store.engine.connect() as connection:
        ids = connection.execute(
            text("SELECT id FROM devices ORDER BY id LIMIT :n OFFSET :o"), {"n": BATCH, "o": offset}
        ).scalars()
        seen = {device_id: NOW + timedelta(seconds=offset) for device_id in ids}
    started = time.perf_counter()
    store.touch_devices(seen)
    return (time.perf_counter() - started) * 1000


def decide_ms(store: Store, offset: int, decision: Decision, devices: int = BATCH) -> float:
    """One batch of recomputed decisions, each moving its device to another group."""
    with store.engine.connect() as connection:
        ids = connection.execute(
            text(f"SELECT id FROM devices WHERE {LIVE} ORDER BY id LIMIT :n OFFSET :o"),
            {"n": devices, "o": offset},
        ).scalars()
        decisions = [DecidedDevice(device_id, 0, decision) for device_id in ids]
    started = time.perf_counter()
    store.store_decisions(decisions)
    return (time.perf_counter() - started) * 1000


def measure(name: str, engine: Engine, devices: int, repeat: int) -> None:
    started = time.perf_counter()
    upgrade(engine)
    seed(engine, devices)
    Store(engine).fold_decision_deltas()  # the seeding's changes: a steady state has few
    analyse(engine)
    print(f"\n{name}: {devices:,} devices seeded in {time.perf_counter() - started:.0f} s")
    store = Store(engine)

    def count() -> object:
        with engine.connect() as connection:
            return connection.execute(text("SELECT count(*) FROM devices")).scalar()

    now = queries(store, devices, before=False)
    indexed = {label: median_ms(run, repeat) for label, run in now.items()}
    counted = median_ms(count, repeat)
    touched = touch_ms(store, 0)
    decided = decide_ms(store, 0, MOVED)
    store.fold_decision_deltas()
    decide_ms(store, 0, BACK, FOLD_DELTAS // 2)  # the most changes a count reads unfolded
    unfolded = median_ms(store.decision_counts, repeat)
    started = time.perf_counter()
    store.fold_decision_deltas()
    folded = (time.perf_counter() - started) * 1000
    command.downgrade(_alembic_config(engine), BEFORE)
    analyse(engine)
    then = queries(store, devices, before=True)
    before = {label: median_ms(run, repeat) for label, run in then.items()}
    touched_before = touch_ms(store, BATCH)
    decided_before = decide_ms(store, BATCH, MOVED)

    width = max(map(len, indexed))
    print(f"{'query':<{width}}  {'indexed':>9}  {'0012':>9}  {'ratio':>6}  goal < {GOAL_MS:.0f} ms")
    for label, ms in indexed.items():
        ratio = ms / before[label] if before[label] else float("nan")
        met = "met" if ms < GOAL_MS else "MISSED"
        print(f"{label:<{width}}  {ms:7.2f}ms  {before[label]:7.2f}ms  {ratio:5.3f}x  {met}")
    print(f"{'reference: SELECT count(*) FROM devices':<{width}}  {counted:7.2f}ms")
    print(f"{f'decision counts, {FOLD_DELTAS:,} changes unfolded':<{width}}  {unfolded:7.2f}ms")
    print(f"{f'folding {FOLD_DELTAS:,} changes into the counts':<{width}}  {folded:7.2f}ms")
    for label, ms, reference in (
        (f"write cost: {BATCH:,} check-ins (touch_devices)", touched, touched_before),
        (f"write cost: {BATCH:,} new decisions (store_decisions)", decided, decided_before),
    ):
        print(f"{label:<{width}}  {ms:7.0f}ms  {reference:7.0f}ms  {ms / reference:5.2f}x")


@contextlib.contextmanager
def postgres(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    with postgres_cluster() as cluster:
        yield cluster.create_database("bsi_admin_queries")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--devices", type=int, default=100_000, help=f"fleet size (100000, at least {2 * BATCH})"
    )
    parser.add_argument("--repeat", type=int, default=5, help="runs per query; median (5)")
    parser.add_argument("--postgres-url", help="an empty PostgreSQL database to use")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument("--no-sqlite", action="store_true", help="PostgreSQL only")
    args = parser.parse_args()
    if args.devices < 2 * BATCH:
        parser.error(f"--devices must be at least {2 * BATCH}")

    if not args.no_sqlite:
        with tempfile.TemporaryDirectory(prefix="bsi-admin-queries-") as directory:
            engine = open_engine(f"sqlite:///{Path(directory) / 'bsi.db'}")
            measure("SQLite", engine, args.devices, args.repeat)
            engine.dispose()
    if not args.no_postgres:
        try:
            with postgres(args.postgres_url) as url:
                engine = open_engine(url)
                measure("PostgreSQL", engine, args.devices, args.repeat)
                engine.dispose()
        except PostgresUnavailable as error:
            print(f"\nPostgreSQL skipped: {error}")


if __name__ == "__main__":
    main()
