"""DeviceStore conformance: enrollments, status reports, decisions and lists, on both databases."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import Engine, event, insert, text
from store_facts import LATER, NOW, OFFERED, counted, enrolled, report, save

from bsi.domain.eligibility import Decision, Outcome, Reason
from bsi.domain.status import DeviceState, merge_status, parse_status_report
from bsi.errors import Conflict, InvalidStatusReport, NotFound, Unauthorized
from bsi.store import store as store_module
from bsi.store.database import open_engine
from bsi.store.events import NewEvent
from bsi.store.models import ContainerDecisionCount
from bsi.store.protocols import CredentialStore, DeviceStore
from bsi.store.rollouts import EventFilter, SqlRolloutStore
from bsi.store.store import (
    DecidedDevice,
    DecisionGroup,
    DeviceFilter,
    NewEnrollment,
    StatusWrite,
    Store,
    StoredDecisions,
    StoredStatus,
)


def test_status_merges_and_every_supplemental_build_change_is_kept(devices: DeviceStore) -> None:
    (device_id,) = enrolled(devices, "D1")
    save(devices, device_id, report(), NOW)
    save(devices, device_id, report(), NOW + timedelta(minutes=1))  # unchanged build
    partial = {
        "StatusItems": {
            "device": {"operating-system": {"supplemental": {"build-version": "25D771280a"}}}
        }
    }
    state = save(devices, device_id, partial, LATER)
    assert str(state.supplemental_build) == "25D771280a"
    assert state.items["vendor.custom-item"] == 7  # unknown items survive the merge
    changes = devices.build_changes(["25D771280a"])
    assert [(c.device_id, c.observed_at) for c in changes] == [(device_id, LATER)]
    record, items = devices.get_device(device_id)
    assert (record.supplemental_build, record.decision_reason) == ("25D771280a", "offered-to-user")
    assert items["device.operating-system.build-version"] == "25D2128"
    assert devices.device_status(device_id) == (items, [])
    assert devices.device_status("ghost") is None
    with pytest.raises(NotFound):
        devices.get_device("ghost")


def test_device_filters(devices: DeviceStore) -> None:
    on_a, without, silent = enrolled(devices, "A", "B", "C")
    save(devices, on_a, report(supplemental="25D771280a"), NOW)
    save(devices, without, report(), LATER)
    assert [
        d.device_id for d in devices.list_devices(DeviceFilter(supplemental_build="25D771280a"))
    ] == [on_a]
    assert {d.device_id for d in devices.list_devices(DeviceFilter(platform="macOS"))} == {
        on_a,
        without,
    }
    stale = devices.list_devices(DeviceFilter(stale_before=NOW + timedelta(minutes=30)))
    assert {d.device_id for d in stale} == {on_a, silent}
    assert devices.count_devices(DeviceFilter(decision_reason="offered-to-user")) == 2
    assert devices.count_devices(DeviceFilter(decision_reason="not-reported")) == 1
    first = devices.list_devices(DeviceFilter(), limit=2)
    rest = devices.list_devices(DeviceFilter(), after=first[-1].device_id)
    assert len(first) + len(rest) == 3


def test_last_seen_is_written_in_batches_each_its_own_transaction(
    devices: DeviceStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flush writes LAST_SEEN_BATCH devices per transaction: a status write that needs
    one of their rows waits for that batch only (one transaction for a whole flush held
    ten thousand rows for about 0.3 s on PostgreSQL, and every report waited; issue 18)."""
    assert isinstance(devices, Store)
    ids = enrolled(devices, "D1", "D2", "D3", "D4", "D5")
    monkeypatch.setattr(store_module, "LAST_SEEN_BATCH", 2)
    commits: list[object] = []

    def committed(connection: object) -> None:
        commits.append(connection)

    event.listen(devices.engine, "commit", committed)
    try:
        devices.touch_devices(dict.fromkeys(ids[:4], LATER) | {ids[4]: NOW})
        devices.touch_devices({})
    finally:
        event.remove(devices.engine, "commit", committed)
    assert len(commits) == 3
    assert [devices.get_device(d)[0].last_seen_at for d in ids] == [LATER] * 4 + [NOW]


