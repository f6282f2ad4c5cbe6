"""DDM status reports: parsing, merging, round trips, and agreement with Apple's schema."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from bsi.domain.status import (
    STATUS_ITEMS,
    DeviceState,
    StatusReport,
    flatten_status_items,
    merge_status,
    nest_status_items,
    parse_status_report,
    state_to_report,
)
from bsi.domain.versions import Build, ExtraVersion, ProductVersion
from bsi.errors import InvalidStatusReport


def full_report() -> dict[str, Any]:
    """A MacBook Air (M2) on macOS 26.3.1 before its supplement, as it first reports."""
    return {
        "StatusItems": {
            "device": {
                "identifier": {
                    "serial-number": "C02XK1ZQJG5H",
                    "udid": "00008112-001A2C3E0E91401E",
                },
                "model": {
                    "family": "Mac",
                    "identifier": "Mac14,2",
                    "marketing-name": "MacBook Air (M2, 2022)",
                    "number": "MLY33LL/A",
                },
                "operating-system": {
                    "build-version": "25D2128",
                    "family": "macOS",
                    "marketing-name": "macOS Tahoe",
                    "supplemental": {"build-version": "", "extra-version": ""},
                    "version": "26.3.1",
                },
                "power": {"battery-health": "normal"},
            },
            "management": {
                "client-capabilities": {"supported-versions": ["1.0"]},
                "declarations": {
                    "activations": [
                        {
                            "identifier": "bsi.activation",
                            "server-token": "7c1f",
                            "active": True,
                            "valid": "valid",
                        }
                    ],
                    "configurations": [],
                    "assets": [],
                    "management": [],
                },
            },
            "softwareupdate": {
                "device-id": "J413AP",
                "install-state": "none",
                "pending-version": {"os-version": "", "build-version": ""},
                "failure-reason": {"count": 0},
                "install-reason": {"reason": []},
                "beta-enrollment": "",
            },
            "app": {
                "managed": {
                    "list": [
                        {"identifier": "com.example.vpn", "state": "managed"},
                        {"identifier": "com.example.notes", "state": "managed"},
                    ]
                }
            },
            "vendor": {"acme": {"agent": {"version": "4.2", "flags": {"beta": False}}}},
        },
        "Errors": [
            {
                "StatusItem": "diskmanagement.filevault.enabled",
                "Reasons": [{"Code": "Error.NotAvailable", "Description": "not supported"}],
            }
        ],
    }


def partial_report() -> dict[str, Any]:
    """The same Mac after installing 26.3.1 (a): only the changed items."""
    return {
        "StatusItems": {
            "device": {
                "operating-system": {
                    "supplemental": {"build-version": "25D771280a", "extra-version": "(a)"}
                }
            },
            "softwareupdate": {
                "pending-version": {"os-version": "", "build-version": ""},
                "install-state": "none",
            },
            "app": {
                "managed": {
                    "list": [
                        {"identifier": "com.example.notes", "_removed": True},
                        {"identifier": "com.example.vpn", "state": "updating"},
                    ]
                }
            },
            "vendor": {"acme": {"agent": {"version": "4.3"}}},
        },
        "Errors": [],
    }


def test_a_merge_checks_the_reports_items_even_of_a_report_built_without_parsing() -> None:
    """The items a state keeps from an earlier one are not checked again (they were when
    it was built); a report's are, wherever the report came from."""
    first = merge_status(None, parse_status_report(full_report()))
    unparsed = StatusReport(items={"device.operating-system.version": 26})
    with pytest.raises(InvalidStatusReport, match=r"device\.operating-system\.version"):
        merge_status(first, unparsed)
    with pytest.raises(InvalidStatusReport, match=r"device\.operating-system\.version"):
        merge_status(None, unparsed)
    kept = merge_status(first, StatusReport(items={"vendor.acme.agent.version": "4.4"}))
    assert kept.build == first.build
    assert kept.items["vendor.acme.agent.version"] == "4.4"


def test_a_value_that_passed_its_check_does_not_pass_an_equal_value_of_another_type() -> None:
    """Checks of short values are remembered, by the value's type too: JSON's true and 1
    are equal in Python, and a number is never a boolean item."""
    first = merge_status(None, parse_status_report(full_report()))
    restart = "bsi.agent.restart-pending"
    passed = StatusReport(items={restart: True})
    assert merge_status(first, passed).restart_pending is True
    for again in (1, 1.0):
        with pytest.raises(InvalidStatusReport, match=restart):
            merge_status(first, StatusReport(items={restart: again}))
    with pytest.raises(InvalidStatusReport, match=restart):  # and a refusal is not remembered
        merge_status(first, StatusReport(items={restart: 1}))
    version = "device.operating-system.version"
    too_long = StatusReport(items={version: "26.x" + "1" * 200})  # checked each time, alike
    for _ in range(2):
        with pytest.raises(InvalidStatusReport, match=version):
            merge_status(first, too_long)


