"""Store conformance: every operation behaves the same on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, text

from bsi.domain.catalog import Catalog, SupplementState
from bsi.domain.declarations import software_update_settings
from bsi.domain.eligibility import Decision, Outcome, Reason
from bsi.domain.status import DeviceState, merge_status, parse_status_report
from bsi.errors import Conflict, EnrollmentRefused, InvalidInput, InvalidStatusReport, NotFound
from bsi.feeds import parse_bsi_catalog
from bsi.store.database import (
    _alembic_config,
    current_revision,
    head_revision,
    open_engine,
    upgrade,
)
from bsi.store.models import Base
from bsi.store.store import DecisionGroup, DeviceFilter, NewEnrollment, StatusWrite, Store

NOW = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)  # the store fixture uses the same
LATER = NOW + timedelta(hours=1)


def report(build: str = "25D2128", supplemental: str = "") -> dict[str, object]:
    return {
        "StatusItems": {
            "device": {
                "operating-system": {
                    "family": "macOS",
                    "version": "26.3.1",
                    "build-version": build,
                    "supplemental": {"build-version": supplemental, "extra-version": ""},
                },
                "model": {"identifier": "Mac14,2"},
            },
            "softwareupdate": {"device-id": "J413AP"},
            "vendor": {"custom-item": 7},
        },
        "Errors": [],
    }


def save(store: Store, device_id: str, body: dict[str, object], when: datetime) -> DeviceState:
    parsed = parse_status_report(body)
    decision = Decision(Outcome.INSTALL, Reason.OFFERED, "offer")
    return store.save_device_state(
        device_id, lambda previous: (merge_status(previous, parsed), decision), when
    )


def test_schema_is_at_head_and_matches_the_models(engine: Engine) -> None:
    assert current_revision(engine) == head_revision(engine)
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []


def test_enrollment_spends_a_token_and_the_credential_finds_the_device(store: Store) -> None:
    token = store.create_enrollment_token("default", NOW + timedelta(days=1), 2, NOW)
    device_id, credential = store.enroll(token, NOW)
    identity = store.device_by_credential(credential)
    assert identity is not None
    assert identity.device_id == device_id
    assert store.device_by_credential("not-a-credential") is None
    store.enroll(token, NOW)
    with pytest.raises(EnrollmentRefused, match="used up"):
        store.enroll(token, NOW)


def test_expired_and_unknown_enrollment_tokens_are_refused(store: Store) -> None:
    token = store.create_enrollment_token("default", NOW + timedelta(minutes=5), None, NOW)
    with pytest.raises(EnrollmentRefused, match="expired"):
        store.enroll(token, NOW + timedelta(minutes=6))
    with pytest.raises(EnrollmentRefused, match="unknown"):
        store.enroll("guess", NOW)
    with pytest.raises(InvalidInput):
        store.create_enrollment_token("default", NOW - timedelta(seconds=1), None, NOW)
    with pytest.raises(NotFound):
        store.create_enrollment_token("no-such-group", LATER, None, NOW)


def test_api_keys_have_roles_and_can_be_revoked(store: Store) -> None:
    admin = store.create_api_key("ops", "admin", NOW)
    reader = store.create_api_key("audit", "read-only", NOW)
    assert (store.api_key_role(admin), store.api_key_role(reader)) == ("admin", "read-only")
    assert store.api_key_role("nope") is None
    with pytest.raises(Conflict):
        store.create_api_key("ops", "admin", NOW)
    with pytest.raises(InvalidInput):
        store.create_api_key("x", "root", NOW)
    store.revoke_api_key("ops")
    assert store.api_key_role(admin) is None


def test_status_merges_and_every_supplemental_build_change_is_kept(store: Store) -> None:
    token = store.create_enrollment_token("default", LATER, None, NOW)
    device_id, _ = store.enroll(token, NOW)
    save(store, device_id, report(), NOW)
    save(store, device_id, report(), NOW + timedelta(minutes=1))  # unchanged build
    partial = {
        "StatusItems": {
            "device": {"operating-system": {"supplemental": {"build-version": "25D771280a"}}}
        }
    }
    state = save(store, device_id, partial, LATER)
    assert str(state.supplemental_build) == "25D771280a"
    assert state.items["vendor.custom-item"] == 7  # unknown items survive the merge
    changes = store.build_changes(["25D771280a"])
    assert [(c.device_id, c.observed_at) for c in changes] == [(device_id, LATER)]
    record, items = store.get_device(device_id)
    assert (record.supplemental_build, record.decision_reason) == ("25D771280a", "offered-to-user")
    assert items["device.operating-system.build-version"] == "25D2128"


def test_device_filters(store: Store) -> None:
    token = store.create_enrollment_token("default", LATER, None, NOW)
    on_a, _ = store.enroll(token, NOW)
    without, _ = store.enroll(token, NOW)
    silent, _ = store.enroll(token, NOW)
    save(store, on_a, report(supplemental="25D771280a"), NOW)
    save(store, without, report(), LATER)
    assert [
        d.device_id for d in store.list_devices(DeviceFilter(supplemental_build="25D771280a"))
    ] == [on_a]
    assert {d.device_id for d in store.list_devices(DeviceFilter(platform="macOS"))} == {
        on_a,
        without,
    }
    stale = store.list_devices(DeviceFilter(stale_before=NOW + timedelta(minutes=30)))
    assert {d.device_id for d in stale} == {on_a, silent}
    assert store.count_devices(DeviceFilter(decision_reason="offered-to-user")) == 2
    first = store.list_devices(DeviceFilter(), limit=2)
    rest = store.list_devices(DeviceFilter(), after=first[-1].device_id)
    assert len(first) + len(rest) == 3


def test_last_seen_is_written_in_one_batch(store: Store) -> None:
    token = store.create_enrollment_token("default", LATER, None, NOW)
    device_id, _ = store.enroll(token, NOW)
    store.touch_devices({device_id: LATER})
    assert store.get_device(device_id)[0].last_seen_at == LATER


def test_declarations_are_stored_assigned_and_replaced(store: Store) -> None:
    store.ensure_group("lab", NOW)
    settings = software_update_settings("bsi-off", install_security_update="AlwaysOff")
    assert store.put_declaration(settings, NOW)
    assert not store.put_declaration(settings, NOW)  # same content: nothing changed
    store.assign("bsi-off", "lab", assigned=True)
    store.assign("bsi-off", "lab", assigned=True)  # idempotent
    assert store.group_declarations(store.group_id("lab")) == [settings]
    assert store.group_declarations(store.group_id("default")) == []
    changed = software_update_settings("bsi-off", install_security_update="AlwaysOn")
    assert store.put_declaration(changed, LATER)
    assert store.declarations() == [(changed, ["lab"])]
    store.assign("bsi-off", "lab", assigned=False)
    assert store.group_declarations(store.group_id("lab")) == []
    store.delete_declaration("bsi-off")
    with pytest.raises(NotFound):
        store.delete_declaration("bsi-off")


def test_catalogue_round_trips_and_supplements_can_be_paused(store: Store) -> None:
    catalog = parse_bsi_catalog(
        {
            "format": "bsi-catalog/1",
            "releases": [{"platform": "macOS", "version": "26.3.1", "build": "25D2128"}],
            "supplements": [
                {
                    "platform": "macOS",
                    "version": "26.3.1 (a)",
                    "build": "25D771280a",
                    "prerequisite_build": "25D2128",
                    "supported_devices": ["J413AP"],
                    "cves": ["CVE-2026-20643"],
                    "posted": "2026-03-17",
                    "superseded_by": {"version": "26.4", "released": "2026-03-24"},
                }
            ],
            "device_models": {"Mac14,2": ["J413AP"]},
        },
        source="test",
    )
    store.replace_catalog(catalog, "test")
    stored = store.catalog()
    assert stored.supplements == catalog.supplements
    assert stored.releases == catalog.releases
    assert stored.device_ids_by_model == catalog.device_ids_by_model
    store.set_supplement_state("macOS", "25D771280a", SupplementState.PAUSED)
    (paused,) = store.catalog().supplements
    assert paused.published_state is SupplementState.PAUSED
    assert paused.posted == date(2026, 3, 17)
    with pytest.raises(NotFound):
        store.set_supplement_state("macOS", "25D000000z", SupplementState.PAUSED)
    store.replace_catalog(Catalog(), "empty")
    assert store.catalog().supplements == ()


def test_retry_allowances_reach_every_device_or_one(store: Store) -> None:
    store.replace_catalog(
        parse_bsi_catalog(
            {
                "format": "bsi-catalog/1",
                "supplements": [
                    {
                        "platform": "debian",
                        "version": "12.5 (a)",
                        "build": "12A100a",
                        "prerequisite_build": "12A100",
                    }
                ],
            },
            source="test",
        ),
        "test",
    )
    token = store.create_enrollment_token("default", LATER, None, NOW)
    one, _ = store.enroll(token, NOW)
    other, _ = store.enroll(token, NOW)
    everyone = store.allow_retry("debian", "12A100a", None, NOW)
    mine = store.allow_retry("debian", "12A100a", one, NOW)
    assert mine > everyone
    assert store.retries_after(one, 0) == [
        (everyone, "debian", "12A100a"),
        (mine, "debian", "12A100a"),
    ]
    assert store.retries_after(other, 0) == [(everyone, "debian", "12A100a")]
    assert store.retries_after(one, mine) == []
    with pytest.raises(NotFound):
        store.allow_retry("debian", "12A100z", None, NOW)
    with pytest.raises(NotFound):
        store.allow_retry("debian", "12A100a", "no-such-device", NOW)
    assert store.retries_after(other, everyone) == []


def test_decision_counts_group_by_target_outcome_and_reason(store: Store) -> None:
    token = store.create_enrollment_token("default", LATER, None, NOW)
    for _ in range(3):
        device_id, _ = store.enroll(token, NOW)
        save(store, device_id, report(), NOW)
    store.enroll(token, NOW)  # never reports
    counts = store.decision_counts()
    offered = DecisionGroup("macOS", "26.3.1", None, "install", "offered-to-user")
    assert counts.by_group == {
        offered: 3,
        DecisionGroup(None, None, None, "unknown", "not-reported"): 1,
    }
    assert store.store_decisions([]) == 0


def test_a_batch_of_reports_lands_together_and_a_bad_one_alone_is_refused(store: Store) -> None:
    """Each report has its own savepoint and outcome: one the database refuses
    (a lone surrogate, an over-long model), one that raced another report, and
    one for an unknown device do not stop the good one in the same transaction."""
    token = store.create_enrollment_token("default", LATER, None, NOW)
    good, surrogate, too_long, raced = (store.enroll(token, NOW)[0] for _ in range(4))
    decision = Decision(Outcome.INSTALL, Reason.OFFERED, "offer")
    state = merge_status(None, parse_status_report(report()))

    def with_model(model: str) -> DeviceState:
        return DeviceState({**state.items, "device.model.identifier": model})

    results = store.write_device_states(
        [
            StatusWrite(surrogate, 0, None, with_model("Mac\ud800"), decision),
            StatusWrite(good, 0, None, state, decision),
            StatusWrite(too_long, 0, None, with_model("M" * 65), decision),
            StatusWrite(raced, 7, None, state, decision),
            StatusWrite("ghost", 0, None, state, decision),
        ],
        NOW,
    )
    assert isinstance(results[0], InvalidStatusReport)
    assert isinstance(results[1], DeviceState)
    assert isinstance(results[2], InvalidStatusReport)
    assert "at most 64" in results[2].message
    assert results[3] is None  # merge again: another report landed since
    assert isinstance(results[4], NotFound)
    assert store.get_device(good)[0].build == "25D2128"
    for refused in (surrogate, too_long, raced):
        assert store.get_device(refused)[0].build is None
    assert store.stored_status(good).version == 1
    assert store.stored_status(raced).version == 0


def test_a_merge_that_raced_another_report_is_merged_again(store: Store) -> None:
    token = store.create_enrollment_token("default", LATER, None, NOW)
    device_id, _ = store.enroll(token, NOW)
    calls = []

    def merge(previous: DeviceState | None) -> tuple[DeviceState, Decision | None]:
        calls.append(previous)
        if len(calls) == 1:  # another report lands while this one merges
            save(store, device_id, report(build="25D2100"), NOW)
        return merge_status(previous, parse_status_report(report())), None

    state = store.save_device_state(device_id, merge, NOW)
    assert calls[0] is None
    assert calls[1] is not None
    assert str(state.build) == "25D2128"
    assert store.stored_status(device_id).version == 2


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
