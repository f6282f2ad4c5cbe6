"""What a device is served: subscriptions per OS and capability, scopes, enrollment ids."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bsi.domain.ddm import (
    _INTRODUCED,
    BASELINE_STATUS_ITEMS,
    BSI_STATUS_ITEMS,
    check_enrollment_id,
    declaration_set,
    subscription_items,
)
from bsi.domain.declarations import (
    STATUS_SUBSCRIPTIONS,
    USER,
    software_update_settings,
    status_subscriptions,
    subscribed_status_items,
)
from bsi.domain.status import supported_status_items
from bsi.domain.versions import ProductVersion
from bsi.errors import InvalidInput


def test_introduced_versions_are_apples(shared_data: Path) -> None:
    root = shared_data / "apple-device-management" / "declarative" / "status"
    for name, since in _INTRODUCED.items():
        schema = yaml.safe_load((root / f"{name}.yaml").read_text(encoding="utf-8"))
        apple = schema["payload"]["supportedOS"]
        assert since == {os: apple[os]["introduced"] for os in since}, name


def test_an_unknown_device_is_asked_only_what_every_ddm_os_reports() -> None:
    assert subscription_items(None, None) == BASELINE_STATUS_ITEMS
    assert "device.operating-system.build-version" in BASELINE_STATUS_ITEMS
    assert "softwareupdate.install-state" not in BASELINE_STATUS_ITEMS
    assert "device.operating-system.supplemental.build-version" not in BASELINE_STATUS_ITEMS


@pytest.mark.parametrize(
    ("platform", "version", "has", "lacks"),
    [
        ("macOS", "13.5", "device.identifier.udid", "softwareupdate.install-state"),
        ("macOS", "14.6", "softwareupdate.install-state", "softwareupdate.device-id"),
        ("macOS", "26.3.1", "softwareupdate.device-id", None),
        (
            "iOS",
            "16.0",
            "device.identifier.udid",
            "device.operating-system.supplemental.build-version",
        ),
        ("iPadOS", "17.4", "softwareupdate.pending-version", "softwareupdate.device-id"),
    ],
)
def test_the_os_version_picks_the_items_it_has(
    platform: str, version: str, has: str, lacks: str | None
) -> None:
    items = subscription_items(platform, ProductVersion.parse(version))
    assert has in items
    if lacks is None:
        assert items == BSI_STATUS_ITEMS
    else:
        assert lacks not in items


def test_client_capabilities_win_over_the_version() -> None:
    capabilities = {
        "management.client-capabilities": {
            "supported-versions": ["1.0.0"],
            "supported-features": {},
            "supported-payloads": {
                "declarations": {},
                "status-items": ["device.operating-system.version", "softwareupdate.device-id"],
            },
        }
    }
    supported = supported_status_items(capabilities)
    assert supported is not None
    items = subscription_items("macOS", ProductVersion(13), supported)
    assert items == ("device.operating-system.version", "softwareupdate.device-id")
    assert supported_status_items({}) is None
    assert supported_status_items({"management.client-capabilities": {"x": 1}}) is None


def test_the_served_subscription_is_the_devices_and_changes_the_token() -> None:
    full = declaration_set("g", [])
    baseline = declaration_set("g", [], items=BASELINE_STATUS_ITEMS)
    assert full.token != baseline.token
    (subscription,) = [d for d in baseline.declarations if d.type == STATUS_SUBSCRIPTIONS]
    assert subscribed_status_items([subscription]) == list(BASELINE_STATUS_ITEMS)


def test_a_user_channel_is_served_user_scope_declarations_only() -> None:
    settings = software_update_settings("sus", rsr_enable=False)
    accounts = status_subscriptions("accounts", ["account.list.mail.incoming"])
    served = declaration_set("g", [settings, accounts], USER)
    assert {d.identifier for d in served.declarations} == {"accounts", "bsi.activation.g.user"}
    assert declaration_set("g", [settings], USER).declarations == ()


@pytest.mark.parametrize("length", [1, 73, 86, 255])
def test_enrollment_ids_of_real_lengths_are_accepted(length: int) -> None:
    assert check_enrollment_id("x" * length) == "x" * length


@pytest.mark.parametrize("bad", ["", "x" * 256, "a\nb", "a\x00b", "a\x7fb", "a\x85b"])
def test_enrollment_ids_out_of_range_or_with_control_characters_are_refused(bad: str) -> None:
    with pytest.raises(InvalidInput):
        check_enrollment_id(bad)
