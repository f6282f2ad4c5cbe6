"""Set-user-ID files end to end: the device stages the bit only where the signed manifest
declares it. A signature proves who published a bundle, not that a file should run with
its owner's rights — a hostile publisher, or a stolen targets key, could otherwise ship a
set-user-ID root shell in a correctly signed bundle."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from test_agent_end_to_end import HEALTHY, World, enrolled, publish_letter, snapshot
from test_agent_failure_paths import PATCHED_B, on_a

from cryptex_support import PATCHED_FILES, manifest_document, members, pack, with_manifest

LIBSSL = "usr/lib/libssl.so.3"


def publish_b(world: World, tmp_path: Path, *, declared: bool) -> None:
    """12A100b with libssl set-user-ID; without ``declared``, the manifest's declaration is
    removed after the build and the bundle signed as it is."""

    def undeclare(bundle: Path) -> None:
        items = members(bundle)
        document = manifest_document(items)
        assert document.pop("setuid") == [LIBSSL]
        pack(bundle, with_manifest(items, json.loads(json.dumps(document))))

    publish_letter(
        tmp_path,
        "b",
        PATCHED_B,
        HEALTHY,
        world.relaunch,
        setuid={LIBSSL: 0o4755},
        alter=None if declared else undeclare,
    )
    synced = world.admin.post("/v1/admin/catalog/sync-repository")
    assert synced.is_success, synced.text


def test_an_undeclared_set_user_id_file_in_a_signed_bundle_is_refused_at_staging(
    world: World, tmp_path: Path
) -> None:
    device_id = enrolled(world, tmp_path)
    on_a_letter = on_a(world, device_id)
    publish_b(world, tmp_path, declared=False)

    report = world.agent.once()
    assert report.failure is not None
    assert f"file '{LIBSSL}' has mode 4755: set-user-ID or set-group-ID" in report.failure
    assert "which the manifest does not declare" in report.failure
    assert report.active == "12A100a"  # still protected by the last good letter
    assert snapshot(world.root) == on_a_letter
    assert not list(world.agent.layout.cryptexes.glob("12A100b*"))


def test_a_declared_set_user_id_file_is_staged_and_goes_live_with_its_mode(
    world: World, tmp_path: Path
) -> None:
    device_id = enrolled(world, tmp_path)
    on_a(world, device_id)
    publish_b(world, tmp_path, declared=True)

    report = world.agent.once()
    assert report.failure is None, report.failure
    assert report.active == "12A100b"
    assert world.library.read_bytes() == PATCHED_B[LIBSSL]
    assert stat.S_IMODE(world.library.stat().st_mode) == 0o4755
    assert PATCHED_FILES[LIBSSL] != PATCHED_B[LIBSSL]
