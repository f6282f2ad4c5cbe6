"""DeclarationStore conformance: declarations, groups and assignments, on both databases."""

from __future__ import annotations

import pytest
from store_facts import LATER, NOW

from bsi.domain.declarations import software_update_settings
from bsi.errors import NotFound
from bsi.store.protocols import DeclarationStore


def test_declarations_are_stored_assigned_and_replaced(declarations: DeclarationStore) -> None:
    lab = declarations.ensure_group("lab", NOW)
    assert declarations.ensure_group("lab", LATER) == lab  # known: the same group
    assert sorted(declarations.groups().values()) == ["default", "lab"]
    settings = software_update_settings("bsi-off", install_security_update="AlwaysOff")
    assert declarations.put_declaration(settings, NOW)
    assert not declarations.put_declaration(settings, NOW)  # same content: nothing changed
    declarations.assign("bsi-off", "lab", assigned=True)
    declarations.assign("bsi-off", "lab", assigned=True)  # idempotent
    assert declarations.group_declarations(declarations.group_id("lab")) == [settings]
    assert declarations.group_declarations(declarations.group_id("default")) == []
    changed = software_update_settings("bsi-off", install_security_update="AlwaysOn")
    assert declarations.put_declaration(changed, LATER)
    assert declarations.declarations() == [(changed, ["lab"])]
    declarations.assign("bsi-off", "lab", assigned=False)
    declarations.assign("bsi-off", "lab", assigned=False)  # idempotent
    assert declarations.group_declarations(declarations.group_id("lab")) == []
    declarations.assign("bsi-off", "lab", assigned=True)
    declarations.delete_declaration("bsi-off")  # its assignments go with it
    assert declarations.group_declarations(lab) == []
    with pytest.raises(NotFound):
        declarations.delete_declaration("bsi-off")


def test_unknown_groups_and_declarations_are_not_found(declarations: DeclarationStore) -> None:
    declarations.put_declaration(software_update_settings("bsi-on"), NOW)
    with pytest.raises(NotFound, match="no device group 'nowhere'"):
        declarations.assign("bsi-on", "nowhere", assigned=True)
    with pytest.raises(NotFound, match="no declaration"):
        declarations.assign("nothing", "default", assigned=True)
    with pytest.raises(NotFound):
        declarations.group_id("nowhere")


def test_a_served_set_changes_only_with_its_token(declarations: DeclarationStore) -> None:
    assert declarations.sync_changed_at("group:1:system", "t1", NOW) == NOW
    assert declarations.sync_changed_at("group:1:system", "t1", LATER) == NOW
    assert declarations.sync_changed_at("group:1:system", "t2", LATER) == LATER
    assert declarations.sync_changed_at("group:1:user", "t1", LATER) == LATER
