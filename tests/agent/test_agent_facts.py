"""Device facts from fake os-release, sysfs and config trees built under tmp_path."""

from __future__ import annotations

import platform
from pathlib import Path, PurePosixPath

import pytest

from bsi.agent.config import (
    AgentConfig,
    AgentConfigError,
    FactsOverrides,
    load_config,
    normalise_architecture,
    parse_config,
)
from bsi.agent.facts import (
    FactsUnavailable,
    PowerSupply,
    battery_state,
    parse_os_release,
    parse_product_version,
    read_facts,
    read_power_supplies,
    resolve_in_root,
)
from bsi.domain.eligibility import DEFAULT_RULES
from bsi.domain.versions import Build, ProductVersion
from bsi.errors import InvalidVersion

APPLIANCE = """\
# An appliance image that carries Apple-style builds.
NAME="Acme Router OS"
ID=acme-router
VERSION_ID=4.2.1
BUILD_ID=4B120
PRETTY_NAME='Acme Router OS 4.2.1 (the "quiet" one)'
"""

DEBIAN = """\
PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
ID=debian
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def supply(root: Path, name: str, **attributes: str) -> None:
    for key, value in attributes.items():
        write(root / "sys/class/power_supply" / name / key, value + "\n")


# -- os-release ------------------------------------------------------------


def test_os_release_quoting_and_escapes() -> None:
    text = r"""
# comment
ID=fedora
NAME="Fedora \"Linux\" \$HOME \\ \`x\`"
LITERAL='a \"b\" $c'
UNQUOTED=a\ b
MIXED="one"'two'three
EMPTY=
BAD LINE
1BAD=x
OPEN="never closed
VARIANT="Server Edition"
"""
    values = parse_os_release(text)
    assert values == {
        "ID": "fedora",
        "NAME": 'Fedora "Linux" $HOME \\ `x`',
        "LITERAL": 'a \\"b\\" $c',
        "UNQUOTED": "a b",
        "MIXED": "onetwothree",
        "EMPTY": "",
        "VARIANT": "Server Edition",
    }


def test_product_version_from_version_id() -> None:
    assert parse_product_version("12") == ProductVersion(12)
    assert parse_product_version("3.19.1") == ProductVersion(3, 19, 1)
    # Ubuntu's zero-padded month orders correctly as a number.
    assert parse_product_version("22.04") == ProductVersion(22, 4)
    assert parse_product_version("22.04") < parse_product_version("22.10")
    with pytest.raises(InvalidVersion):
        parse_product_version("rolling")


def test_appliance_facts_from_os_release(tmp_path: Path) -> None:
    write(tmp_path / "etc/os-release", APPLIANCE)
    facts = read_facts(tmp_path, None)
    assert facts.platform == "acme-router"
    assert facts.product_version == ProductVersion(4, 2, 1)
    assert facts.build == Build.parse("4B120")
    assert facts.architecture == normalise_architecture(platform.machine())
    assert facts.on_battery is False  # no power_supply tree: no battery
    assert facts.battery_percent is None
    assert facts.model_identifier is None


def test_usr_lib_fallback_and_image_version(tmp_path: Path) -> None:
    write(tmp_path / "usr/lib/os-release", "ID=flatcar\nVERSION_ID=3815.2.0\nIMAGE_VERSION=38F2\n")
    facts = read_facts(tmp_path, None)
    assert (facts.platform, str(facts.product_version), str(facts.build)) == (
        "flatcar",
        "3815.2",
        "38F2",
    )


def test_unparseable_build_id_falls_back_to_image_version(tmp_path: Path) -> None:
    write(tmp_path / "etc/os-release", "ID=x\nVERSION_ID=1\nBUILD_ID=rolling\nIMAGE_VERSION=1A7\n")
    assert str(read_facts(tmp_path, None).build) == "1A7"


def test_absolute_link_is_resolved_inside_the_root(tmp_path: Path) -> None:
    # /etc/os-release -> /usr/lib/os-release must not read the host's file.
    write(tmp_path / "usr/lib/os-release", APPLIANCE)
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/os-release").symlink_to("/usr/lib/os-release")
    assert (
        resolve_in_root(tmp_path, PurePosixPath("/etc/os-release"))
        == tmp_path / "usr/lib/os-release"
    )
    assert read_facts(tmp_path, None).platform == "acme-router"


def test_link_climbing_out_stops_at_the_root(tmp_path: Path) -> None:
    write(tmp_path / "etc/real", "ID=inside\n")
    (tmp_path / "etc/os-release").symlink_to("../../../../../../etc/real")
    assert resolve_in_root(tmp_path, PurePosixPath("/etc/os-release")) == tmp_path / "etc/real"


def test_link_loop_is_an_error_not_a_hang(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/os-release").symlink_to("os-release")
    with pytest.raises(FactsUnavailable, match="cannot read"):
        read_facts(tmp_path, None)


# -- clear errors ----------------------------------------------------------


def test_stock_distribution_has_no_build_and_is_placed_by_packages(tmp_path: Path) -> None:
    write(tmp_path / "etc/os-release", DEBIAN)
    facts = read_facts(tmp_path, None)
    assert (facts.platform, str(facts.product_version), facts.build) == ("debian", "12.0", None)


def test_a_build_id_that_is_not_a_build_is_no_build(tmp_path: Path) -> None:
    write(tmp_path / "etc/os-release", "ID=arch\nVERSION_ID=1\nBUILD_ID=rolling\n")
    assert read_facts(tmp_path, None).build is None


def test_missing_version_id(tmp_path: Path) -> None:
    write(tmp_path / "etc/os-release", "ID=debian\nBUILD_ID=12A1\n")
    with pytest.raises(FactsUnavailable, match=r"has no VERSION_ID.*product_version"):
        read_facts(tmp_path, None)


def test_no_os_release_at_all(tmp_path: Path) -> None:
    with pytest.raises(FactsUnavailable, match="there is no os-release file") as caught:
        read_facts(tmp_path, None)
    assert "etc/os-release" in str(caught.value)
    assert "usr/lib/os-release" in str(caught.value)


# -- config overrides ------------------------------------------------------


def test_config_overrides_every_fact(tmp_path: Path) -> None:
    write(tmp_path / "etc/os-release", DEBIAN)
    supply(tmp_path, "BAT0", type="Battery", capacity="5", status="Discharging")
    write(
        tmp_path / "etc/bsi/agent.yaml",
        """
