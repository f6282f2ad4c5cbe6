"""The eligibility engine on hand-built catalogues: every outcome and reason.

The same rules are exercised on Apple's real catalogue in
``tests/apple/test_real_catalogue.py``; here each rule is isolated.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime

import pytest

from bsi.domain.catalog import Catalog, Release, Supersession, Supplement, SupplementState
from bsi.domain.eligibility import Outcome, Reason, Rules, decide
from bsi.domain.facts import DeviceFacts
from bsi.domain.policy import Enforcement, InstallSecurityUpdate, SoftwareUpdatePolicy
from bsi.domain.prerequisite import Prerequisite
from bsi.domain.versions import Build, ExtraVersion, ProductVersion, SupplementVersion

NOW = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)
DEFAULT = SoftwareUpdatePolicy()


def supplement(
    letter: str = "a",
    build: str = "25D771280a",
    prerequisite: str = "25D2128",
    version: str = "26.3.1",
    **changes: object,
) -> Supplement:
    base = Supplement(
        platform="macOS",
        version=SupplementVersion(ProductVersion.parse(version), ExtraVersion(letter)),
        build=Build.parse(build),
        prerequisite=Prerequisite.of_build(Build.parse(prerequisite)),
        supported_devices=frozenset({"J413AP", "J316sAP"}),
        cves=("CVE-2026-20643",),
        posted=date(2026, 3, 17),
        expires=date(2026, 11, 20),
        superseded_by=Supersession(ProductVersion(26, 4), None, date(2026, 3, 24)),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def mac(
    version: str = "26.3.1", build: str = "25D2128", device_id: str = "J413AP", **changes: object
) -> DeviceFacts:
    base = DeviceFacts(
        platform="macOS",
        product_version=ProductVersion.parse(version),
        build=Build.parse(build),
        model_identifier="Mac14,2",
        software_update_device_id=device_id,
        architecture="arm64",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


CATALOG = Catalog(
    supplements=(supplement(),),
    releases=(
        Release(
            "macOS",
            ProductVersion(26, 4),
            Build.parse("25E246"),
            posted=date(2026, 3, 24),
            supported_devices=frozenset({"J413AP", "J316sAP", "J700AP"}),
        ),
        Release("macOS", ProductVersion(26, 6, 2), Build.parse("25G83"), posted=date(2026, 8, 17)),
    ),
)


def test_device_on_prerequisite_build_is_offered_the_supplement() -> None:
    decision = decide(mac(), CATALOG, DEFAULT, NOW)
    assert (decision.outcome, decision.reason) == (Outcome.INSTALL, Reason.OFFERED)
    assert decision.supplement is not None
    assert str(decision.supplement.build) == "25D771280a"
    assert "26.3.1 (a)" in decision.message


def test_always_on_installs_automatically_even_with_enable_false() -> None:
    policy = SoftwareUpdatePolicy(
        install_security_update=InstallSecurityUpdate.ALWAYS_ON,
        rapid_security_response_enable=False,
    )
    decision = decide(mac(), CATALOG, policy, NOW)
    assert (decision.outcome, decision.reason) == (Outcome.INSTALL, Reason.AUTOMATIC)


def test_always_off_blocks() -> None:
    policy = SoftwareUpdatePolicy(install_security_update=InstallSecurityUpdate.ALWAYS_OFF)
    decision = decide(mac(), CATALOG, policy, NOW)
    assert (decision.outcome, decision.reason) == (Outcome.BLOCKED, Reason.POLICY_ALWAYS_OFF)
    assert decision.exposed


def test_enable_false_blocks_where_only_a_user_offer_would_apply() -> None:
    policy = SoftwareUpdatePolicy(rapid_security_response_enable=False)
    decision = decide(mac(), CATALOG, policy, NOW)
    assert (decision.outcome, decision.reason) == (Outcome.BLOCKED, Reason.USER_OFFER_DISABLED)


def enforcement(deadline: datetime, build: str = "25D771280a") -> Enforcement:
    return Enforcement("26.3.1", deadline, target_build_version=build, identifier="force-bsi")


@pytest.mark.parametrize(
    ("offset_minutes", "due_text"),
    [(0, "by 2026-03-20 18:00:00 local"), (7 * 60, "now: the deadline has passed")],
)
def test_enforcement_forces_even_where_enable_is_false_in_local_time(
    offset_minutes: int, due_text: str
) -> None:
    """The deadline has no zone: 18:00 is 18:00 on the device's own clock."""
    policy = SoftwareUpdatePolicy(
        rapid_security_response_enable=False,
        enforcements=(enforcement(datetime(2026, 3, 20, 18, 0)),),
    )
    decision = decide(mac(utc_offset_minutes=offset_minutes), CATALOG, policy, NOW)
    assert (decision.outcome, decision.reason) == (Outcome.ENFORCED, Reason.ENFORCEMENT_DEADLINE)
    assert decision.deadline == datetime(2026, 3, 20, 18, 0)
    assert due_text in decision.message


