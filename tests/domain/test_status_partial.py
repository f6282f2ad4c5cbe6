"""Partial acceptance: a report with bad items keeps the rest, and the bad ones are findings."""

from __future__ import annotations

from typing import Any

from bsi.domain.status import invalid_decision_items, merge_status, parse_status_report


def report(**items: Any) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for dotted, value in items.items():
        *parents, last = dotted.split("__")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return {"StatusItems": tree, "Errors": []}


GOOD_OS = {
    "device__operating-system__family": "macOS",
    "device__operating-system__version": "26.3.1",
    "device__operating-system__build-version": "25D2128",
}


def test_a_finding_lasts_until_a_valid_value_replaces_it() -> None:
    first = merge_status(
        None, parse_status_report(report(**GOOD_OS, **{"device__model__identifier": 14}))
    )
    assert [f["path"] for f in first.invalid] == ["device.model.identifier"]
    assert first.build is not None
    assert invalid_decision_items(first) == ["device.model.identifier"]

    unrelated = merge_status(first, parse_status_report(report(**{"passcode__is-present": True})))
    assert [f["path"] for f in unrelated.invalid] == ["device.model.identifier"]

    fixed = merge_status(
        unrelated, parse_status_report(report(**{"device__model__identifier": "Mac14,2"}))
    )
    assert fixed.invalid == ()
    assert invalid_decision_items(fixed) == []


def test_a_newer_bad_value_hides_the_older_good_one_from_decisions() -> None:
    good = merge_status(None, parse_status_report(report(**GOOD_OS)))
    bad_build = report(**{"device__operating-system__build-version": "not a build"})
    state = merge_status(good, parse_status_report(bad_build))
    assert str(state.build) == "25D2128"  # the old value is kept, but no longer trusted
    assert invalid_decision_items(state) == ["device.operating-system.build-version"]


def test_a_full_report_starts_the_findings_afresh() -> None:
    bad = report(**GOOD_OS, **{"passcode__is-present": "yes"})
    state = merge_status(None, parse_status_report(bad))
    assert [f["path"] for f in state.invalid] == ["passcode.is-present"]
    assert invalid_decision_items(state) == []  # not an item decisions read
    full = {**report(**GOOD_OS), "FullReport": True}
    assert merge_status(state, parse_status_report(full)).invalid == ()


def test_bad_error_entries_belong_to_their_report() -> None:
    body = {**report(**GOOD_OS), "Errors": ["not an object"]}
    state = merge_status(None, parse_status_report(body))
    assert [f["path"] for f in state.invalid] == ["Errors[0]"]
    later = merge_status(state, parse_status_report(report(**{"passcode__is-present": True})))
    assert later.invalid == ()