def test_decision_counts_group_by_target_outcome_reason_and_installed_build(
    devices: DeviceStore,
) -> None:
    for device_id in enrolled(devices, "D1", "D2", "D3"):
        save(devices, device_id, report(), NOW)
    (on_a,) = enrolled(devices, "D4")
    save(devices, on_a, report(supplemental="25D771280a"), NOW)
    enrolled(devices, "never-reports")
    counts = devices.decision_counts()
    offered = DecisionGroup("macOS", "26.3.1", None, "install", "offered-to-user")
    assert counts.by_group == {
        offered: 3,
        DecisionGroup("macOS", "26.3.1", None, "install", "offered-to-user", "25D771280a"): 1,
        DecisionGroup(None, None, None, "unknown", "not-reported"): 1,
    }
    assert devices.store_decisions([]) == StoredDecisions(0, [])


def test_recomputed_decisions_reach_every_reporting_device(devices: DeviceStore) -> None:
    reporting = enrolled(devices, "D1", "D2", "D3")
    enrolled(devices, "never-reports")
    for device_id in reporting:
        save(devices, device_id, report(), NOW)
    batches = list(devices.device_states(batch_size=2))
    assert [len(b) for b in batches] == [2, 1]  # never-reporting devices have no state
    states = [row for batch in batches for row in batch]
    assert [row.device_id for row in states] == list(reporting)
    assert str(states[0].state.build) == "25D2128"
    recomputed = Decision(Outcome.UNKNOWN, Reason.NOT_REPORTED, "recomputed")
    stored = devices.store_decisions(
        DecidedDevice(r.device_id, r.version, recomputed) for r in states
    )
    assert stored == StoredDecisions(3, [])
    assert devices.count_devices(DeviceFilter(decision_outcome="unknown")) == 4


def test_a_recomputed_decision_never_overwrites_a_report_stored_since_its_state_was_read(
    devices: DeviceStore,
) -> None:
    """The pass reads states, a device reports, the pass writes: the reported device
    keeps the decision its report stored and comes back as stale; the others land."""
    quiet, reporting = enrolled(devices, "quiet", "reporting")
    for device_id in (quiet, reporting):
        save(devices, device_id, report(), NOW)
    (read,) = devices.device_states()
    save(devices, reporting, report(supplemental="25D771280a"), LATER)  # meanwhile
    recomputed = Decision(Outcome.BLOCKED, Reason.NOT_REPORTED, "decided from the older state")
    stored = devices.store_decisions(
        DecidedDevice(r.device_id, r.version, recomputed) for r in read
    )
    assert stored == StoredDecisions(1, [reporting])
    assert devices.get_device(quiet)[0].decision_outcome == "blocked"
    fresh = devices.get_device(reporting)[0]
    assert (fresh.decision_outcome, fresh.supplemental_build) == ("install", "25D771280a")
    (again,) = devices.device_states(devices=[reporting])  # read again: lands
    assert [r.version for r in again] == [r.version + 1 for r in read if r.device_id == reporting]
    assert devices.store_decisions(
        DecidedDevice(r.device_id, r.version, recomputed) for r in again
    ) == StoredDecisions(1, [])
    assert devices.get_device(reporting)[0].decision_outcome == "blocked"


def test_device_states_of_a_scope_read_only_its_devices_each_once(store: Store) -> None:
    """By platform as devices spelled it, by group, by id; a device in several once."""
    devices: DeviceStore = store
    store.ensure_group("lab", NOW)
    mac, ipad, linux, silent = enrolled(devices, "mac", "ipad", "linux", "silent")
    devices.register_enrollments([NewEnrollment("lab-mac", group="lab")], NOW)
    save(devices, mac, report(), NOW)
    save(devices, ipad, report(platform="iPadOS"), NOW)
    save(devices, linux, report(platform="debian"), NOW)
    save(devices, "lab-mac", report(), NOW)
    assert devices.reported_platforms() == ["debian", "iPadOS", "macOS"]
    (lab,) = {r.group_id for b in devices.device_states() for r in b if r.device_id == "lab-mac"}

    def read(**scope: object) -> list[str]:
        rows = [r.device_id for b in devices.device_states(batch_size=1, **scope) for r in b]
        assert len(rows) == len(set(rows))
        assert devices.count_device_states(**scope) == len(rows)  # type: ignore[arg-type]
        return sorted(rows)

    assert read(platforms=["iPadOS"]) == [ipad]
    assert read(platforms=[], groups=[], devices=[]) == []
    assert read(groups=[lab]) == ["lab-mac"]
    assert read(platforms=["macOS"], groups=[lab], devices=[mac, linux]) == sorted(
        [mac, "lab-mac", linux]
    )
    assert read(devices=[ipad, silent, "ghost"]) == [ipad]  # silent has not reported
    assert read() == sorted([mac, ipad, linux, "lab-mac"])


