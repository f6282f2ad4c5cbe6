"""Declarations: bsi's key table agrees with Apple's YAML, and what bsi emits is valid.

Conformance and builder tests check bsi against :mod:`apple_schema`, an
independent reader of Apple's YAML, so a mistake in bsi's table cannot hide
behind the same mistake in its validator.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

import apple_schema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bsi.domain.declarations import (
    ACTIVATION_SIMPLE,
    BASE_KEYS,
    DECLARATION_TYPES,
    ENFORCEMENT_SPECIFIC,
    SOFTWARE_UPDATE_SETTINGS,
    STATUS_SUBSCRIPTIONS,
    Declaration,
    KeySpec,
    _combine_values,
    activation_simple,
    combine_payloads,
    declaration_from_admin,
    effective_policy,
    enforcement_specific,
    server_token,
    software_update_settings,
    status_subscriptions,
    subscribed_status_items,
    validate_declaration,
)
from bsi.domain.policy import Enforcement, InstallSecurityUpdate, SoftwareUpdatePolicy
from bsi.errors import InvalidDeclaration

DEADLINE = datetime(2026, 3, 1, 18, 0)
MODES = ["Allowed", "AlwaysOn", "AlwaysOff"]


def summary(spec: KeySpec) -> dict[str, Any]:
    """bsi's key in the shape :func:`apple_schema.summary` gives Apple's."""
    return {
        "key": spec.key,
        "type": spec.type,
        "presence": spec.presence,
        "default": spec.default,
        "rangelist": list(spec.rangelist),
        "min": spec.min,
        "max": spec.max,
        "combinetype": spec.combinetype,
        "subkeys": [summary(child) for child in spec.subkeys],
    }


# --- conformance with Apple's YAML ----------------------------------------------------------


def test_bsi_implements_exactly_the_four_types() -> None:
    assert set(DECLARATION_TYPES) == set(apple_schema.FILES)


@pytest.mark.parametrize("declaration_type", sorted(apple_schema.FILES))
def test_payload_table_equals_apple_yaml(declaration_type: str) -> None:
    apple = apple_schema.schema(declaration_type)
    ours = DECLARATION_TYPES[declaration_type]
    assert [summary(k) for k in ours.payload.subkeys] == [
        apple_schema.summary(node) for node in apple["payloadkeys"]
    ]
    assert ours.apply == apple["payload"].get("apply")


def test_base_keys_equal_declarationbase_yaml() -> None:
    apple = apple_schema.load(apple_schema.BASE)["payloadkeys"]
    assert [summary(k) for k in BASE_KEYS] == [apple_schema.summary(node) for node in apple]
    # The 64-octet limit lives in Apple's prose, not in a YAML field.
    for spec, node in zip(BASE_KEYS, apple, strict=True):
        assert (spec.max_octets == 64) == ("should not exceed 64 octets" in node["content"])


@pytest.mark.parametrize("relative", [*sorted(apple_schema.FILES.values()), apple_schema.BASE])
def test_apple_yaml_uses_no_rule_the_comparison_ignores(relative: str) -> None:
    known = apple_schema.SEMANTIC | apple_schema.DESCRIPTIVE
    for node in apple_schema.walk(apple_schema.load(relative)["payloadkeys"]):
        assert set(node) <= known, f"{node['key']} has new attributes {set(node) - known}"


def test_policy_defaults_are_apples_defaults() -> None:
    nodes = {
        node["key"]: node
        for node in apple_schema.walk(apple_schema.schema(SOFTWARE_UPDATE_SETTINGS)["payloadkeys"])
    }
    unmanaged = SoftwareUpdatePolicy()
    assert unmanaged.install_security_update == nodes["InstallSecurityUpdate"]["default"]
    assert unmanaged.rapid_security_response_enable is nodes["Enable"]["default"]
    assert unmanaged.rapid_security_response_enable_rollback is nodes["EnableRollback"]["default"]
    assert [m.value for m in InstallSecurityUpdate] == nodes["InstallSecurityUpdate"]["rangelist"]


# --- builders -------------------------------------------------------------------------------

BUILT = {
    "settings-empty": lambda: software_update_settings("sus-empty"),
    "settings-bsi": lambda: software_update_settings(
        "sus-bsi",
        install_security_update=InstallSecurityUpdate.ALWAYS_ON,
        rsr_enable=False,
        rsr_enable_rollback=False,
    ),
    "settings-all": lambda: software_update_settings(
        "sus-all",
        install_security_update="AlwaysOff",
        rsr_enable=True,
        rsr_enable_rollback=True,
        download="AlwaysOn",
        install_os_updates="Allowed",
        notifications=False,
        major_deferral_days=90,
        minor_deferral_days=1,
        system_deferral_days=30,
    ),
    "enforcement-minimal": lambda: enforcement_specific("enf-1", "26.3.1", DEADLINE),
    "enforcement-full": lambda: enforcement_specific(
        "enf-2",
        "26.3.1",
        datetime(2026, 3, 1, 18, 0, 59, 123456),
        target_build_version="25D771280a",
        details_url="https://example.org/bsi/26.3.1a",
    ),
    "activation": lambda: activation_simple("act-1", ["sus-bsi", "enf-1"]),
    "activation-predicate": lambda: activation_simple(
        "act-2", ["sus-bsi"], predicate="@status(device.model.family) == 'Mac'"
    ),
    "activation-empty": lambda: activation_simple("act-3", []),
    "subscriptions": lambda: status_subscriptions(
        "subs-1",
        [
            "device.operating-system.supplemental.extra-version",
            "device.operating-system.supplemental.build-version",
            "softwareupdate.install-state",
            "softwareupdate.install-state",
        ],
    ),
}


@pytest.mark.parametrize("name", BUILT)
def test_builder_output_validates_against_apple_yaml_and_bsi(name: str) -> None:
    declaration = BUILT[name]()
    document = declaration.to_json()
    assert apple_schema.problems(document) == []
    assert validate_declaration(document) == declaration


settings_options = st.fixed_dictionaries(
    {},
    optional={
        "install_security_update": st.sampled_from(MODES),
        "rsr_enable": st.booleans(),
        "rsr_enable_rollback": st.booleans(),
        "download": st.sampled_from(MODES),
        "install_os_updates": st.sampled_from(MODES),
        "notifications": st.booleans(),
        "major_deferral_days": st.integers(1, 90),
        "minor_deferral_days": st.integers(1, 90),
        "system_deferral_days": st.integers(1, 90),
    },
)


@given(settings_options)
def test_any_settings_builder_output_is_valid(options: dict[str, Any]) -> None:
    document = software_update_settings("sus", **options).to_json()
    assert apple_schema.problems(document) == []


def test_builders_leave_unset_options_out() -> None:
    assert BUILT["settings-empty"]().payload == {}
    assert BUILT["settings-bsi"]().payload == {
        "AutomaticActions": {"InstallSecurityUpdate": "AlwaysOn"},
        "RapidSecurityResponse": {"Enable": False, "EnableRollback": False},
    }
    assert "Predicate" not in BUILT["activation"]().payload
    assert BUILT["subscriptions"]().payload["StatusItems"][-1] == {
        "Name": "softwareupdate.install-state"
    }


def test_builder_refuses_what_apple_refuses() -> None:
    with pytest.raises(InvalidDeclaration) as caught:
        software_update_settings("sus", minor_deferral_days=120)
    assert caught.value.rule == "range"
    assert caught.value.path == "Payload.Deferrals.MinorPeriodInDays"


def test_enforcement_deadline_is_naive_local_time_to_the_second() -> None:
    declaration = BUILT["enforcement-full"]()
    assert declaration.payload["TargetLocalDateTime"] == "2026-03-01T18:00:59"
    with pytest.raises(InvalidDeclaration) as caught:
        enforcement_specific("enf", "26.3.1", DEADLINE.replace(tzinfo=UTC))
    assert (caught.value.path, caught.value.rule) == ("Payload.TargetLocalDateTime", "format")
    assert "2026-03-01T18:00:00+00:00" in str(caught.value)


@pytest.mark.parametrize("declaration_type", sorted(apple_schema.FILES))
def test_scopes_equal_apples_allowed_scopes(declaration_type: str) -> None:
    assert set(DECLARATION_TYPES[declaration_type].scopes) == apple_schema.allowed_scopes(
        declaration_type
    )


@pytest.mark.parametrize(
    ("identifier", "named"),
    [
        ("a/b", "slash"),
        ("a?b", "question mark"),
        ("a#b", "hash"),
        ("a%41", "percent sign"),
        ("a\tb", "U+0009"),
        ("a\x7fb", "U+007F"),
        ("..", "dot segment"),
        (".", "dot segment"),
    ],
)
def test_identifiers_nanomdm_cannot_forward_are_refused_by_name(
    identifier: str, named: str
) -> None:
    with pytest.raises(InvalidDeclaration) as caught:
        software_update_settings(identifier, rsr_enable=True)
    assert (caught.value.path, caught.value.rule) == ("Identifier", "format")
    assert named in caught.value.message


def test_identifiers_that_survive_url_resolution_are_accepted() -> None:
    for identifier in ("com.example.bsi", "a b", "résumé", "a;b", "a..b", "_-~"):
        assert software_update_settings(identifier, rsr_enable=True).identifier == identifier


def test_an_admins_server_token_is_replaced_by_one_over_the_content() -> None:
    built = software_update_settings("sus", rsr_enable=False)
    mine = {**built.to_json(), "ServerToken": "my-own-token"}
    assert declaration_from_admin(mine).server_token == built.server_token
    changed = {**mine, "Payload": {"RapidSecurityResponse": {"Enable": True}}}
    assert declaration_from_admin(changed).server_token != built.server_token
    without = {k: v for k, v in built.to_json().items() if k != "ServerToken"}
    assert declaration_from_admin(without) == built
    with pytest.raises(InvalidDeclaration):
        declaration_from_admin({**without, "Payload": []})


def test_server_token_follows_the_content() -> None:
    first = software_update_settings("sus", rsr_enable=False)
    assert software_update_settings("sus", rsr_enable=False).server_token == first.server_token
    assert software_update_settings("sus", rsr_enable=True).server_token != first.server_token
    assert software_update_settings("other", rsr_enable=False).server_token != first.server_token
    assert first.server_token == server_token(first.type, first.identifier, first.payload)
    assert len(first.server_token) == 32
    assert int(first.server_token, 16) >= 0


def test_declaration_is_hashable_and_hands_out_copies() -> None:
    declaration = BUILT["settings-bsi"]()
    assert len({declaration, BUILT["settings-bsi"]()}) == 1
    declaration.to_json()["Payload"]["RapidSecurityResponse"]["Enable"] = True
    assert declaration.payload["RapidSecurityResponse"]["Enable"] is False


# --- refusals -------------------------------------------------------------------------------


def settings_document(**payload: Any) -> dict[str, Any]:
    return {
        "Type": SOFTWARE_UPDATE_SETTINGS,
        "Identifier": "sus",
        "ServerToken": "t1",
        "Payload": payload,
    }


def enforcement_document(**payload: Any) -> dict[str, Any]:
    base = {"TargetOSVersion": "26.3.1", "TargetLocalDateTime": "2026-03-01T18:00:00"}
    return {
        "Type": ENFORCEMENT_SPECIFIC,
        "Identifier": "enf",
        "ServerToken": "t1",
        "Payload": {k: v for k, v in {**base, **payload}.items() if v is not None},
    }


# (document, path, rule, text the message must quote, also refused by Apple's YAML?)
REFUSALS: dict[str, tuple[object, str, str, str, bool]] = {
    "type-bool-for-int": (
        settings_document(RapidSecurityResponse={"Enable": 1}),
        "Payload.RapidSecurityResponse.Enable",
        "type",
        "1",
        True,
    ),
    "type-bool-is-not-int": (
        settings_document(Deferrals={"MinorPeriodInDays": True}),
        "Payload.Deferrals.MinorPeriodInDays",
        "type",
        "True",
        True,
    ),
    "type-not-a-dictionary": (["Type"], "Declaration", "type", "['Type']", True),
    "type-of-type": ({**settings_document(), "Type": 7}, "Type", "type", "7", True),
    "presence-payload-key": (
        enforcement_document(TargetOSVersion=None),
        "Payload.TargetOSVersion",
        "presence",
        "'TargetOSVersion'",
        True,
    ),
    "presence-base-key": (
        {k: v for k, v in settings_document().items() if k != "ServerToken"},
        "ServerToken",
        "presence",
        "'ServerToken'",
        True,
    ),
    "presence-in-array-item": (
        {
            "Type": STATUS_SUBSCRIPTIONS,
            "Identifier": "subs",
            "ServerToken": "t1",
            "Payload": {"StatusItems": [{"Name": "softwareupdate.install-state"}, {}]},
        },
        "Payload.StatusItems[1].Name",
        "presence",
        "'Name'",
        True,
    ),
    "rangelist": (
        settings_document(AutomaticActions={"InstallSecurityUpdate": "Sometimes"}),
        "Payload.AutomaticActions.InstallSecurityUpdate",
        "rangelist",
        "'Sometimes'",
        True,
    ),
    "range-above": (
        settings_document(Deferrals={"MajorPeriodInDays": 91}),
        "Payload.Deferrals.MajorPeriodInDays",
        "range",
        "91",
        True,
    ),
    "range-below": (
        settings_document(Deferrals={"SystemPeriodInDays": 0}),
        "Payload.Deferrals.SystemPeriodInDays",
        "range",
        "0",
        True,
    ),
    "unknown-payload-key": (
        settings_document(RapidSecurityResponse={"Enable": True, "AutoApply": True}),
        "Payload.RapidSecurityResponse.AutoApply",
        "unknown-key",
        "'AutoApply'",
        True,
    ),
    "unknown-base-key": (
        {**settings_document(), "Comment": "x"},
        "Comment",
        "unknown-key",
        "'Comment'",
        True,
    ),
    "unknown-type": (
        {**settings_document(), "Type": "com.apple.configuration.passcode.settings"},
        "Type",
        "unknown-type",
        "'com.apple.configuration.passcode.settings'",
        True,
    ),
    "length-identifier": (
        {**settings_document(), "Identifier": "x" * 65},
        "Identifier",
        "length",
        "x" * 65,
        False,
    ),
    "length-counts-octets": (
        {**settings_document(), "ServerToken": "é" * 33},
        "ServerToken",
        "length",
        "é" * 33,
        False,
    ),
    "format-zone": (
        enforcement_document(TargetLocalDateTime="2026-03-01T18:00:00Z"),
        "Payload.TargetLocalDateTime",
        "format",
        "'2026-03-01T18:00:00Z'",
        False,
    ),
    "format-space": (
        enforcement_document(TargetLocalDateTime="2026-03-01 18:00:00"),
        "Payload.TargetLocalDateTime",
        "format",
        "'2026-03-01 18:00:00'",
        False,
    ),
    "format-impossible-date": (
        enforcement_document(TargetLocalDateTime="2026-02-30T18:00:00"),
        "Payload.TargetLocalDateTime",
        "format",
        "'2026-02-30T18:00:00'",
        False,
    ),
}


@pytest.mark.parametrize("name", REFUSALS)
def test_refusal_names_path_rule_and_value(name: str) -> None:
    document, path, rule, quoted, apple_refuses = REFUSALS[name]
    with pytest.raises(InvalidDeclaration) as caught:
        validate_declaration(document)
    assert (caught.value.path, caught.value.rule) == (path, rule)
    assert quoted in caught.value.message
    if apple_refuses:
        assert apple_schema.problems(document) != []


def test_unknown_type_lists_the_supported_ones() -> None:
    document = REFUSALS["unknown-type"][0]
    with pytest.raises(InvalidDeclaration) as caught:
        validate_declaration(document)
    assert all(name in str(caught.value) for name in DECLARATION_TYPES)


def test_identifier_of_exactly_64_octets_is_accepted() -> None:
    validate_declaration({**settings_document(), "Identifier": "x" * 64})


# --- combining ------------------------------------------------------------------------------


def combined_settings(*payloads: dict[str, Any]) -> dict[str, Any]:
    return combine_payloads(SOFTWARE_UPDATE_SETTINGS, payloads)


@pytest.mark.parametrize("order", list(itertools.permutations(MODES)))
def test_enum_last_always_off_wins_in_any_order(order: tuple[str, ...]) -> None:
    payloads = [{"AutomaticActions": {"InstallSecurityUpdate": mode}} for mode in order]
    combined = combined_settings(*payloads)
    assert combined == {"AutomaticActions": {"InstallSecurityUpdate": "AlwaysOff"}}


def test_enum_last_always_on_beats_allowed() -> None:
    payloads = [{"AutomaticActions": {"Download": m}} for m in ("AlwaysOn", "Allowed")]
    assert combined_settings(*payloads)["AutomaticActions"]["Download"] == "AlwaysOn"


def test_boolean_and_one_false_turns_rapid_security_responses_off() -> None:
    on = {"RapidSecurityResponse": {"Enable": True}}
    off = {"RapidSecurityResponse": {"Enable": False}}
    assert combined_settings(on, on)["RapidSecurityResponse"]["Enable"] is True
    assert combined_settings(on, off, on)["RapidSecurityResponse"]["Enable"] is False


def test_number_max_takes_the_longest_deferral() -> None:
    payloads = [{"Deferrals": {"MinorPeriodInDays": d}} for d in (7, 30, 14)]
    assert combined_settings(*payloads) == {"Deferrals": {"MinorPeriodInDays": 30}}


def test_set_union_keeps_first_mention_order_without_duplicates() -> None:
    combined = combine_payloads(
        STATUS_SUBSCRIPTIONS,
        [
            {"StatusItems": [{"Name": "b"}, {"Name": "a"}]},
            {"StatusItems": [{"Name": "a"}, {"Name": "c"}]},
        ],
    )
    assert combined == {"StatusItems": [{"Name": "b"}, {"Name": "a"}, {"Name": "c"}]}


def test_first_keeps_the_first_declarations_value() -> None:
    first = {"Beta": {"RequireProgram": {"Description": "One", "Token": "t1"}}}
    second = {"Beta": {"RequireProgram": {"Description": "Two", "Token": "t2"}}}
    assert combined_settings(first, second) == first


def test_nested_dictionaries_combine_key_by_key_and_absent_keys_stay_absent() -> None:
    combined = combined_settings(
        {"AutomaticActions": {"Download": "AlwaysOn"}},
        {"AutomaticActions": {"InstallSecurityUpdate": "AlwaysOff"}, "Notifications": False},
        {},
    )
    assert combined == {
        "AutomaticActions": {"Download": "AlwaysOn", "InstallSecurityUpdate": "AlwaysOff"},
        "Notifications": False,
    }
    assert combined_settings() == {}
    assert combined_settings({}, {}) == {}


def test_rules_no_bsi_type_uses_still_follow_apple() -> None:
    assert _combine_values(KeySpec("k", "<boolean>", combinetype="boolean-or"), [False, True])
    assert _combine_values(KeySpec("k", "<integer>", combinetype="number-min"), [7, 3, 5]) == 3


def test_combining_refuses_types_apple_does_not_combine() -> None:
    with pytest.raises(ValueError, match="not combined"):
        combine_payloads(ENFORCEMENT_SPECIFIC, [])
    with pytest.raises(InvalidDeclaration) as caught:
        combine_payloads("com.example.unknown", [])
    assert caught.value.rule == "unknown-type"


@given(st.lists(settings_options, min_size=1, max_size=5), st.randoms())
def test_combining_settings_ignores_declaration_order(
    many: list[dict[str, Any]], random: Any
) -> None:
    payloads = [software_update_settings(f"sus-{i}", **o).payload for i, o in enumerate(many)]
    shuffled = payloads[:]
    random.shuffle(shuffled)
    assert combined_settings(*payloads) == combined_settings(*shuffled)
    assert apple_schema.problems(settings_document(**combined_settings(*payloads))) == []


@given(st.lists(st.lists(st.sampled_from("abcdef")), max_size=5), st.randoms())
def test_set_union_is_order_independent_as_a_set(groups: list[list[str]], random: Any) -> None:
    payloads = [{"StatusItems": [{"Name": n} for n in group]} for group in groups]
    shuffled = payloads[:]
    random.shuffle(shuffled)
    names = [
        [item["Name"] for item in combine_payloads(STATUS_SUBSCRIPTIONS, p).get("StatusItems", [])]
        for p in (payloads, shuffled)
    ]
    assert set(names[0]) == set(names[1]) == {n for group in groups for n in group}
    assert len(names[0]) == len(set(names[0]))


# --- effective policy -----------------------------------------------------------------------


def test_no_declarations_mean_apples_defaults() -> None:
    assert effective_policy([]) == SoftwareUpdatePolicy(
        install_security_update=InstallSecurityUpdate.ALLOWED,
        rapid_security_response_enable=True,
        rapid_security_response_enable_rollback=True,
        enforcements=(),
    )


def test_settings_combine_into_the_policy() -> None:
    policy = effective_policy(
        [
            software_update_settings("a", install_security_update="AlwaysOn", rsr_enable=True),
            software_update_settings("b", install_security_update="AlwaysOff", rsr_enable=False),
            software_update_settings("c", notifications=False),
        ]
    )
    assert policy.install_security_update is InstallSecurityUpdate.ALWAYS_OFF
    assert policy.rapid_security_response_enable is False
    assert policy.rapid_security_response_enable_rollback is True


def test_enforcements_are_collected_with_naive_deadlines() -> None:
    declarations: list[Declaration] = [
        BUILT["enforcement-full"](),
        activation_simple("act", ["enf-1", "enf-2"]),
        enforcement_specific("enf-1", "26.3", DEADLINE),
        status_subscriptions("subs", ["softwareupdate.install-state"]),
    ]
    policy = effective_policy(declarations)
    assert policy.enforcements == (
        Enforcement(
            target_os_version="26.3.1",
            deadline=datetime(2026, 3, 1, 18, 0, 59),
            target_build_version="25D771280a",
            details_url="https://example.org/bsi/26.3.1a",
            identifier="enf-2",
        ),
        Enforcement(target_os_version="26.3", deadline=DEADLINE, identifier="enf-1"),
    )
    assert all(e.deadline.tzinfo is None for e in policy.enforcements)
    assert policy.rapid_security_response_enable is True


def test_subscribed_status_items_union_every_subscription() -> None:
    declarations = [
        status_subscriptions(
            "s1", ["softwareupdate.install-state", "softwareupdate.failure-reason"]
        ),
        software_update_settings("sus"),
        status_subscriptions(
            "s2", ["softwareupdate.install-state", "softwareupdate.pending-version"]
        ),
    ]
    assert subscribed_status_items(declarations) == [
        "softwareupdate.install-state",
        "softwareupdate.failure-reason",
        "softwareupdate.pending-version",
    ]
    assert subscribed_status_items([]) == []


def test_activation_type_constant_names_apples_type() -> None:
    assert activation_simple("act", []).type == ACTIVATION_SIMPLE == "com.apple.activation.simple"