def test_enforcement_for_another_build_does_not_apply() -> None:
    policy = SoftwareUpdatePolicy(
        rapid_security_response_enable=False,
        enforcements=(enforcement(datetime(2026, 3, 20, 18, 0), build="25D771400a"),),
    )
    assert decide(mac(), CATALOG, policy, NOW).reason is Reason.USER_OFFER_DISABLED


def test_enforcing_an_earlier_letter_is_met_by_the_later_cumulative_one() -> None:
    catalog = Catalog(supplements=(supplement(), supplement("b", build="25D771280b")))
    policy = SoftwareUpdatePolicy(enforcements=(enforcement(datetime(2026, 3, 21)),))
    decision = decide(mac(), catalog, policy, NOW)
    assert decision.outcome is Outcome.ENFORCED
    assert decision.supplement is not None
    assert str(decision.supplement.version) == "26.3.1 (b)"


@pytest.mark.parametrize(
    ("architecture", "percent", "outcome"),
    [
        ("arm64", 9.0, Outcome.DEFERRED),
        ("arm64", 10.0, Outcome.INSTALL),
        ("x86_64", 19.5, Outcome.DEFERRED),
        ("x86_64", 20.0, Outcome.INSTALL),
    ],
)
def test_battery_threshold_by_architecture(
    architecture: str, percent: float, outcome: Outcome
) -> None:
    facts = mac(architecture=architecture, on_battery=True, battery_percent=percent)
    decision = decide(facts, CATALOG, DEFAULT, NOW)
    assert decision.outcome is outcome
    if outcome is Outcome.DEFERRED:
        assert decision.reason is Reason.BATTERY_LOW
        assert f"{percent:g} %" in decision.message


def test_battery_does_not_matter_on_mains_power() -> None:
    facts = mac(on_battery=False, battery_percent=1.0)
    assert decide(facts, CATALOG, DEFAULT, NOW).outcome is Outcome.INSTALL


def test_battery_thresholds_are_configurable_per_platform() -> None:
    rules = Rules(battery_minimum_percent={"macOS": {"arm64": 50.0}, "*": {"arm64": 10.0}})
    facts = mac(on_battery=True, battery_percent=30.0)
    assert decide(facts, CATALOG, DEFAULT, NOW, rules).reason is Reason.BATTERY_LOW


def test_always_off_wins_over_battery() -> None:
    policy = SoftwareUpdatePolicy(install_security_update=InstallSecurityUpdate.ALWAYS_OFF)
    facts = mac(on_battery=True, battery_percent=1.0)
    assert decide(facts, CATALOG, policy, NOW).reason is Reason.POLICY_ALWAYS_OFF


def test_installed_supplement_is_up_to_date() -> None:
    facts = mac(supplemental_build=Build.parse("25D771280a"), supplemental_extra=ExtraVersion("a"))
    decision = decide(facts, CATALOG, DEFAULT, NOW)
    assert (decision.outcome, decision.reason) == (Outcome.UP_TO_DATE, Reason.SUPPLEMENT_INSTALLED)
    assert not decision.exposed


def test_later_letter_replaces_an_installed_earlier_one() -> None:
    catalog = Catalog(supplements=(supplement(), supplement("b", build="25D771280b")))
    facts = mac(supplemental_build=Build.parse("25D771280a"))
    decision = decide(facts, catalog, DEFAULT, NOW)
    assert decision.outcome is Outcome.INSTALL
    assert decision.supplement is not None
    assert str(decision.supplement.version) == "26.3.1 (b)"