def installed(device_id: str) -> NewEvent:
    return NewEvent("device-installed", "automatic", "now runs 25D771280a", NOW, device_id)


def test_a_batch_of_reports_lands_together_and_a_bad_one_alone_is_refused(
    devices: DeviceStore,
) -> None:
    """Each report has its own outcome: one the database refuses (a lone surrogate,
    an over-long model), one that raced another report, and one for an unknown
    device do not stop the good one in the same transaction (written again, each
    in a savepoint, after the first try was undone)."""
    good, surrogate, too_long, raced = enrolled(devices, "good", "surrogate", "long", "raced")
    state = merge_status(None, parse_status_report(report()))

    def with_model(model: str) -> DeviceState:
        return DeviceState({**state.items, "device.model.identifier": model})

    results = devices.write_device_states(
        [
            StatusWrite(good, 0, None, state, OFFERED, (installed(good),)),
            StatusWrite(surrogate, 0, None, with_model("Mac\ud800"), OFFERED),
            StatusWrite(too_long, 0, None, with_model("M" * 65), OFFERED, (installed(too_long),)),
            StatusWrite(raced, 7, None, state, OFFERED, (installed(raced),)),
            StatusWrite("ghost", 0, None, state, OFFERED),
        ],
        NOW,
    )
    assert isinstance(results[0], DeviceState)  # written once: the first try was undone
    assert isinstance(results[1], InvalidStatusReport)
    assert isinstance(results[2], InvalidStatusReport)
    assert "at most 64" in results[2].message
    assert results[3] is None  # merge again: another report landed since
    assert isinstance(results[4], NotFound)
    assert devices.get_device(good)[0].build == "25D2128"
    for refused in (surrogate, too_long, raced):
        assert devices.get_device(refused)[0].build is None
    assert devices.stored_status(good).version == 1
    assert devices.stored_status(raced).version == 0
    # A report's events are kept with its state, and only with it.
    assert isinstance(devices, Store)
    kept = SqlRolloutStore(devices.engine).events(EventFilter())
    assert [(e.event.device_id, e.event.reason) for e in kept] == [(good, "now runs 25D771280a")]


def test_an_unchanged_report_holds_and_a_changed_decision_or_state_does_not(
    devices: DeviceStore,
) -> None:
    """What the status writer asks before it writes (StoredStatus.holds): the same state
    with the same decision holds (nothing is written); the same state with another
    decision does not, nor does a changed state, and each of those writes a new version."""
    (device_id,) = enrolled(devices, "D1")
    save(devices, device_id, report(), NOW)

    def merged(body: dict[str, object]) -> tuple[StoredStatus, DeviceState]:
        stored = devices.stored_status(device_id)
        return stored, merge_status(stored.state, parse_status_report(body))

    stored, state = merged(report())
    assert stored.holds(state, OFFERED)
    assert stored.version == 1

    blocked = Decision(Outcome.BLOCKED, Reason.NOT_REPORTED, "decided anew")
    assert not stored.holds(state, blocked)
    write = StatusWrite(device_id, stored.version, stored.state, state, blocked)
    assert devices.write_device_states([write], LATER) == [state]
    assert devices.stored_status(device_id).version == 2
    assert devices.get_device(device_id)[0].decision_outcome == Outcome.BLOCKED.value

    stored, state = merged(report(build="25D2100"))
    assert not stored.holds(state, blocked)
    write = StatusWrite(device_id, stored.version, stored.state, state, blocked)
    assert devices.write_device_states([write], LATER) == [state]
    assert devices.get_device(device_id)[0].build == "25D2100"


