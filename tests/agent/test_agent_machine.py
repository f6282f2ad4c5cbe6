"""The agent's pure state machine: every path from facts and disk state to steps."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime

from bsi.agent.machine import DiskState, InstallState, Step, next_steps
from bsi.domain.catalog import Catalog, Supplement, SupplementState
from bsi.domain.eligibility import Reason
from bsi.domain.facts import DeviceFacts
from bsi.domain.policy import InstallSecurityUpdate, SoftwareUpdatePolicy
from bsi.domain.prerequisite import Prerequisite
from bsi.domain.versions import Build, ExtraVersion, ProductVersion, SupplementVersion

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
BASE = Build.parse("12A100")
A, B, C = Build.parse("12A100a"), Build.parse("12A100b"), Build.parse("12A100c")


def supplement(build: Build, letter: str, **changes: object) -> Supplement:
    made = Supplement(
        platform="debian",
        version=SupplementVersion(ProductVersion(12, 5), ExtraVersion(letter)),
        build=build,
        prerequisite=Prerequisite.of_build(BASE),
        cves=("CVE-2026-20643",),
        posted=date(2026, 11, 20),
    )
    return replace(made, **changes)  # type: ignore[arg-type]


FACTS = DeviceFacts(
    platform="debian", product_version=ProductVersion(12, 5), build=BASE, architecture="x86_64"
)
CATALOG = Catalog(supplements=(supplement(A, "a"),))
POLICY = SoftwareUpdatePolicy()


def steps(plan_steps: tuple[tuple[Step, Build | None], ...]) -> list[tuple[str, str | None]]:
    return [(step.value, str(build) if build else None) for step, build in plan_steps]


def test_fresh_host_downloads_stages_activates_relaunches_and_checks() -> None:
    plan = next_steps(FACTS, CATALOG, POLICY, NOW, DiskState())
    assert steps(plan.steps) == [
        ("download", "12A100a"),
        ("stage", "12A100a"),
        ("activate", "12A100a"),
        ("relaunch", "12A100a"),
        ("health-check", "12A100a"),
    ]
    assert plan.install_state is InstallState.DOWNLOADING


def test_already_staged_skips_the_download() -> None:
    plan = next_steps(FACTS, CATALOG, POLICY, NOW, DiskState(staged=frozenset({A})))
    assert steps(plan.steps)[0] == ("activate", "12A100a")


def test_active_newest_letter_needs_nothing() -> None:
    disk = DiskState(active_build=A, active_prerequisite=BASE)
    plan = next_steps(FACTS, CATALOG, POLICY, NOW, disk)
    assert plan.steps == ()
    assert plan.decision is not None
    assert plan.decision.reason is Reason.SUPPLEMENT_INSTALLED


def test_a_later_letter_replaces_the_active_one() -> None:
    catalog = Catalog(supplements=(supplement(A, "a"), supplement(B, "b")))
    disk = DiskState(active_build=A, active_prerequisite=BASE)
    plan = next_steps(FACTS, catalog, POLICY, NOW, disk)
    # Downloaded and staged first: a bundle refused there leaves the host on (a).
    assert steps(plan.steps)[:4] == [
        ("download", "12A100b"),
        ("stage", "12A100b"),
        ("roll-back", "12A100a"),
        ("activate", "12A100b"),
    ]


def test_withdrawn_active_supplement_is_rolled_back() -> None:
    catalog = Catalog(supplements=(supplement(A, "a", published_state=SupplementState.WITHDRAWN),))
    disk = DiskState(active_build=A, active_prerequisite=BASE)
    plan = next_steps(FACTS, catalog, POLICY, NOW, disk)
    # relaunched after the rollback: processes still map the withdrawn content
    assert steps(plan.steps) == [("roll-back", "12A100a"), ("relaunch", "12A100a")]
    assert "withdrawn" in plan.reasons[0]


def test_withdrawn_supplement_with_a_next_letter_is_replaced_by_it() -> None:
    withdrawn = supplement(A, "a", published_state=SupplementState.WITHDRAWN)
    catalog = Catalog(supplements=(withdrawn, supplement(B, "b")))
    disk = DiskState(active_build=A, active_prerequisite=BASE)
    plan = next_steps(FACTS, catalog, POLICY, NOW, disk)
    assert steps(plan.steps)[:2] == [("roll-back", "12A100a"), ("download", "12A100b")]


def test_a_new_minor_release_discards_supplements_for_the_old_base() -> None:
    upgraded = replace(FACTS, product_version=ProductVersion(12, 6), build=Build.parse("12B7"))
    disk = DiskState(active_build=A, active_prerequisite=BASE)
    plan = next_steps(upgraded, CATALOG, POLICY, NOW, disk)
    assert steps(plan.steps) == [("discard", "12A100a")]


def test_refusals_plan_nothing() -> None:
    wrong_base = replace(FACTS, build=Build.parse("12A99"))
    low = replace(FACTS, on_battery=True, battery_percent=5.0)
    off = SoftwareUpdatePolicy(install_security_update=InstallSecurityUpdate.ALWAYS_OFF)
    for facts, policy, reason in (
        (wrong_base, POLICY, Reason.UNKNOWN_BUILD),
        (low, POLICY, Reason.BATTERY_LOW),
        (FACTS, off, Reason.POLICY_ALWAYS_OFF),
    ):
        plan = next_steps(facts, CATALOG, policy, NOW, DiskState())
        assert plan.steps == ()
        assert plan.decision is not None
        assert plan.decision.reason is reason


def test_a_supplement_that_failed_its_health_check_is_not_retried() -> None:
    plan = next_steps(FACTS, CATALOG, POLICY, NOW, DiskState(failed_builds=frozenset({A})))
    assert plan.steps == ()
    assert "failed its health check" in plan.reasons[0]
    assert "allow-retry" in plan.reasons[0]


AB = Catalog(supplements=(supplement(A, "a"), supplement(B, "b")))


def test_a_failed_newer_letter_returns_the_host_to_the_last_good_letter() -> None:
    # On the baseline after an interrupted fallback: (a) is the last good, (b) failed.
    disk = DiskState(staged=frozenset({A}), failed_builds=frozenset({B}), last_good=A)
    plan = next_steps(FACTS, AB, POLICY, NOW, disk)
    assert steps(plan.steps) == [
        ("activate", "12A100a"),
        ("relaunch", "12A100a"),
        ("health-check", "12A100a"),
    ]
    assert plan.target is not None
    assert plan.target.build == A
    assert any("last good letter" in reason for reason in plan.reasons)


def test_on_the_last_good_letter_a_failed_newer_one_changes_nothing() -> None:
    disk = DiskState(
        active_build=A, active_prerequisite=BASE, failed_builds=frozenset({B}), last_good=A
    )
    plan = next_steps(FACTS, AB, POLICY, NOW, disk)
    assert plan.steps == ()


def test_without_a_last_good_letter_the_baseline_is_the_fallback() -> None:
    disk = DiskState(failed_builds=frozenset({B}))
    assert next_steps(FACTS, AB, POLICY, NOW, disk).steps == ()


def test_a_withdrawn_or_other_base_last_good_letter_is_not_returned_to() -> None:
    withdrawn = Catalog(
        supplements=(
            supplement(A, "a", published_state=SupplementState.WITHDRAWN),
            supplement(B, "b"),
        )
    )
    disk = DiskState(staged=frozenset({A}), failed_builds=frozenset({B}), last_good=A)
    assert next_steps(FACTS, withdrawn, POLICY, NOW, disk).steps == ()


def test_a_newer_letter_after_a_failed_one_is_installed() -> None:
    catalog = Catalog(supplements=(supplement(A, "a"), supplement(B, "b"), supplement(C, "c")))
    disk = DiskState(
        active_build=A, active_prerequisite=BASE, failed_builds=frozenset({B}), last_good=A
    )
    plan = next_steps(FACTS, catalog, POLICY, NOW, disk)
    assert steps(plan.steps)[:3] == [
        ("download", "12A100c"),
        ("stage", "12A100c"),
        ("roll-back", "12A100a"),
    ]


def test_an_uncommitted_activation_is_verified_again() -> None:
    disk = DiskState(active_build=B, active_prerequisite=BASE, last_good=A, uncommitted=B)
    plan = next_steps(FACTS, AB, POLICY, NOW, disk)
    assert steps(plan.steps) == [("relaunch", "12A100b"), ("health-check", "12A100b")]
    assert plan.verifying == B
    assert plan.install_state is InstallState.INSTALLING


def test_an_uncommitted_activation_that_already_failed_falls_back() -> None:
    disk = DiskState(
        active_build=B,
        active_prerequisite=BASE,
        staged=frozenset({A, B}),
        failed_builds=frozenset({B}),
        last_good=A,
        uncommitted=B,
    )
    plan = next_steps(FACTS, AB, POLICY, NOW, disk)
    assert steps(plan.steps) == [
        ("roll-back", "12A100b"),
        ("activate", "12A100a"),
        ("relaunch", "12A100a"),
        ("health-check", "12A100a"),
    ]


def test_a_failed_active_letter_without_a_last_good_one_goes_to_the_baseline_and_relaunches() -> (
    None
):
    disk = DiskState(
        active_build=B, active_prerequisite=BASE, failed_builds=frozenset({B}), uncommitted=B
    )
    plan = next_steps(FACTS, AB, POLICY, NOW, disk)
    assert steps(plan.steps) == [("roll-back", "12A100b"), ("relaunch", "12A100b")]


def test_a_letter_an_administrator_removed_is_not_put_back_and_says_why() -> None:
    plan = next_steps(FACTS, CATALOG, POLICY, NOW, DiskState(removed_builds=frozenset({A})))
    assert plan.steps == ()
    assert "removed by an administrator" in plan.reasons[0]


def test_pending_relaunch_is_retried() -> None:
    disk = DiskState(active_build=A, active_prerequisite=BASE, restart_pending=True)
    plan = next_steps(FACTS, CATALOG, POLICY, NOW, disk)
    assert steps(plan.steps) == [("relaunch", "12A100a")]


def test_a_relaunch_left_by_a_kill_after_the_files_moved_back_is_carried_out() -> None:
    # A rollback killed after its deactivation: nothing is active, the
    # processes still run (a)'s files, and (a)'s manifest is still staged.
    removed = DiskState(
        staged=frozenset({A}), restart_pending=True, relaunching=A, removed_builds=frozenset({A})
    )
    plan = next_steps(FACTS, CATALOG, POLICY, NOW, removed)
    assert steps(plan.steps) == [("relaunch", "12A100a")]
    # Without the manifest there is nothing to relaunch with: reported, not guessed.
    gone = replace(removed, staged=frozenset())
    assert next_steps(FACTS, CATALOG, POLICY, NOW, gone).steps == ()
