"""Rollout policy: stable draws, waves of the planned size, halts, gates and windows."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bsi.domain.catalog import Supplement
from bsi.domain.eligibility import Decision, Outcome, Reason
from bsi.domain.prerequisite import Prerequisite
from bsi.domain.rollout import (
    ALL_NOW,
    Change,
    DeviceProgress,
    FailureKind,
    HaltRule,
    MaintenanceWindow,
    RolloutPlan,
    RolloutState,
    Wave,
    WaveState,
    abort,
    advance,
    assign_waves,
    draw,
    dump_plan,
    dump_window,
    gate,
    hold,
    late_wave,
    read_plan,
    read_window,
    resume,
    start,
    step,
    wave_health,
)
from bsi.domain.versions import Build, SupplementVersion
from bsi.errors import InvalidInput

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
PLAN = RolloutPlan(
    waves=(
        Wave("canary", 1.0, soak=timedelta(hours=4)),
        Wave("early", 10.0, soak=timedelta(hours=12)),
        Wave("half", 50.0, soak=timedelta(hours=12)),
        Wave("all", 100.0, soak=timedelta(0)),
    ),
    halt=HaltRule(max_failures=3, max_failure_rate=0.05),
)
SUPPLEMENT = Supplement(
    platform="debian",
    version=SupplementVersion.parse("12.5 (a)"),
    build=Build.parse("12A100a"),
    prerequisite=Prerequisite.of_build(Build.parse("12A100")),
)

percents = st.lists(
    st.floats(min_value=0.01, max_value=99.99, allow_nan=False), min_size=0, max_size=6, unique=True
).map(lambda ps: (*sorted(ps), 100.0))


@given(
    percents,
    st.integers(min_value=0, max_value=3000),
    st.text(min_size=1, max_size=12),
)
def test_each_wave_holds_its_share_within_one_device(
    shares: tuple[float, ...], n: int, build: str
) -> None:
    plan = RolloutPlan(waves=tuple(Wave(f"w{i}", p) for i, p in enumerate(shares)))
    devices = {f"device-{i}": "default" for i in range(n)}

    assigned = assign_waves(plan, build, devices)

    assert set(assigned) == set(devices)
    reached = 0
    for i, share in enumerate(shares):
        reached += sum(1 for w in assigned.values() if w == i)
        assert abs(reached - share * n / 100) <= 1


@given(st.text(min_size=1, max_size=12), st.text(min_size=1, max_size=40))
def test_a_draw_depends_on_the_build_and_the_device_only(build: str, device: str) -> None:
    assert draw(build, device) == draw(build, device)
    assert 0 <= draw(build, device) < 1
    assert late_wave(PLAN, build, device, "default") == late_wave(PLAN, build, device, "default")


def test_assignment_does_not_depend_on_the_order_devices_come_in() -> None:
    devices = {f"d{i}": "default" for i in range(500)}
    backwards = dict(reversed(list(devices.items())))
    assert assign_waves(PLAN, "12A100a", devices) == assign_waves(PLAN, "12A100a", backwards)


def test_another_build_draws_other_devices_first() -> None:
    devices = {f"d{i}": "default" for i in range(1000)}
    first = {d for d, w in assign_waves(PLAN, "12A100a", devices).items() if w == 0}
    second = {d for d, w in assign_waves(PLAN, "12A100b", devices).items() if w == 0}
    assert len(first) == len(second) == 10
    assert first != second  # the same ten devices are not always the canaries


def test_a_pinned_group_is_in_its_wave_and_counts_towards_it() -> None:
    plan = RolloutPlan(waves=(Wave("canary", 10.0, groups=frozenset({"lab"})), Wave("rest", 100.0)))
    devices = {f"lab{i}": "lab" for i in range(5)} | {f"d{i}": "default" for i in range(95)}
    assigned = assign_waves(plan, "12A100a", devices)
    assert all(assigned[f"lab{i}"] == 0 for i in range(5))
    assert sum(1 for w in assigned.values() if w == 0) == 10
    assert late_wave(plan, "12A100a", "new-lab-host", "lab") == 0


def test_all_now_is_one_wave_with_every_device() -> None:
    devices = {f"d{i}": "default" for i in range(50)}
    assert set(assign_waves(ALL_NOW, "12A100a", devices).values()) == {0}


def progress(
    n: int, failures: int = 0, kind: FailureKind = FailureKind.INSTALL_FAILED, at: datetime = T0
) -> list[DeviceProgress]:
    """``n`` devices that installed at T0 and last reported ``at``, and ``failures`` failed."""
    rows = [DeviceProgress(f"ok{i}", installed_at=T0, last_report_at=at) for i in range(n)]
    rows += [DeviceProgress(f"bad{i}", failure=kind, detail="boom") for i in range(failures)]
    return rows


def test_a_good_supplement_advances_through_its_waves_and_completes() -> None:
    rollout = start(PLAN, "12A100a", T0)
    now = T0
    seen = []
    for soak in (4, 12, 12, 0):
        _, change = step(rollout, wave_health(progress(10, at=now), PLAN.halt.silence, now), now)
        if soak:
            assert change is None  # not soaked yet
        now += timedelta(hours=soak)
        health = wave_health(progress(10, at=now), PLAN.halt.silence, now)
        rollout, change = step(rollout, health, now)
        seen.append(change)
    assert seen == [Change.WAVE_ADVANCED] * 3 + [Change.COMPLETED]
    assert rollout.state is RolloutState.COMPLETED
    assert gate(rollout, 3).open


def test_a_bad_supplement_halts_in_the_first_wave_and_says_why() -> None:
    rollout = start(PLAN, "12A100a", T0)
    health = wave_health(
        progress(7, failures=3, kind=FailureKind.HEALTH_CHECK_ROLLBACK), PLAN.halt.silence, T0
    )

    halted, change = step(rollout, health, T0 + timedelta(minutes=5))

    assert change is Change.HALTED
    assert halted.state is RolloutState.HALTED
    assert halted.halted_because is not None
    assert "3 of 10 devices failed" in halted.halted_because
    assert "health-check-rollback (bad0, bad1, bad2)" in halted.halted_because
    assert not gate(halted, 0).open
    assert gate(halted, 0).state is WaveState.HALTED
    assert not gate(halted, 1).open
    # halted stays halted until an admin acts
    assert step(
        halted, wave_health(progress(10), PLAN.halt.silence, T0), T0 + timedelta(days=9)
    ) == (halted, None)
    resumed = resume(halted, T0 + timedelta(hours=1))
    assert resumed.state is RolloutState.RUNNING
    assert gate(resumed, 0).open


def test_the_failure_rate_halts_a_large_wave_below_the_count() -> None:
    plan = RolloutPlan(halt=HaltRule(max_failures=None, max_failure_rate=0.05))
    health = wave_health(progress(95, failures=5), plan.halt.silence, T0)
    assert step(start(plan, "b", T0), health, T0)[1] is Change.HALTED
    health = wave_health(progress(96, failures=4), plan.halt.silence, T0)
    assert step(start(plan, "b", T0), health, T0)[1] is not Change.HALTED


def test_a_device_that_stops_reporting_after_installing_counts_as_failed() -> None:
    silence = timedelta(hours=6)
    rows = [
        DeviceProgress("quiet", installed_at=T0, last_report_at=T0),
        DeviceProgress("never-installed"),
    ]
    assert wave_health(rows, silence, T0 + timedelta(hours=5)).failures == ()
    (failed,) = wave_health(rows, silence, T0 + timedelta(hours=6)).failures
    assert (failed.device_id, failed.failure) == ("quiet", FailureKind.STOPPED_REPORTING)


def test_a_failure_in_a_wave_not_yet_opened_counts_towards_the_halt() -> None:
    """Fail closed: a device of a later wave that failed (it got the supplement another
    way, or read its gate before a halt) counts; one that merely installed does not."""
    silence = timedelta(hours=6)
    later = T0 + timedelta(hours=7)
    rows = [
        *progress(10, at=later),
        DeviceProgress("early-bird", installed_at=T0, last_report_at=later, wave=2),
        DeviceProgress("broken", failure=FailureKind.HEALTH_CHECK_ROLLBACK, wave=2),
        DeviceProgress("quiet", installed_at=T0, last_report_at=T0, wave=3),
        DeviceProgress("waiting", wave=3),
    ]
    health = wave_health(rows, silence, later, open_wave=0)
    assert sorted(p.device_id for p in health.failures) == ["broken", "quiet"]
    assert (health.devices, health.open_devices) == (12, 10)
    rule = RolloutPlan(halt=HaltRule(max_failures=2, max_failure_rate=None))
    assert step(start(rule, "b", T0), health, later)[1] is Change.HALTED


def test_a_wave_needs_its_success_rate_before_the_next_opens() -> None:
    plan = RolloutPlan(
        waves=(Wave("a", 50.0, soak=timedelta(0)), Wave("b", 100.0)), min_success_rate=0.9
    )
    rows = progress(8) + [DeviceProgress(f"pending{i}") for i in range(2)]
    rollout = start(plan, "b", T0)
    assert step(rollout, wave_health(rows, plan.halt.silence, T0), T0)[1] is None
    rows = [*progress(9), DeviceProgress("pending")]
    assert step(rollout, wave_health(rows, plan.halt.silence, T0), T0)[1] is Change.WAVE_ADVANCED


def test_a_wave_none_of_whose_devices_installed_never_passes_on_time_alone() -> None:
    """A slow fleet: the canary's soak passes before any canary device runs the supplement.
    Passing it then would open every wave before a single device could fail."""
    rollout = start(PLAN, "12A100a", T0)
    pending = [DeviceProgress(f"slow{i}") for i in range(5)]
    later = T0 + timedelta(days=3)
    assert step(rollout, wave_health(pending, PLAN.halt.silence, later), later) == (rollout, None)
    # The soak counts from the first install: 4 h of the supplement running in the wave.
    first = T0 + timedelta(hours=10)
    rows = [DeviceProgress("quick", installed_at=first, last_report_at=first), *pending[1:]]
    almost = first + timedelta(hours=3, minutes=59)
    assert step(rollout, wave_health(rows, PLAN.halt.silence, almost), almost)[1] is None
    soaked = first + timedelta(hours=4)
    health = wave_health(rows, PLAN.halt.silence, soaked)
    assert (health.open_devices, health.open_first_install) == (5, first)
    assert step(rollout, health, soaked)[1] is Change.WAVE_ADVANCED
    # A device of an earlier wave does not count for the open one; an empty wave passes.
    advanced = step(rollout, health, soaked)[0]
    assert wave_health(rows, PLAN.halt.silence, soaked, open_wave=1).open_devices == 0
    later = soaked + timedelta(hours=12)
    rows = [DeviceProgress("quick", installed_at=first, last_report_at=later)]
    health = wave_health(rows, PLAN.halt.silence, later, open_wave=1)
    assert step(advanced, health, later)[1] is Change.WAVE_ADVANCED


def test_a_waiting_wave_names_its_earliest_opening() -> None:
    rollout = start(PLAN, "12A100a", T0)
    waiting = gate(rollout, 2)
    assert not waiting.open
    assert waiting.state is WaveState.WAITING
    assert waiting.earliest == T0 + timedelta(hours=16)  # canary 4 h + early 12 h


def test_admin_advance_and_abort() -> None:
    rollout = advance(start(PLAN, "12A100a", T0), T0)
    assert rollout.current == 1
    aborted = abort(rollout)
    assert aborted.state is RolloutState.ABORTED
    assert not gate(aborted, 0).open
    with pytest.raises(InvalidInput):
        abort(aborted)
    with pytest.raises(InvalidInput, match="not halted"):
        resume(rollout, T0)
    last = start(RolloutPlan(), "b", T0)
    with pytest.raises(InvalidInput, match="last wave"):
        advance(last, T0)


def test_a_plan_round_trips() -> None:
    known = {"lab", "default"}
    plan = RolloutPlan(
        waves=(
            Wave("canary", 1.0, frozenset({"lab"}), timedelta(hours=2)),
            Wave("all", 100.0, soak=timedelta(0)),
        ),
        halt=HaltRule(max_failures=2, max_failure_rate=0.1, silence=timedelta(hours=3)),
        min_success_rate=0.5,
    )
    assert read_plan(dump_plan(plan), known_groups=known) == plan
    assert read_plan(dump_plan(ALL_NOW), known_groups=known) == ALL_NOW


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"waves": []}, "at least one wave"),
        (
            {"waves": [{"name": "a", "percent": 10}, {"name": "b", "percent": 5}]},
            "not above the wave before",
        ),
        (
            {"waves": [{"name": "a", "percent": 10}, {"name": "b", "percent": 90}]},
            "reaches 90 %, not 100 %",
        ),
        (
            {"waves": [{"name": "a", "percent": 10}, {"name": "a", "percent": 100}]},
            "names two waves",
        ),
        (
            {
                "waves": [
                    {"name": "a", "percent": 10, "groups": ["lab"]},
                    {"name": "b", "percent": 100, "groups": ["lab"]},
                ]
            },
            "already in wave 'a'",
        ),
        ({"waves": [{"name": "a", "percent": 100, "groups": ["nope"]}]}, "no group 'nope'"),
        ({"waves": [{"name": "a", "percent": 100, "soak_hours": -1}]}, "hours"),
        ({"waves": [{"name": "a", "percent": "100"}]}, "expected a number"),
        (
            {"waves": [{"name": "a", "percent": 100}], "halt": {"max_failure_rate": 2}},
            "is not a fraction",
        ),
        ({"waves": [{"name": "a", "percent": 100}], "halt": {"max_failures": 0}}, "at least 1"),
        ({"waves": [{"name": "a", "percent": 100}], "all_now": True}, "all_now and waves"),
        ({"waves": [{"name": "a", "percent": 100, "when": "now"}]}, "unknown field 'when'"),
        ([], "expected an object"),
    ],
)
def test_a_bad_plan_is_refused_with_what_to_fix(document: object, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        read_plan(document, known_groups={"lab", "default"})


NIGHTS = MaintenanceWindow(frozenset({0, 1, 2, 3, 4}), time(22, 0), time(4, 0), "Europe/Berlin")


def test_a_window_past_midnight_belongs_to_the_day_it_starts() -> None:
    # 2026-11-30 is a Monday; Berlin is UTC+1 in winter.
    assert NIGHTS.contains(datetime(2026, 11, 30, 21, 30, tzinfo=UTC))  # Mon 22:30
    assert NIGHTS.contains(datetime(2026, 12, 1, 2, 59, tzinfo=UTC))  # Tue 03:59
    assert not NIGHTS.contains(datetime(2026, 12, 1, 3, 0, tzinfo=UTC))  # Tue 04:00
    assert NIGHTS.contains(datetime(2026, 12, 5, 2, 0, tzinfo=UTC))  # Sat 03:00, Friday's night
    assert not NIGHTS.contains(datetime(2026, 12, 5, 21, 30, tzinfo=UTC))  # Sat 22:30
    assert NIGHTS.next_opening(datetime(2026, 12, 5, 12, 0, tzinfo=UTC)) == datetime(
        2026, 12, 7, 21, 0, tzinfo=UTC
    )  # Monday 22:00 Berlin


def test_a_window_round_trips_and_bad_ones_are_refused() -> None:
    assert read_window(dump_window(NIGHTS)) == NIGHTS
    base = {"days": ["mon"], "start": "22:00", "end": "04:00", "timezone": "UTC"}
    for change, message in [
        ({"start": "22:00", "end": "22:00"}, "no hours"),
        ({"days": []}, "non-empty list"),
        ({"days": ["monday"]}, "non-empty list"),
        ({"timezone": "Mars/Olympus"}, "not a time zone"),
        ({"start": "25:00"}, "HH:MM"),
    ]:
        with pytest.raises(InvalidInput, match=message):
            read_window({**base, **change})


def install() -> Decision:
    return Decision(Outcome.INSTALL, Reason.AUTOMATIC, "install it", SUPPLEMENT)


def test_hold_defers_for_the_wave_then_the_window_and_an_enforcement_overrides_both() -> None:
    rollout = start(PLAN, "12A100a", T0)
    monday_noon = T0  # outside NIGHTS
    held = hold(install(), gate(rollout, 1), NIGHTS, monday_noon)
    assert (held.outcome, held.reason) == (Outcome.DEFERRED, Reason.ROLLOUT_WAVE)
    assert "'early'" in held.message
    assert "waiting" in held.message
    assert "16:00" in held.message

    held = hold(install(), gate(rollout, 0), NIGHTS, monday_noon)
    assert (held.outcome, held.reason) == (Outcome.DEFERRED, Reason.MAINTENANCE_WINDOW)
    assert "2026-11-30 21:00 UTC" in held.message

    assert (
        hold(install(), gate(rollout, 0), NIGHTS, datetime(2026, 11, 30, 22, tzinfo=UTC))
        == install()
    )

    enforced = Decision(
        Outcome.ENFORCED, Reason.ENFORCEMENT_DEADLINE, "deadline passed", SUPPLEMENT
    )
    overridden = hold(enforced, gate(rollout, 1), NIGHTS, monday_noon)
    assert overridden.outcome is Outcome.ENFORCED
    assert (
        "overrides rollout wave 'early' (waiting) and the maintenance window" in overridden.message
    )

    up_to_date = Decision(Outcome.UP_TO_DATE, Reason.SUPPLEMENT_INSTALLED, "fine")
    assert hold(up_to_date, gate(rollout, 1), NIGHTS, monday_noon) == up_to_date