def test_a_batch_without_refusals_lands_whole(devices: DeviceStore) -> None:
    first, second = enrolled(devices, "first", "second")
    state = merge_status(None, parse_status_report(report()))
    results = devices.write_device_states(
        [
            StatusWrite(first, 0, None, state, OFFERED, (installed(first),)),
            StatusWrite(second, 0, None, state, OFFERED),
            StatusWrite(second, 0, None, state, OFFERED),  # the same version again: raced
        ],
        NOW,
    )
    assert results == [state, state, None]
    assert [devices.stored_status(d).version for d in (first, second)] == [1, 1]
    assert isinstance(devices, Store)
    kept = SqlRolloutStore(devices.engine).events(EventFilter())
    assert [e.event.device_id for e in kept] == [first]


def test_a_batch_is_one_update_executed_for_every_report(devices: DeviceStore) -> None:
    """The status writer's group commit costs one statement per batch, not per report
    (issue 18): the devices' rows are compare-and-set by one UPDATE executed for every
    write, and their build changes and events are one INSERT each."""
    assert isinstance(devices, Store)
    ids = enrolled(devices, "a", "b", "c")
    state = merge_status(None, parse_status_report(report()))
    statements: list[tuple[str, bool]] = []

    def executed(_c: object, _cursor: object, sql: str, _p: object, _x: object, many: bool) -> None:
        statements.append((sql.split()[0].upper(), many))

    event.listen(devices.engine, "before_cursor_execute", executed)
    try:
        writes = [StatusWrite(d, 0, None, state, OFFERED, (installed(d),)) for d in ids]
        assert devices.write_device_states(writes, NOW) == [state, state, state]
    finally:
        event.remove(devices.engine, "before_cursor_execute", executed)
    written = [entry for entry in statements if entry[0] in {"UPDATE", "INSERT"}]
    assert written == [("UPDATE", True), ("INSERT", True), ("INSERT", True)]
    assert [devices.stored_status(d).version for d in ids] == [1, 1, 1]


def test_writes_that_keep_different_columns_land_each_as_its_own(devices: DeviceStore) -> None:
    """A batch whose writes change different indexed columns: on PostgreSQL one UPDATE
    executed for every write (issue 18: a statement per run of alike writes was a round
    trip each, most of a batch's time), on SQLite one per run; either way each write
    sets what it changes, a pass's decision sends its write back to be merged again,
    and the others land."""
    assert isinstance(devices, Store)
    changed, same, decided = enrolled(devices, "changed", "same", "decided")
    for device_id in (changed, same, decided):
        save(devices, device_id, report(), NOW)
    stored = {d: devices.stored_status(d) for d in (changed, same, decided)}
    newer = merge_status(stored[changed].state, parse_status_report(report(build="25D2100")))

    def write(device_id: str, state: DeviceState | None = None) -> StatusWrite:
        found = stored[device_id]
        new = state or merge_status(found.state, parse_status_report(report()))
        return StatusWrite(device_id, found.version, found.state, new, OFFERED, (), found.indexed)

    writes = [write(changed, newer), write(same)]
    statements: list[bool] = []

    def executed(_c: object, _cursor: object, sql: str, _p: object, _x: object, many: bool) -> None:
        if sql.lstrip().upper().startswith("UPDATE DEVICES"):
            statements.append(many)

    event.listen(devices.engine, "before_cursor_execute", executed)
    try:
        assert devices.write_device_states(writes, LATER) == [w.state for w in writes]
    finally:
        event.remove(devices.engine, "before_cursor_execute", executed)
    assert statements == ([True] if devices.engine.dialect.name == "postgresql" else [False] * 2)
    assert devices.get_device(changed)[0].build == "25D2100"
    assert devices.get_device(same)[0].build == "25D2128"

    blocked = Decision(Outcome.BLOCKED, Reason.NOT_REPORTED, "a pass decided anew")
    pass_read = stored[decided].version
    assert devices.write_decisions([DecidedDevice(decided, pass_read, blocked)]).written
    stored = {d: devices.stored_status(d) for d in (changed, same)} | {decided: stored[decided]}
    again = [write(changed), write(decided), write(same)]
    assert devices.write_device_states(again, LATER) == [again[0].state, None, again[2].state]
    assert devices.get_device(decided)[0].decision_outcome == Outcome.BLOCKED.value
    assert [devices.stored_status(d).version for d in (changed, same, decided)] == [3, 3, 1]