def test_older_minor_is_blocked_naming_the_release_to_install_first() -> None:
    decision = decide(mac("26.2", "25C56"), CATALOG, DEFAULT, NOW)
    assert (decision.outcome, decision.reason) == (Outcome.BLOCKED, Reason.NOT_LATEST_MINOR)
    assert decision.install_first == "macOS 26.3.1 (25D2128)"
    assert "install macOS 26.3.1 (25D2128) first" in decision.message


def test_after_supersession_the_old_minor_must_take_the_new_release_first() -> None:
    later = datetime(2026, 8, 22, tzinfo=UTC)
    decision = decide(mac(), CATALOG, DEFAULT, later)
    assert (decision.outcome, decision.reason) == (Outcome.BLOCKED, Reason.NOT_LATEST_MINOR)
    assert decision.install_first == "macOS 26.6.2 (25G83)"
    assert "folded into macOS 26.4" in decision.message


def test_device_on_the_superseding_minor_needs_nothing() -> None:
    decision = decide(mac("26.4", "25E246"), CATALOG, DEFAULT, datetime(2026, 4, 1, tzinfo=UTC))
    assert (decision.outcome, decision.reason) == (Outcome.UP_TO_DATE, Reason.INCLUDED_IN_RELEASE)
    assert not decision.exposed


def test_below_minimum_version_is_blocked() -> None:
    decision = decide(mac("15.7.4", "24G517"), CATALOG, DEFAULT, NOW)
    assert (decision.outcome, decision.reason) == (Outcome.BLOCKED, Reason.BELOW_MINIMUM_VERSION)
    assert "26.1" in decision.message


def test_unsupported_device_is_blocked() -> None:
    """The catalogue knows J700AP (26.4 lists it), but the supplement does not name it."""
    facts = mac(device_id="J700AP", model_identifier="Mac17,5")
    decision = decide(facts, CATALOG, DEFAULT, NOW)
    assert (decision.outcome, decision.reason) == (Outcome.BLOCKED, Reason.UNSUPPORTED_DEVICE)
    assert "J700AP" in decision.message


def test_model_no_list_names_is_unknown_not_unsupported() -> None:
    facts = mac(device_id="J999AP", model_identifier="Mac99,1")
    decision = decide(facts, CATALOG, DEFAULT, NOW)
    assert (decision.outcome, decision.reason) == (Outcome.UNKNOWN, Reason.UNKNOWN_MODEL)
    assert "J999AP" in decision.message
    assert not decision.exposed


def test_platform_the_catalogue_lacks_is_unknown() -> None:
    decision = decide(mac(platform="Debian"), CATALOG, DEFAULT, NOW)
    assert (decision.outcome, decision.reason) == (Outcome.UNKNOWN, Reason.UNKNOWN_PLATFORM)
    assert "'Debian'" in decision.message
    assert "macOS" in decision.message


def test_build_apple_never_published_is_unknown_not_up_to_date() -> None:
    """25D9999 on 26.3.1: the catalogue knows 26.3.1 as 25D2128 only."""
    decision = decide(mac(build="25D9999"), CATALOG, DEFAULT, NOW)
    assert (decision.outcome, decision.reason) == (Outcome.UNKNOWN, Reason.UNKNOWN_BUILD)
    assert "25D9999" in decision.message
    assert "25D2128" in decision.message


def test_version_the_catalogue_lacks_is_never_up_to_date() -> None:
    decision = decide(mac("26.3.5", "25D3000"), CATALOG, DEFAULT, NOW)
    assert (decision.outcome, decision.reason) == (Outcome.UNKNOWN, Reason.UNKNOWN_BUILD)


def test_supplemental_build_the_catalogue_lacks_is_unknown() -> None:
    facts = mac(supplemental_build=Build.parse("25D771289z"))
    decision = decide(facts, CATALOG, DEFAULT, NOW)
    assert (decision.outcome, decision.reason) == (Outcome.UNKNOWN, Reason.UNKNOWN_BUILD)
    assert "25D771289z" in decision.message


