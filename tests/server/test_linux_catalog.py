"""The server's catalogue from its hosted TUF repository: the signed fields a publish
writes become catalogue entries, and a target whose signed fields bsi cannot read is
refused naming the target and the field."""

from __future__ import annotations

import hashlib
from datetime import date
from pathlib import Path

import pytest

from bsi.domain.prerequisite import Prerequisite
from bsi.domain.supplement_fields import SupplementFields
from bsi.domain.versions import Build, SupplementVersion
from bsi.errors import InvalidInput
from bsi.server.linux_catalog import catalog_from_repository
from bsi.trust import init_keys
from bsi.trust.repository import available_signers, publish_target

SIGNED = SupplementFields(
    platform="debian",
    version=SupplementVersion.parse("13.4 (a)"),
    prerequisite=Prerequisite.of_build(Build.parse("12A100")),
    supplemental_build=Build.parse("12A100a"),
    cves=("CVE-2026-0001",),
    posted=date(2026, 3, 1),
)


def publish(tmp_path: Path, fields: dict[str, object]) -> tuple[Path, str]:
    """A real repository signing one bundle with ``fields``; its path and the bundle's digest."""
    keys, repo, bundle = tmp_path / "keys", tmp_path / "repo", tmp_path / "b.cryptex"
    init_keys(keys, repo)
    bundle.write_bytes(b"cryptex bytes\n")
    name = "debian/12A100a.cryptex"
    publish_target(
        repo, keys, name, bundle, fields, signers=available_signers(repo, keys, "targets")
    )
    return repo, hashlib.sha256(bundle.read_bytes()).hexdigest()


def test_the_published_fields_are_the_catalogue_entry(tmp_path: Path) -> None:
    repo, digest = publish(tmp_path, SIGNED.document())
    catalog = catalog_from_repository(repo)
    assert catalog.supplements == (SIGNED.supplement(target_sha256=digest),)


def test_a_target_with_unreadable_signed_fields_is_refused_naming_it_and_the_field(
    tmp_path: Path,
) -> None:
    bad = {**SIGNED.document(), "extra_version": 1}
    repo, _ = publish(tmp_path, bad)
    with pytest.raises(InvalidInput) as caught:
        catalog_from_repository(repo)
    assert "target debian/12A100a.cryptex" in caught.value.message
    assert "custom.bsi.extra_version: expected a string, found 1" in caught.value.message
    assert caught.value.hint is not None
    assert "bsi supplement publish" in caught.value.hint