def test_a_write_sets_only_the_indexed_columns_that_change_and_lands_while_the_rest_hold(
    devices: DeviceStore,
) -> None:
    """SQLite rewrites an index entry for every column a statement sets, even to its own
    value; at a million devices that was most of a report's pages (issue 18). A write
    sets only the indexed columns whose value it changes (on PostgreSQL, which keeps an
    entry whose value stays, it sets the rest to the value they hold: one statement for
    every write of a batch), and lands only while the ones it leaves still hold what was
    read: a decision pass, which does not move the status
    version, sends it back to be merged again (never a stored state with another
    decision than its own), and on the next read it lands with its own."""
    assert isinstance(devices, Store)
    (device_id,) = enrolled(devices, "D1")
    save(devices, device_id, report(), NOW)
    stored = devices.stored_status(device_id)
    assert stored.indexed["build"] == "25D2128"
    assert stored.indexed["decision_outcome"] == OFFERED.outcome.value
    state = merge_status(stored.state, parse_status_report(report(build="25D2100")))
    statements: list[str] = []

    def executed(_c: object, _cursor: object, sql: str, _p: object, _x: object, _m: bool) -> None:
        if sql.lstrip().upper().startswith("UPDATE DEVICES"):
            statements.append(sql)

    blocked = Decision(Outcome.BLOCKED, Reason.NOT_REPORTED, "a pass decided anew")
    assert devices.write_decisions([DecidedDevice(device_id, stored.version, blocked)]).written
    write = StatusWrite(device_id, stored.version, stored.state, state, OFFERED, (), stored.indexed)
    assert devices.write_device_states([write], LATER) == [None]  # merge again
    assert devices.get_device(device_id)[0].decision_outcome == Outcome.BLOCKED.value

    stored = devices.stored_status(device_id)
    write = StatusWrite(device_id, stored.version, stored.state, state, OFFERED, (), stored.indexed)
    event.listen(devices.engine, "before_cursor_execute", executed)
    try:
        assert devices.write_device_states([write], LATER) == [state]
    finally:
        event.remove(devices.engine, "before_cursor_execute", executed)
    record = devices.get_device(device_id)[0]
    assert (record.build, record.decision_outcome) == ("25D2100", OFFERED.outcome.value)
    (sql,) = statements
    assignments, condition = sql.split(" WHERE ")
    columns = {a.split("=")[0].strip() for a in assignments.split(" SET ")[1].split(",")}
    assert "build" in columns
    if devices.engine.dialect.name == "sqlite":
        assert "platform" not in columns  # unchanged: left out, and checked
    else:  # set to the value it holds (its index entry stays), and checked
        assert "platform" in columns
    assert "platform" in condition


def test_a_known_state_is_reused_only_at_its_version_and_with_its_content(
    devices: DeviceStore,
) -> None:
    """The status writer hands back the states it last wrote: one the row still holds is
    that object (not built and checked again, issue 18); a row written since, or holding
    anything else at that version, is read as stored."""
    same, moved, other, unknown = enrolled(devices, "same", "moved", "other", "unknown")
    state = merge_status(None, parse_status_report(report()))
    newer = merge_status(state, parse_status_report(report(supplemental="25D771280a")))
    writes = [StatusWrite(d, 0, None, state, OFFERED) for d in (same, moved, other)]
    assert devices.write_device_states(writes, NOW) == [state] * 3
    assert devices.write_device_states([StatusWrite(moved, 1, state, newer, OFFERED)], NOW)
    lookalike = merge_status(None, parse_status_report(report()))  # equal, another object
    known = {same: (1, state), moved: (1, state), other: (1, newer)}
    found = devices.stored_statuses([same, moved, other, unknown, "ghost"], known)
    kept, written_since, different = (found[d] for d in (same, moved, other))
    assert isinstance(kept, StoredStatus)
    assert kept.state is state
    assert isinstance(written_since, StoredStatus)
    assert written_since.version == 2
    assert written_since.state == newer
    assert written_since.state is not newer
    assert isinstance(different, StoredStatus)
    assert different.state == lookalike
    assert different.state is not newer
    assert different.state is not state
    assert isinstance(found[unknown], StoredStatus)
    assert found[unknown].state is None
    assert isinstance(found["ghost"], NotFound)