def test_installed_but_not_relaunched_is_restart_pending_not_up_to_date() -> None:
    facts = mac(supplemental_build=Build.parse("25D771280a"), restart_pending=True)
    decision = decide(facts, CATALOG, DEFAULT, NOW)
    assert (decision.outcome, decision.reason) == (
        Outcome.RESTART_PENDING,
        Reason.OLD_CONTENT_RUNNING,
    )
    assert decision.supplement is not None
    assert str(decision.supplement.build) == "25D771280a"
    assert not decision.exposed


def test_model_identifier_is_matched_through_the_catalogue_board_table() -> None:
    catalog = replace(CATALOG, device_ids_by_model={"Mac14,2": frozenset({"J413AP"})})
    facts = mac(device_id=None)  # type: ignore[arg-type]
    facts = replace(facts, software_update_device_id=None)
    assert decide(facts, catalog, DEFAULT, NOW).outcome is Outcome.INSTALL
    assert decide(facts, CATALOG, DEFAULT, NOW).reason is Reason.UNKNOWN_MODEL


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        (SupplementState.PAUSED, Reason.SUPPLEMENT_PAUSED),
        (SupplementState.WITHDRAWN, Reason.SUPPLEMENT_WITHDRAWN),
    ],
)
def test_publisher_states_block(state: SupplementState, reason: Reason) -> None:
    catalog = Catalog(supplements=(supplement(published_state=state),))
    decision = decide(mac(), catalog, DEFAULT, NOW)
    assert (decision.outcome, decision.reason) == (Outcome.BLOCKED, reason)


def test_paused_later_letter_falls_back_to_the_live_earlier_one() -> None:
    paused_b = supplement("b", build="25D771280b", published_state=SupplementState.PAUSED)
    catalog = Catalog(supplements=(supplement(), paused_b))
    decision = decide(mac(), catalog, DEFAULT, NOW)
    assert decision.supplement is not None
    assert str(decision.supplement.version) == "26.3.1 (a)"


def test_expired_supplement_is_blocked() -> None:
    catalog = Catalog(supplements=(supplement(superseded_by=None, expires=date(2026, 3, 19)),))
    assert decide(mac(), catalog, DEFAULT, NOW).reason is Reason.SUPPLEMENT_EXPIRED


def test_not_yet_posted_supplement_is_not_offered() -> None:
    early = datetime(2026, 3, 16, tzinfo=UTC)
    decision = decide(mac(), CATALOG, DEFAULT, early)
    assert (decision.outcome, decision.reason) == (Outcome.UP_TO_DATE, Reason.NO_SUPPLEMENT)


def test_build_without_any_supplement_is_up_to_date() -> None:
    catalog = Catalog(
        supplements=(supplement(superseded_by=None),),
        releases=(Release("macOS", ProductVersion(26, 6, 2), Build.parse("25G83")),),
    )
    decision = decide(mac("26.6.2", "25G83"), catalog, DEFAULT, NOW)
    assert (decision.outcome, decision.reason) == (Outcome.UP_TO_DATE, Reason.NO_SUPPLEMENT)


def test_linux_platform_uses_the_same_rules() -> None:
    linux = Supplement(
        platform="debian",
        version=SupplementVersion(ProductVersion(12, 8), ExtraVersion("a")),
        build=Build.parse("12D8001a"),
        prerequisite=Prerequisite.of_build(Build.parse("12D8001")),
    )
    facts = DeviceFacts(
        platform="debian",
        product_version=ProductVersion(12, 8),
        build=Build.parse("12D8001"),
        architecture="x86_64",
        on_battery=True,
        battery_percent=15.0,
    )
    decision = decide(facts, Catalog(supplements=(linux,)), DEFAULT, NOW)
    assert decision.reason is Reason.BATTERY_LOW


def test_install_security_update_is_ignored_on_ios_as_apple_defines() -> None:
    iphone_supplement = supplement(
        build="23D771330a",
        prerequisite="23D8133",
        platform="iOS",
        supported_devices=frozenset({"iPhone14,2"}),
    )
    iphone = DeviceFacts(
        platform="iOS",
        product_version=ProductVersion(26, 3, 1),
        build=Build.parse("23D8133"),
        model_identifier="iPhone14,2",
    )
    policy = SoftwareUpdatePolicy(install_security_update=InstallSecurityUpdate.ALWAYS_OFF)
    catalog = Catalog(supplements=(iphone_supplement,))
    assert decide(iphone, catalog, policy, NOW).reason is Reason.OFFERED