def test_full_report_gives_typed_state() -> None:
    state = merge_status(None, parse_status_report(full_report()))

    assert state.platform == "macOS"
    assert state.product_version == ProductVersion.parse("26.3.1")
    assert state.build == Build.parse("25D2128")
    assert state.supplemental_build is None
    assert state.supplemental_extra is None
    assert state.model_identifier == "Mac14,2"
    assert state.model_family == "Mac"
    assert state.model_marketing_name == "MacBook Air (M2, 2022)"
    assert state.serial_number == "C02XK1ZQJG5H"
    assert state.udid == "00008112-001A2C3E0E91401E"
    assert state.software_update_device_id == "J413AP"
    assert state.install_state == "none"
    assert state.pending_os_version is None
    assert state.pending_build_version is None
    assert state.failure_reason == {"count": 0}
    assert state.battery_health == "normal"
    assert state.items["vendor.acme.agent.version"] == "4.2"
    assert state.errors[0]["StatusItem"] == "diskmanagement.filevault.enabled"


def test_dictionary_and_array_items_stay_whole() -> None:
    items = parse_status_report(full_report()).items

    assert items["softwareupdate.pending-version"] == {"os-version": "", "build-version": ""}
    assert items["management.declarations"]["activations"][0]["server-token"] == "7c1f"  # type: ignore[index]
    assert "management.declarations.activations" not in items
    assert "device.operating-system.supplemental.build-version" in items


def test_partial_report_changes_only_what_it_carries() -> None:
    first = merge_status(None, parse_status_report(full_report()))
    state = merge_status(first, parse_status_report(partial_report()))

    assert state.supplemental_build == Build.parse("25D771280a")
    assert state.supplemental_extra == ExtraVersion.parse("(a)")
    assert state.build == first.build
    assert state.serial_number == first.serial_number
    assert state.items["vendor.acme.agent.version"] == "4.3"
    assert state.items["vendor.acme.agent.flags.beta"] is False
    assert state.errors == first.errors
    assert state.items["app.managed.list"] == [
        {"identifier": "com.example.vpn", "state": "updating"}
    ]
    assert first.supplemental_build is None, "merging must not change the earlier state"


def test_facts_follow_the_state() -> None:
    first = merge_status(None, parse_status_report(full_report()))
    facts = merge_status(first, parse_status_report(partial_report())).facts()

    assert facts.platform == "macOS"
    assert str(facts.product_version) == "26.3.1"
    assert str(facts.build) == "25D2128"
    assert str(facts.supplemental_build) == "25D771280a"
    assert str(facts.supplemental_extra) == "(a)"
    assert facts.model_identifier == "Mac14,2"
    assert facts.software_update_device_id == "J413AP"
    assert facts.on_battery is None
    assert facts.battery_percent is None


def test_facts_name_the_missing_item() -> None:
    state = merge_status(None, parse_status_report({"StatusItems": {"device": {}}}))
    with pytest.raises(InvalidStatusReport, match=r"device\.operating-system\.family"):
        state.facts()


def test_state_round_trips_through_a_full_report() -> None:
    first = merge_status(None, parse_status_report(full_report()))
    state = merge_status(first, parse_status_report(partial_report()))

    report = json.loads(json.dumps(state_to_report(state)))
    assert report["FullReport"] is True
    assert report["StatusItems"]["vendor"]["acme"]["agent"] == {
        "version": "4.3",
        "flags": {"beta": False},
    }
    assert report["Errors"] == full_report()["Errors"]
    assert merge_status(None, parse_status_report(report)) == state
    assert merge_status(first, parse_status_report(report)) == state


def test_full_report_replaces_the_state() -> None:
    first = merge_status(None, parse_status_report(full_report()))
    safety_sync = {"StatusItems": {"device": {"model": {"family": "Mac"}}}, "FullReport": True}
    state = merge_status(first, parse_status_report(safety_sync))

    assert state.items == {"device.model.family": "Mac"}
    assert state.errors == ()


def test_a_value_settles_an_earlier_error_about_it() -> None:
    first = merge_status(None, parse_status_report(full_report()))
    later = {"StatusItems": {"diskmanagement": {"filevault": {"enabled": True}}}}
    state = merge_status(first, parse_status_report(later))

    assert state.errors == ()
    assert state.items["diskmanagement.filevault.enabled"] is True