def test_a_revoked_device_reports_nothing_more(
    devices: DeviceStore, credentials: CredentialStore
) -> None:
    (device_id,) = enrolled(devices, "D1")
    credentials.revoke_device(device_id, NOW)
    with pytest.raises(Unauthorized):
        devices.stored_status(device_id)
    with pytest.raises(Unauthorized):
        save(devices, device_id, report(), NOW)
    with pytest.raises(NotFound):
        devices.stored_status("ghost")
    assert devices.get_device(device_id)[0].lifecycle == "revoked"


def test_user_channels_follow_their_device_and_keep_their_own_reports(
    devices: DeviceStore,
) -> None:
    batch = [
        NewEnrollment("MAC-UDID", enrollment_type="Device", serial_number="C02X"),
        NewEnrollment("user-1", enrollment_type="User", parent_id="MAC-UDID"),
    ]
    assert devices.register_enrollments(batch, NOW) == 2
    assert devices.register_enrollments(batch, LATER) == 0  # refreshed, not new
    mac, user = devices.enrollment("MAC-UDID"), devices.enrollment("user-1")
    assert mac is not None
    assert user is not None
    assert (mac.udid, mac.serial_number, mac.identity.channel) == ("MAC-UDID", "C02X", None)
    assert (user.identity.device_id, user.identity.channel) == ("MAC-UDID", "user-1")
    assert devices.enrollment("ghost") is None
    channel_state = merge_status(None, parse_status_report(report(build="25D9999")))
    devices.save_channel_state("user-1", lambda _previous: channel_state, NOW)
    (channel,) = devices.channels("MAC-UDID")
    assert channel["status_items"]["device.operating-system.build-version"] == "25D9999"
    assert devices.device_status("MAC-UDID") == ({}, [])  # the device's own state is apart
    assert devices.device_detail("MAC-UDID")["channels"] == [channel]
    with pytest.raises(NotFound):
        devices.save_channel_state("ghost", lambda _previous: channel_state, NOW)

    identity = devices.check_out("MAC-UDID", LATER)
    assert identity.device_id == "MAC-UDID"
    for enrollment_id in ("MAC-UDID", "user-1"):  # a device is checked out with its channels
        found = devices.enrollment(enrollment_id)
        assert found is not None
        assert found.checked_out_at is not None
    devices.register_enrollments(batch[:1], LATER)  # NanoMDM's next Authenticate
    again = devices.enrollment("MAC-UDID")
    assert again is not None
    assert again.checked_out_at is None
    with pytest.raises(NotFound):
        devices.check_out("ghost", LATER)


def test_a_bad_enrollment_batch_stores_nothing(devices: DeviceStore) -> None:
    orphan = [NewEnrollment("D1"), NewEnrollment("user-1", parent_id="unknown-mac")]
    with pytest.raises(NotFound, match="unknown-mac"):
        devices.register_enrollments(orphan, NOW)
    assert devices.enrollment("D1") is None
    enrolled(devices, "D1", "D2")
    devices.register_enrollments([NewEnrollment("user-1", parent_id="D1")], NOW)
    with pytest.raises(Conflict):
        devices.register_enrollments([NewEnrollment("user-1", parent_id="D2")], NOW)
    with pytest.raises(Conflict):
        devices.register_enrollments([NewEnrollment("D2", parent_id="D1")], NOW)
    with pytest.raises(Conflict):
        devices.register_enrollments([NewEnrollment("user-1")], NOW)
    with pytest.raises(NotFound):
        devices.register_enrollments([NewEnrollment("D3", group="no-such-group")], NOW)
    assert devices.enrollment("D3") is None
    identity = devices.device_identity("D1")
    assert identity is not None
    assert identity.device_id == "D1"
    assert devices.device_identity("ghost") is None
    with pytest.raises(NotFound):
        devices.device_detail("ghost")


