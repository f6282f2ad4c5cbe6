"""``bsi supplement build --from-deb`` and ``bsi supplement init`` on real .deb files.

The packages are made with ``dpkg-deb --build`` (a library, a binary with a
systemd unit, a config file), so every case is a real Debian archive read by
python-debian; the real libssl3 update is exercised in the agent's real-data test.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from bsi.cryptex import build_bundle, diff_trees, load_spec, verify_bundle
from bsi.cryptex.errors import InvalidSupplement
from bsi.domain.prerequisite import PackageManager, PackageVersion
from bsi.errors import InvalidInput
from cryptex_support import (
    BASE_FILES,
    SPEC_TEXT,
    refused,
    run_cli,
    spec,
    standard_trees,
    written_spec_rebuilds,
)
from debs import install_into, make_deb

LIB = "usr/lib/x86_64-linux-gnu/libdemo.so.1"
BIN = "usr/sbin/demod"
UNIT = "lib/systemd/system/demod.service"
CONF = "etc/demo/demo.conf"
OLD = {
    LIB: b"libdemo 1.0-1 " * 300,
    BIN: b"\x7fELF demod 1.0",
    UNIT: b"[Service]\n",
    CONF: b"a=1\n",
}
NEW = {**OLD, LIB: b"libdemo 1.0-1+deb12u1 " * 300, BIN: b"\x7fELF demod 1.0 fixed"}


@pytest.fixture
def debs(tmp_path: Path) -> tuple[Path, Path]:
    return (
        make_deb(tmp_path, "demo", "1.0-1", OLD, conffiles=(CONF,)),
        make_deb(tmp_path, "demo", "1.0-1+deb12u1", NEW, conffiles=(CONF,)),
    )


def build_args(new: Path, out: Path, *base: str | Path) -> list[str | Path]:
    return ["supplement", "build", "--from-deb", new, *base, "--out", out,
            "--platform", "debian", "--product-version", "12"]  # fmt: skip


def test_from_deb_with_base_deb_derives_prerequisite_fixed_in_and_units(
    debs: tuple[Path, Path], tmp_path: Path
) -> None:
    old, new = debs
    out = tmp_path / "out" / "demo.cryptex"
    out.parent.mkdir()
    result = run_cli(*build_args(new, out, "--base-deb", old))
    assert result.exit_code == 0, result.output
    manifest = verify_bundle(out)
    assert manifest.prerequisite.manager is PackageManager.DPKG
    assert manifest.prerequisite.packages == (PackageVersion("demo", "1.0-1", "amd64"),)
    assert manifest.fixed_in == (PackageVersion("demo", "1.0-1+deb12u1"),)
    assert sorted(f.path for f in manifest.files) == [LIB, BIN]
    assert manifest.components[0].relaunch.systemd == ("demod.service",)
    assert all((f.uid, f.gid) == (0, 0) for f in manifest.files)

    spec_file = written_spec_rebuilds(
        out, "--from-deb", lambda o: build_args(new, o, "--base-deb", old)
    )
    assert load_spec(spec_file).supplemental_build == manifest.supplemental_build


def test_from_deb_with_base_root_reads_dpkg_status_and_file_list(
    debs: tuple[Path, Path], tmp_path: Path
) -> None:
    old, new = debs
    root = tmp_path / "root"
    install_into(root, old, "demo", "1.0-1")
    (root / "etc/os-release").write_text('ID=debian\nVERSION_ID="12"\n')
    out = tmp_path / "demo.cryptex"
    result = run_cli("supplement", "build", "--from-deb", new, "--base-root", root, "--out", out)
    assert result.exit_code == 0, result.output
    manifest = verify_bundle(out)
    assert (manifest.platform, str(manifest.product_version)) == ("debian", "12.0")
    assert manifest.prerequisite.packages == (PackageVersion("demo", "1.0-1", "amd64"),)
    assert {f.path for f in manifest.files} == {LIB, BIN}


def test_config_only_fix(tmp_path: Path) -> None:
    old = make_deb(tmp_path, "democonf", "2.0-1", {CONF: b"tls=weak\n"}, conffiles=(CONF,))
    new = make_deb(tmp_path, "democonf", "2.0-2", {CONF: b"tls=strong\n"}, conffiles=(CONF,))
    out = tmp_path / "conf.cryptex"
    assert run_cli(*build_args(new, out, "--base-deb", old)).exit_code == 0
    assert [f.path for f in verify_bundle(out).files] == [CONF]


def test_bad_input_is_refused_and_writes_nothing(debs: tuple[Path, Path], tmp_path: Path) -> None:
    old, new = debs
    out = tmp_path / "x.cryptex"
    not_deb = tmp_path / "not.deb"
    not_deb.write_bytes(b"this is not an ar archive")
    arm = make_deb(tmp_path, "demo", "1.0-1+deb12u1", NEW, arch="arm64")
    other = make_deb(tmp_path, "other", "1.0-2", NEW)
    typo = tmp_path / "typo.yaml"
    typo.write_text(
        "platform: debian\nproduct_version: '12'\nextra_version: (a)\n"
        "supplemental_build: 12P1000001a\n"
        "prerequisite: {manager: dpkg, packages: [{pakage: demo, version: 1.0-1}]}\n"
        "components: {demo: {paths: [/usr]}}\n"
    )
    root = tmp_path / "root"
    install_into(root, old, "demo", "1.0-1")
    unknown = "other:amd64 is not installed"
    for args, error, message in [
        (build_args(not_deb, out, "--base-deb", old), InvalidSupplement, "is not a Debian package"),
        (build_args(new, out, "--base-deb", not_deb), InvalidSupplement, "is not a Debian package"),
        (build_args(arm, out, "--base-deb", old), InvalidSupplement, "architecture mismatch"),
        (build_args(old, out, "--base-deb", new), InvalidSupplement, "is not later than"),
        (build_args(other, out, "--base-deb", old), InvalidSupplement, "not the same package"),
        (build_args(other, out, "--base-root", root), InvalidSupplement, unknown),
        (build_args(new, out), InvalidInput, "exactly one base"),
        ([*build_args(new, out, "--base-deb", old), "--spec", typo], InvalidInput, "'pakage'"),
    ]:  # fmt: skip
        refused(args, out, error, message)


def test_init_writes_an_example_spec_that_loads_and_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "supplement.yaml"
    assert run_cli("supplement", "init", path).exit_code == 0
    spec = load_spec(path)
    assert spec.prerequisite.packages
    assert spec.fixed_in
    before = path.read_text()
    again = run_cli("supplement", "init", path)
    assert isinstance(again.exception, InvalidInput)
    assert path.read_text() == before


def test_a_file_digest_prerequisite_must_be_the_base_trees_content(tmp_path: Path) -> None:
    base, patched = standard_trees(tmp_path)
    digest = hashlib.sha256(BASE_FILES["usr/lib/libssl.so.3"]).hexdigest()
    text = SPEC_TEXT.replace(
        "prerequisite_build: 12A100\n",
        f"prerequisite: {{files: [{{path: /usr/lib/libssl.so.3, sha256: {digest}}}]}}\n",
    )
    built = build_bundle(spec(text), diff_trees(base, patched), tmp_path / "ok.cryptex")
    assert built.manifest.prerequisite.files[0].sha256 == digest
    assert verify_bundle(built.path).prerequisite == built.manifest.prerequisite
    wrong = text.replace(digest, "f" * 64)
    with pytest.raises(InvalidSupplement) as refused:
        build_bundle(spec(wrong), diff_trees(base, patched), tmp_path / "bad.cryptex")
    assert digest in str(refused.value)
    assert "f" * 64 in str(refused.value)
    assert not (tmp_path / "bad.cryptex").exists()


DOCS = {
    "usr/share/doc/demo/changelog.Debian.gz": b"demo (1.0-1) bookworm; urgency=medium\n",
    "usr/share/man/man8/demod.8.gz": b".TH DEMOD 8\n",
}


def test_documentation_is_left_out_unless_kept(tmp_path: Path) -> None:
    """Changelogs and man pages change with every update and fix nothing."""
    old = make_deb(tmp_path, "demo", "1.0-1", {**OLD, **DOCS})
    new_docs = {path: data + b"fixed\n" for path, data in DOCS.items()}
    new = make_deb(tmp_path, "demo", "1.0-1+deb12u1", {**NEW, **new_docs})
    out = tmp_path / "demo.cryptex"
    assert run_cli(*build_args(new, out, "--base-deb", old)).exit_code == 0
    assert sorted(f.path for f in verify_bundle(out).files) == [LIB, BIN]

    kept = tmp_path / "kept.cryptex"
    result = run_cli(*build_args(new, kept, "--base-deb", old), "--keep-docs")
    assert result.exit_code == 0, result.output
    assert sorted(f.path for f in verify_bundle(kept).files) == sorted([LIB, BIN, *DOCS])
    spec_text = kept.with_name("kept.spec.yaml").read_text()
    assert "--keep-docs" in spec_text.splitlines()[0]


def test_an_update_of_documentation_only_is_refused_with_the_flag_to_keep_it(
    tmp_path: Path,
) -> None:
    old = make_deb(tmp_path, "demodoc", "1.0-1", DOCS)
    new = make_deb(tmp_path, "demodoc", "1.0-2", {p: d + b"new\n" for p, d in DOCS.items()})
    out = tmp_path / "doc.cryptex"
    refused(build_args(new, out, "--base-deb", old), out, InvalidSupplement, "only documentation")
    assert run_cli(*build_args(new, out, "--base-deb", old), "--keep-docs").exit_code == 0


def test_whole_files_carries_no_delta(debs: tuple[Path, Path], tmp_path: Path) -> None:
    old, new = debs
    out = tmp_path / "whole.cryptex"
    assert run_cli(*build_args(new, out, "--base-deb", old), "--whole-files").exit_code == 0
    assert not verify_bundle(out).deltas