server_url: https://bsi.example.net/
state_dir: /data/bsi
facts:
  platform: acme-router
  product_version: "12.1"
  build: 12A100
  model: ACME R9000
  device_id: R9000-A1
  architecture: aarch64
  on_battery: false
  battery_percent: 100
thresholds:
  battery_minimum_percent: {aarch64: 30}
""",
    )
    config = load_config(tmp_path)
    facts = read_facts(tmp_path, config)
    assert facts.platform == "acme-router"
    assert facts.product_version == ProductVersion(12, 1)
    assert facts.build == Build.parse("12A100")
    assert facts.model_identifier == "ACME R9000"
    assert facts.software_update_device_id == "R9000-A1"
    assert facts.architecture == "arm64"
    assert (facts.on_battery, facts.battery_percent) == (False, 100.0)
    assert config.server_url == "https://bsi.example.net/"
    assert config.state_dir_under(tmp_path) == tmp_path / "data/bsi"
    rules = config.rules(DEFAULT_RULES, facts.platform)
    assert rules.battery_threshold("acme-router", "arm64") == 30
    assert rules.battery_threshold("acme-router", "x86_64") == 20  # untouched
    assert rules.battery_threshold("debian", "arm64") == 10  # other platforms untouched


def test_build_override_completes_a_plain_distribution(tmp_path: Path) -> None:
    write(tmp_path / "etc/os-release", DEBIAN)
    config = AgentConfig(facts=FactsOverrides(build=Build.parse("12A100")))
    facts = read_facts(tmp_path, config)
    assert (facts.platform, str(facts.product_version), str(facts.build)) == (
        "debian",
        "12.0",
        "12A100",
    )


def test_full_overrides_need_no_os_release(tmp_path: Path) -> None:
    config = AgentConfig(
        facts=FactsOverrides(
            platform="acme", product_version=ProductVersion(1), build=Build.parse("1A1")
        )
    )
    assert read_facts(tmp_path, config).platform == "acme"


def test_missing_config_file_gives_defaults(tmp_path: Path) -> None:
    config = load_config(tmp_path)
    assert config == AgentConfig()
    assert config.state_dir_under(tmp_path) == tmp_path / "var/lib/bsi"
    assert parse_config("") == AgentConfig(source="agent.yaml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("facts: {buidl: 12A1}", r"facts: unknown key 'buidl'"),
        ("facts: {build: twelve}", r"facts.build: 'twelve' is not a build"),
        ("facts: {product_version: 4.10}", r"facts.product_version: 4.1 was read as a number"),
        ("facts: {on_battery: maybe}", r"facts.on_battery: expected true or false"),
        ("facts: {battery_percent: 120}", r"facts.battery_percent: 120 is not a percentage"),
        ("facts: {platform: 'acme router'}", r"facts.platform: 'acme router' is not a platform"),
        ("server_url: ftp://x", r"server_url: 'ftp://x' is not an http\(s\) URL"),
        ("state_dir: var/lib/bsi", r"state_dir: 'var/lib/bsi' is not an absolute path"),
        ("thresholds: {battery_minimum_percent: 5}", r"expected a mapping of architecture"),
        ("facts: [1]", r"facts: expected a mapping"),
        ("a: 1\na: 2", r"not YAML: .*appears twice"),
        ("other: 1", r"top level: unknown key 'other'"),
        ('facts: {model: "Mac\\0"}', r"facts.model: a string contains a NUL character"),
        ('facts: {device_id: "\\udc80"}', r"facts.device_id: a string contains a lone surrogate"),
        ("facts: {battery_percent: .inf}", r"facts.battery_percent: inf is not a finite number"),
    ],
)
def test_config_refusals_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path / "etc/bsi/agent.yaml", text)
    with pytest.raises(AgentConfigError, match=message) as caught:
        load_config(tmp_path)
    assert str(caught.value).startswith(str(path))


def test_architecture_spellings() -> None:
    assert normalise_architecture("aarch64") == "arm64"
    assert normalise_architecture("arm64") == "arm64"
    assert normalise_architecture("x86_64") == "x86_64"
    assert normalise_architecture("AMD64") == "x86_64"
    assert normalise_architecture("riscv64") == "riscv64"


# -- power -----------------------------------------------------------------


def test_laptop_on_mains(tmp_path: Path) -> None:
    write(tmp_path / "etc/os-release", APPLIANCE)
    supply(tmp_path, "AC", type="Mains", online="1")
    supply(tmp_path, "BAT0", type="Battery", capacity="55", status="Charging", present="1")
    facts = read_facts(tmp_path, None)
    assert (facts.on_battery, facts.battery_percent) == (False, 55.0)


def test_laptop_on_battery(tmp_path: Path) -> None:
    write(tmp_path / "etc/os-release", APPLIANCE)
    supply(tmp_path, "AC", type="Mains", online="0")
    supply(tmp_path, "BAT0", type="Battery", capacity="8", status="Discharging")
    facts = read_facts(tmp_path, None)
    assert (facts.on_battery, facts.battery_percent) == (True, 8.0)


def test_power_supply_links_like_real_sysfs(tmp_path: Path) -> None:
    # Real sysfs entries are links into /sys/devices; resolve them inside the root.
    device = tmp_path / "sys/devices/platform/ACPI0003:00/power_supply/AC"
    write(device / "type", "Mains\n")
    write(device / "online", "1\n")
    (tmp_path / "sys/class/power_supply").mkdir(parents=True)
    (tmp_path / "sys/class/power_supply/AC").symlink_to(
        "/sys/devices/platform/ACPI0003:00/power_supply/AC"
    )
    assert read_power_supplies(tmp_path) == [PowerSupply("AC", "Mains", online=True)]


def test_peripheral_battery_is_not_the_hosts() -> None:
    mouse = PowerSupply("hid-mouse", "Battery", capacity=3, status="Discharging", scope="Device")
    assert battery_state([mouse]) == (False, None)


def test_battery_without_adapter_uses_its_status() -> None:
    assert battery_state([PowerSupply("BAT0", "Battery", capacity=40, status="Full")]) == (
        False,
        40.0,
    )
    assert battery_state([PowerSupply("BAT0", "Battery", capacity=40)]) == (None, 40.0)
    two = [
        PowerSupply("BAT0", "Battery", capacity=40, status="Discharging"),
        PowerSupply("BAT1", "Battery", capacity=60, status="Discharging"),
    ]
    assert battery_state(two) == (True, 50.0)


def test_absent_battery_slot_is_ignored() -> None:
    empty = PowerSupply("BAT1", "Battery", present=False)
    assert battery_state([empty]) == (False, None)


def test_host_battery_through_psutil() -> None:
    # The live host: whatever psutil says, the answer is well-formed.
    from bsi.agent.facts import _host_battery

    on_battery, percent = _host_battery()
    assert on_battery in (None, True, False)
    assert percent is None or 0 <= percent <= 100


# -- model -----------------------------------------------------------------


def test_model_from_dmi(tmp_path: Path) -> None:
    write(tmp_path / "etc/os-release", APPLIANCE)
    write(tmp_path / "sys/class/dmi/id/product_name", "ThinkPad X1 Carbon Gen 9\n")
    assert read_facts(tmp_path, None).model_identifier == "ThinkPad X1 Carbon Gen 9"


def test_model_from_device_tree_without_nul(tmp_path: Path) -> None:
    write(tmp_path / "etc/os-release", APPLIANCE)
    write(tmp_path / "sys/class/dmi/id/product_name", "To Be Filled By O.E.M.\n")
    write(tmp_path / "proc/device-tree/model", "Raspberry Pi 4 Model B Rev 1.4\x00")
    assert read_facts(tmp_path, None).model_identifier == "Raspberry Pi 4 Model B Rev 1.4"