def test_a_later_value_replaces_whatever_sat_at_its_path() -> None:
    first = merge_status(None, parse_status_report({"StatusItems": {"x": {"y": {"z": 1}}}}))
    state = merge_status(first, parse_status_report({"StatusItems": {"x": {"y": 2}}}))
    assert state.items == {"x.y": 2}
    state = merge_status(state, parse_status_report({"StatusItems": {"x": {"y": {"w": 3}}}}))
    assert state.items == {"x.y.w": 3}
    assert state_to_report(state)["StatusItems"] == {"x": {"y": {"w": 3}}}


def test_state_does_not_share_the_report_objects() -> None:
    raw = full_report()
    state = merge_status(None, parse_status_report(raw))
    raw["StatusItems"]["softwareupdate"]["failure-reason"]["count"] = 5
    assert state.failure_reason == {"count": 0}


_MALFORMED: list[tuple[object, str]] = [
    ([], "status report"),
    ({"Errors": []}, "StatusItems"),
    ({"StatusItems": []}, "StatusItems"),
    ({"StatusItems": {}, "Errors": {}}, "Errors"),
    ({"StatusItems": {}, "Errors": [{"Reasons": []}]}, "StatusItem"),
    ({"StatusItems": {}, "FullReport": "yes"}, "FullReport"),
    (
        {"StatusItems": {"device": {"operating-system": {"build-version": "25d2128"}}}},
        "device.operating-system.build-version",
    ),
    (
        {"StatusItems": {"device": {"operating-system": {"build-version": ""}}}},
        "device.operating-system.build-version",
    ),
    (
        {"StatusItems": {"device": {"operating-system": {"version": "26.3.1 (A)"}}}},
        "device.operating-system.version",
    ),
    (
        {
            "StatusItems": {
                "device": {"operating-system": {"supplemental": {"extra-version": "(A)"}}}
            }
        },
        "device.operating-system.supplemental.extra-version",
    ),
    (
        {"StatusItems": {"device": {"operating-system": {"supplemental": {"build-version": "x"}}}}},
        "device.operating-system.supplemental.build-version",
    ),
    ({"StatusItems": {"device": {"model": {"identifier": 14}}}}, "device.model.identifier"),
    (
        {"StatusItems": {"device": {"operating-system": {"family": ["macOS"]}}}},
        "device.operating-system.family",
    ),
    ({"StatusItems": {"softwareupdate": {"install-state": None}}}, "install-state"),
    (
        {"StatusItems": {"softwareupdate": {"pending-version": "26.4"}}},
        "softwareupdate.pending-version",
    ),
    (
        {"StatusItems": {"softwareupdate": {"pending-version": {"build-version": "26.4"}}}},
        "softwareupdate.pending-version.build-version",
    ),
    (
        {"StatusItems": {"softwareupdate": {"failure-reason": {"count": True}}}},
        "softwareupdate.failure-reason",
    ),
    ({"StatusItems": {"passcode": {"is-present": "true"}}}, "passcode.is-present"),
    ({"StatusItems": {"app": {"managed": {"list": [{"name": "x"}]}}}}, "app.managed.list"),
    ({"StatusItems": {"device.model": {"family": "Mac"}}}, "device.model"),
]
_STRUCTURAL = 4  # the first four are no status report at all


@pytest.mark.parametrize(
    ("report", "named"),
    [*_MALFORMED[:_STRUCTURAL], ({"StatusItems": {}, "FullReport": "yes"}, "FullReport")],
)
def test_what_is_no_status_report_at_all_is_refused(report: object, named: str) -> None:
    with pytest.raises(InvalidStatusReport) as refused:
        parse_status_report(report)
    assert named in str(refused.value)


@pytest.mark.parametrize(
    ("report", "named"),
    [case for case in _MALFORMED[_STRUCTURAL:] if "FullReport" not in case[1]],
)
def test_a_bad_item_is_recorded_with_path_and_reason_not_kept(report: object, named: str) -> None:
    assert isinstance(report, dict)
    good = {"family": "macOS", "version": "26.3.1", "build-version": "25D2128"}
    with_good = {**report, "StatusItems": {**report["StatusItems"], "good": {"os": good}}}
    parsed = parse_status_report(with_good)
    (finding,) = parsed.invalid
    assert named in finding["path"] + " " + finding["reason"]
    assert parsed.items == {f"good.os.{key}": value for key, value in good.items()}


