"""``bsi supplement build --image``: the base tree from an image in the engine or an archive."""

from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path

import pytest
from test_container_activator import NEW_LIB, OLD_LIB, spec_text

from bsi.cryptex.manifest import Action
from bsi.cryptex.verify import read_manifest
from bsi.errors import InvalidInput, NotFound
from container_engine import Engine
from cryptex_support import refused, run_cli, write_tree


@pytest.fixture(scope="module")
def image(engine: Engine) -> str:
    return engine.import_image(
        "localhost/bsi-test/build:1",
        {"usr/lib/libssl.so.3": OLD_LIB, "usr/lib/libcrypto.so.3": b"unchanged\n"},
    )


def build_args(tmp_path: Path, digest: str, source: str, engine: Engine) -> list[str | Path]:
    spec = tmp_path / "spec.yaml"
    spec.write_text(spec_text(digest))
    patched = tmp_path / "patched"
    if not patched.exists():
        write_tree(
            patched, {"usr/lib/libssl.so.3": NEW_LIB, "usr/lib/libcrypto.so.3": b"unchanged\n"}
        )
    return ["supplement", "build", "--spec", spec, "--image", source, "--container-engine",
            engine.url, "--patched", patched, "--out", tmp_path / "out.cryptex"]  # fmt: skip


def only_libssl_changes(bundle: Path) -> None:
    manifest = read_manifest(bundle)
    assert [(f.path, f.action) for f in manifest.files] == [("usr/lib/libssl.so.3", Action.CHANGE)]
    assert manifest.files[0].base_sha256 == hashlib.sha256(OLD_LIB).hexdigest()


def test_the_base_tree_comes_from_the_image_in_the_engine(
    engine: Engine, image: str, tmp_path: Path
) -> None:
    result = run_cli(*build_args(tmp_path, image, "localhost/bsi-test/build:1", engine))
    assert result.exit_code == 0, result.output
    only_libssl_changes(tmp_path / "out.cryptex")


@pytest.mark.parametrize("archive_format", ["docker-archive", "oci-archive"])
def test_the_base_tree_comes_from_a_saved_archive(
    engine: Engine, image: str, tmp_path: Path, archive_format: str
) -> None:
    archive = tmp_path / "image.tar"
    engine.podman("save", "--format", archive_format, "-o", str(archive), image)
    result = run_cli(*build_args(tmp_path, image, str(archive), engine))
    assert result.exit_code == 0, result.output
    only_libssl_changes(tmp_path / "out.cryptex")


def test_an_image_that_is_not_there_or_not_the_spec_s_is_refused_and_nothing_written(
    engine: Engine, image: str, tmp_path: Path
) -> None:
    out = tmp_path / "out.cryptex"
    args = build_args(tmp_path, image, "localhost/bsi-test/absent:1", engine)
    refused(args, out, NotFound, "is not in the container engine")
    other = "sha256:" + "0" * 64
    args = build_args(tmp_path, other, "localhost/bsi-test/build:1", engine)
    refused(args, out, InvalidInput, f"names image {other}, but")
    not_an_image = tmp_path / "not-an-image.tar"
    write_tree(tmp_path / "junk", {"a": b"b"})
    with tarfile.open(not_an_image, "w") as tar:
        tar.add(tmp_path / "junk", arcname=".")
    args = build_args(tmp_path, image, str(not_an_image), engine)
    refused(args, out, InvalidInput, "neither a 'docker save' archive")
