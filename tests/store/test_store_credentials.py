"""CredentialStore conformance: enrollment tokens, API keys, device credentials and their
lifecycle, on both databases."""

from __future__ import annotations

from datetime import timedelta

import pytest
from store_facts import LATER, NOW

from bsi.errors import Conflict, EnrollmentRefused, InvalidInput, NotFound
from bsi.store.protocols import CredentialStore


def test_enrollment_spends_a_token_and_the_credential_finds_the_device(
    credentials: CredentialStore,
) -> None:
    token = credentials.create_enrollment_token("default", NOW + timedelta(days=1), 2, NOW)
    device_id, credential = credentials.enroll(token, NOW)
    identity = credentials.device_by_credential(credential)
    assert identity is not None
    assert identity.device_id == device_id
    assert credentials.device_by_credential("not-a-credential") is None
    credentials.enroll(token, NOW)
    with pytest.raises(EnrollmentRefused, match="used up"):
        credentials.enroll(token, NOW)


def test_expired_and_unknown_enrollment_tokens_are_refused(credentials: CredentialStore) -> None:
    token = credentials.create_enrollment_token("default", NOW + timedelta(minutes=5), None, NOW)
    with pytest.raises(EnrollmentRefused, match="expired"):
        credentials.enroll(token, NOW + timedelta(minutes=6))
    with pytest.raises(EnrollmentRefused, match="unknown"):
        credentials.enroll("guess", NOW)
    with pytest.raises(InvalidInput):
        credentials.create_enrollment_token("default", NOW - timedelta(seconds=1), None, NOW)
    with pytest.raises(InvalidInput):
        credentials.create_enrollment_token("default", LATER, 0, NOW)
    with pytest.raises(NotFound):
        credentials.create_enrollment_token("no-such-group", LATER, None, NOW)


def test_api_keys_have_roles_and_can_be_revoked(credentials: CredentialStore) -> None:
    assert not credentials.has_api_keys()
    admin = credentials.create_api_key("ops", "admin", NOW)
    reader = credentials.create_api_key("audit", "read-only", NOW)
    assert credentials.has_api_keys()
    assert (credentials.api_key_role(admin), credentials.api_key_role(reader)) == (
        "admin",
        "read-only",
    )
    assert credentials.api_key_role("nope") is None
    with pytest.raises(Conflict):
        credentials.create_api_key("ops", "admin", NOW)
    with pytest.raises(InvalidInput):
        credentials.create_api_key("x", "root", NOW)
    with pytest.raises(InvalidInput):
        credentials.create_api_key("k" * 65, "admin", NOW)
    credentials.revoke_api_key("ops")
    assert credentials.api_key_role(admin) is None
    assert credentials.api_key_role(reader) == "read-only"
    with pytest.raises(NotFound):
        credentials.revoke_api_key("nobody")


def test_the_shared_secret_is_made_once(credentials: CredentialStore) -> None:
    first = credentials.shared_secret("device-credentials")
    assert len(first) == 32
    assert credentials.shared_secret("device-credentials") == first
    assert credentials.shared_secret("another") != first


def test_revocation_and_re_enrolment_are_lifecycle_events(credentials: CredentialStore) -> None:
    token = credentials.create_enrollment_token("default", LATER, None, NOW)
    device_id, old = credentials.enroll(token, NOW)
    other, _ = credentials.enroll(token, NOW)
    credentials.revoke_device(device_id, NOW)
    credentials.revoke_device(device_id, LATER)  # again: still revoked, one more event
    (first, second) = credentials.lifecycle_events(0)
    assert (first.device_id, first.generation, first.active) == (device_id, 0, False)
    assert second.id > first.id

    new = credentials.reenroll_device(device_id, LATER, lambda d, _group, gen: f"{d}/{gen}")
    assert new == f"{device_id}/1"
    assert credentials.device_by_credential(old) is None  # the earlier credential is gone
    found = credentials.device_by_credential(new)
    assert found is not None
    assert found.device_id == device_id
    (reenrolled,) = credentials.lifecycle_events(second.id)
    assert (reenrolled.generation, reenrolled.active) == (1, True)

    credentials.decommission_device(other, LATER)
    (decommissioned,) = credentials.lifecycle_events(reenrolled.id)
    assert (decommissioned.device_id, decommissioned.active) == (other, False)
    assert [e.id for e in credentials.lifecycle_events(decommissioned.id, also=[first.id])] == [
        first.id
    ]
    for change in (credentials.revoke_device, credentials.decommission_device):
        with pytest.raises(NotFound):
            change("ghost", NOW)
    with pytest.raises(NotFound):
        credentials.reenroll_device("ghost", NOW, lambda d, g, gen: "x")