def containers(engine: Engine, host: str, *rows: tuple[str | None, str, int]) -> None:
    """``host`` runs containers: (supplement build, outcome, count) per row."""
    with engine.begin() as connection:
        connection.execute(
            insert(ContainerDecisionCount),
            [
                {"device_id": host, "position": i, "installed_build": None, "outcome": outcome}
                | {"reason": "automatic", "supplement_build": build, "count": n}
                for i, (build, outcome, n) in enumerate(rows)
            ],
        )


def test_decision_counts_the_database_keeps_match_the_devices(
    store: Store, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Enrolment, reports, recomputed decisions, revocation, decommissioning and
    re-enrolment, and hosts' containers, each move the kept counts as the rows moved,
    before and after a fold."""
    a, b, c, d = enrolled(store, "A", "B", "C", "D")
    assert store.decision_counts() == counted(engine)
    assert counted(engine).by_group != {}
    save(store, a, report(), NOW)
    save(store, b, report(supplemental="25D771280a"), NOW)
    save(store, c, report(), NOW)
    containers(engine, b, ("13.2 (a)", "install", 3), (None, "unknown", 1))
    containers(engine, c, ("13.2 (a)", "install", 2))
    store.touch_devices({a: LATER, d: LATER})  # no group column: no change
    assert store.decision_counts() == counted(engine)
    assert counted(engine).containers != {}
    store.fold_decision_deltas()
    assert store.decision_counts() == counted(engine)
    installed = Decision(Outcome.UP_TO_DATE, Reason.SUPPLEMENT_INSTALLED, "installed")
    (b_row,) = [r for batch in store.device_states(devices=[b]) for r in batch]
    store.store_decisions([DecidedDevice(b, b_row.version, installed)])  # b's rows go
    store.revoke_device(a, LATER)
    store.decommission_device(c, LATER)  # c and its containers leave compliance
    assert store.decision_counts() == counted(engine)
    assert counted(engine).containers == {}
    store.reenroll_device(c, LATER, lambda *_: "credential")  # ... and come back
    monkeypatch.setattr(store_module, "FOLD_DELTAS", 0)
    assert store.decision_counts() == counted(engine)  # and folds
    with engine.connect() as connection:
        for table in ("decision_group_deltas", "container_group_deltas"):
            assert connection.execute(text(f"SELECT count(*) FROM {table}")).scalar() == 0
    kept = store.decision_counts()
    assert kept == counted(engine)
    assert sum(kept.by_group.values()) == 4
    assert sum(kept.containers.values()) == 2


def test_a_decision_pass_never_waits_for_a_row_a_status_write_holds(
    postgres_database: Callable[[], str],
) -> None:
    """PostgreSQL (SQLite has one writer at a time): a row a report's transaction holds
    is skipped, not waited for (the pass waiting on one report's row while that report's
    group commit waited on a row of the pass deadlocked), and comes back as stale."""
    engine = open_engine(postgres_database())
    try:
        store = Store(engine)
        store.ensure_group("default", NOW)
        held, free = enrolled(store, "held", "free")
        for device_id in (held, free):
            save(store, device_id, report(), NOW)
        rows = [r for batch in store.device_states() for r in batch]
        recomputed = Decision(Outcome.BLOCKED, Reason.NOT_REPORTED, "recomputed")
        with engine.begin() as report_transaction:
            report_transaction.execute(
                text("SELECT id FROM devices WHERE id = :id FOR UPDATE"), {"id": held}
            )
            results: list[StoredDecisions] = []
            decided = [DecidedDevice(r.device_id, r.version, recomputed) for r in rows]
            writing = threading.Thread(
                target=lambda: results.append(store.write_decisions(decided))
            )
            writing.start()
            writing.join(10)
            waited = writing.is_alive()
        writing.join()
        assert not waited, "the pass waited for the row the report holds"
        assert results == [StoredDecisions(1, [held])]
        assert store.get_device(free)[0].decision_outcome == "blocked"
        assert store.get_device(held)[0].decision_outcome == "install"
    finally:
        engine.dispose()
