"""The simulated fleet: the mix, the device roots, and what the real rules decide for each kind.

Every kind of simulated device states what the eligibility engine should
decide for it; these tests lay out each kind's device root, read it back with
the agent's own fact probes, and decide with the real engine, so a profile
cannot claim an outcome the rules would not give.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from bsi.agent.config import load_config
from bsi.agent.facts import read_facts
from bsi.domain.catalog import Catalog, Supplement
from bsi.domain.eligibility import DEFAULT_RULES, decide
from bsi.domain.policy import InstallSecurityUpdate, SoftwareUpdatePolicy
from bsi.domain.prerequisite import Prerequisite
from bsi.domain.versions import Build, ExtraVersion, ProductVersion, SupplementVersion
from bsi.errors import InvalidInput
from bsi.sim.engine import percentiles
from bsi.sim.fleet import (
    DEFAULT_MIX,
    GROUP_ALWAYS_OFF,
    PLATFORM,
    PREREQUISITE_BUILD,
    PROFILES,
    Kind,
    allocate,
    parse_mix,
    plan_fleet,
    write_device_root,
)
from bsi.sim.sample import CVE, SUPPLEMENTAL_BUILD

NOW = datetime(2026, 3, 20, 12, tzinfo=UTC)

SAMPLE = Catalog(
    supplements=(
        Supplement(
            platform=PLATFORM,
            version=SupplementVersion(ProductVersion(26, 3, 1), ExtraVersion("a")),
            build=Build.parse(SUPPLEMENTAL_BUILD),
            prerequisite=Prerequisite.of_build(Build.parse(PREREQUISITE_BUILD)),
            cves=(CVE,),
            posted=date(2026, 3, 17),
        ),
    )
)


@pytest.mark.parametrize("kind", list(Kind))
def test_each_kind_gets_the_decision_it_claims_from_its_own_device_root(
    kind: Kind, tmp_path: Path
) -> None:
    profile = PROFILES[kind]
    write_device_root(tmp_path, profile)
    facts = read_facts(tmp_path, load_config(tmp_path))
    assert (facts.platform, str(facts.product_version), str(facts.build)) == (
        PLATFORM,
        profile.version,
        profile.build,
    )
    assert facts.architecture == profile.architecture
    if profile.battery is None:
        assert facts.on_battery is False
    else:
        assert facts.on_battery is not profile.battery.plugged
        assert facts.battery_percent == profile.battery.percent
    policy = SoftwareUpdatePolicy(
        install_security_update=InstallSecurityUpdate.ALWAYS_OFF
        if profile.group == GROUP_ALWAYS_OFF
        else InstallSecurityUpdate.ALWAYS_ON
    )
    decision = decide(facts, SAMPLE, policy, NOW, DEFAULT_RULES)
    assert (decision.outcome, decision.reason) == (
        profile.expected_outcome,
        profile.expected_reason,
    ), decision.message


def test_battery_kinds_sit_one_point_either_side_of_each_threshold() -> None:
    for kind, architecture in (
        (Kind.BATTERY_OK_ARM64, "arm64"),
        (Kind.BATTERY_LOW_ARM64, "arm64"),
        (Kind.BATTERY_OK_X86_64, "x86_64"),
        (Kind.BATTERY_LOW_X86_64, "x86_64"),
    ):
        battery = PROFILES[kind].battery
        assert battery is not None
        threshold = DEFAULT_RULES.battery_threshold(PLATFORM, architecture)
        assert threshold is not None
        assert abs(battery.percent - threshold) == 1


def test_a_small_fleet_still_holds_every_kind_and_a_large_one_follows_the_weights() -> None:
    small = allocate(12, DEFAULT_MIX)
    assert len(small) == 12
    assert set(small) == set(Kind)
    large = Counter(allocate(10_000, DEFAULT_MIX))
    total = sum(DEFAULT_MIX.values())
    for kind, weight in DEFAULT_MIX.items():
        assert abs(large[kind] - 10_000 * weight / total) <= 11


def test_kinds_are_interleaved_not_grouped() -> None:
    kinds = allocate(100, DEFAULT_MIX)
    first_half = Counter(kinds[:50])
    second_half = Counter(kinds[50:])
    for kind in Kind:
        assert abs(first_half[kind] - second_half[kind]) <= 1


def test_mix_overrides_the_default_and_zero_leaves_a_kind_out() -> None:
    mix = parse_mix("offline=0, always-off=20")
    assert mix[Kind.ALWAYS_OFF] == 20
    assert Kind.OFFLINE not in allocate(50, mix)


@pytest.mark.parametrize("text", ["nonsense=1", "offline", "offline=-1", "offline=x"])
def test_a_bad_mix_is_refused_with_the_kinds_named(text: str) -> None:
    with pytest.raises(InvalidInput, match="--mix"):
        parse_mix(text)


def test_every_weight_zero_is_refused() -> None:
    with pytest.raises(InvalidInput, match="every weight is 0"):
        parse_mix(",".join(f"{k.value}=0" for k in Kind))


def test_full_devices_cover_the_kinds_first(tmp_path: Path) -> None:
    specs = plan_fleet(30, DEFAULT_MIX, tmp_path, full=len(Kind))
    assert {s.profile.kind for s in specs if s.full} == set(Kind)
    assert sum(s.full for s in specs) == len(Kind)
    assert len({s.name for s in specs}) == 30


def test_percentiles_are_nearest_rank_and_say_when_a_rank_is_not_reached() -> None:
    assert percentiles([float(i) for i in range(1, 101)]) == {50: 50.0, 90: 90.0, 99: 99.0}
    assert percentiles([1.0, 2.0, None, None]) == {50: 2.0, 90: None, 99: None}
    assert percentiles([]) == {50: None, 90: None, 99: None}