def test_bad_value_is_quoted() -> None:
    report = {"StatusItems": {"device": {"operating-system": {"build-version": "25d2128"}}}}
    (finding,) = parse_status_report(report).invalid
    assert finding["path"] == "device.operating-system.build-version"
    assert "'25d2128'" in finding["reason"]


def test_unknown_and_out_of_range_values_are_kept() -> None:
    report = {
        "StatusItems": {
            "softwareupdate": {"install-state": "waiting"},
            "future": {"item": {"nested": [1, 2.5, None, "x"]}},
        }
    }
    items = parse_status_report(report).items
    assert items["softwareupdate.install-state"] == "waiting"
    assert items["future.item.nested"] == [1, 2.5, None, "x"]


def _apple_status_items(root: Path) -> dict[str, str]:
    """Apple's status item names with their ``type``, read from its YAML."""
    items: dict[str, str] = {}
    for path in sorted(root.glob("*.yaml")):
        schema = yaml.safe_load(path.read_text(encoding="utf-8"))
        name = schema["payload"].get("statusitemtype")
        if name is None:  # statusreason.yaml describes errors, not an item
            continue
        assert path.name == f"{name}.yaml"
        (key,) = schema["payloadkeys"]
        assert key["key"] == name
        items[name] = key["type"]
    return items


def test_modelled_items_match_apples_schema(shared_data: Path) -> None:
    apple = _apple_status_items(shared_data / "apple-device-management" / "declarative" / "status")
    assert apple, "no status items found in Apple's schema"
    for name, item_type in STATUS_ITEMS.items():
        if name.startswith("bsi."):
            continue  # bsi's own items (the Linux agent's), outside Apple's namespaces
        assert name in apple, f"{name} is not an Apple status item"
        assert item_type.value == apple[name], name


def test_apple_item_names_never_contain_one_another(shared_data: Path) -> None:
    """Flattening stops at the first known name, so no item may sit inside another."""
    apple = _apple_status_items(shared_data / "apple-device-management" / "declarative" / "status")
    for name in apple:
        assert not any(other.startswith(name + ".") for other in apple), name


def test_apple_list_items_carry_identifier_and_removed(shared_data: Path) -> None:
    """The entry-by-entry merge relies on ``identifier`` and ``_removed`` in every list item."""
    root = shared_data / "apple-device-management" / "declarative" / "status"
    for name, item_type in STATUS_ITEMS.items():
        if item_type.value != "<array>":
            continue
        schema = yaml.safe_load((root / f"{name}.yaml").read_text(encoding="utf-8"))
        (entry,) = schema["payloadkeys"][0]["subkeys"]
        keys = {sub["key"] for sub in entry["subkeys"]}
        assert {"identifier", "_removed"} <= keys, name


def test_known_item_names_stop_descent() -> None:
    tree = {"softwareupdate": {"pending-version": {"os-version": "26.4", "build-version": ""}}}
    flat = flatten_status_items(tree)
    assert flat == {"softwareupdate.pending-version": tree["softwareupdate"]["pending-version"]}
    assert nest_status_items(flat) == tree


def test_overlapping_names_do_not_nest() -> None:
    with pytest.raises(InvalidStatusReport, match=r"device\.model"):
        nest_status_items({"device.model": "x", "device.model.family": "Mac"})


_KEYS = st.text(max_size=8).filter(lambda key: "." not in key)
_LEAVES = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
_JSON = st.recursive(
    _LEAVES,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_KEYS, children, max_size=4),
    max_leaves=20,
)
# Known names appear as keys too, so descent stopping at an item is exercised.
_NAME_PARTS = sorted({part for name in STATUS_ITEMS for part in name.split(".")})
_TREE_KEYS = _KEYS | st.sampled_from(_NAME_PARTS)
_TREES = st.recursive(
    st.dictionaries(_TREE_KEYS, _JSON, max_size=3),
    lambda children: st.dictionaries(_TREE_KEYS, children | _JSON, max_size=4),
    max_leaves=30,
)


@given(_TREES)
def test_nest_undoes_flatten(tree: dict[str, object]) -> None:
    original = copy.deepcopy(tree)
    assert nest_status_items(flatten_status_items(tree)) == original


@given(st.dictionaries(_KEYS, st.dictionaries(st.text(max_size=4), _LEAVES), max_size=4))
def test_dotted_keys_below_the_top_stay_inside_their_parent(tree: dict[str, object]) -> None:
    assert nest_status_items(flatten_status_items(tree)) == tree


def test_device_state_refuses_bad_items_directly() -> None:
    with pytest.raises(InvalidStatusReport, match=r"device\.operating-system\.version"):
        DeviceState(items={"device.operating-system.version": "twenty-six"})
