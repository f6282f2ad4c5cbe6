"""``bsi supplement build --from-rpm`` on real .rpm files and a real rpm database.

The packages are made with ``rpmbuild`` (a shared library, a binary with a
systemd unit) and the base is either the older .rpm or a Fedora-like root
whose rpm database has it installed by ``rpm -U``: everything is read by
rpm's own tools, as on a Fedora host. The same derivation serves --from-deb.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from bsi.cryptex import load_spec, verify_bundle
from bsi.cryptex.errors import InvalidSupplement
from bsi.domain.prerequisite import PackageManager, PackageVersion
from bsi.errors import InvalidInput
from cryptex_support import refused, run_cli, written_spec_rebuilds
from rpms import fedora_root, make_rpm, rpm_install

LIB = "usr/lib64/libdemo.so.1"
BIN = "usr/sbin/demod"
UNIT = "usr/lib/systemd/system/demod.service"
OLD = {LIB: b"libdemo 1.0-1 " * 300, BIN: b"\x7fELF demod 1.0", UNIT: b"[Service]\n"}
NEW = {**OLD, LIB: b"libdemo 1.0-2 fixed " * 300, BIN: b"\x7fELF demod 1.0 fixed"}


@pytest.fixture
def rpms(tmp_path: Path) -> tuple[Path, Path]:
    return (
        make_rpm(tmp_path, "demo-libs", "1.0", "1.fc40", OLD),
        make_rpm(tmp_path, "demo-libs", "1.0", "2.fc40", NEW),
    )


def build_args(new: Path, out: Path, *base: str | Path) -> list[str | Path]:
    return ["supplement", "build", "--from-rpm", new, *base, "--out", out,
            "--platform", "fedora", "--product-version", "40"]  # fmt: skip


def test_from_rpm_with_base_rpm_derives_prerequisite_fixed_in_and_units(
    rpms: tuple[Path, Path], tmp_path: Path
) -> None:
    old, new = rpms
    out = tmp_path / "out" / "demo.cryptex"
    out.parent.mkdir()
    result = run_cli(*build_args(new, out, "--base-rpm", old))
    assert result.exit_code == 0, result.output
    manifest = verify_bundle(out)
    assert manifest.prerequisite.manager is PackageManager.RPM
    assert manifest.prerequisite.packages == (PackageVersion("demo-libs", "1.0-1.fc40", "x86_64"),)
    assert manifest.fixed_in == (PackageVersion("demo-libs", "1.0-2.fc40"),)
    assert sorted(f.path for f in manifest.files) == [LIB, BIN]
    assert manifest.files[0].sha256 != manifest.files[0].base_sha256
    assert manifest.components[0].name == "demo-libs"
    assert manifest.components[0].relaunch.systemd == ("demod.service",)
    assert str(manifest.supplemental_build).startswith("40P")

    spec_file = written_spec_rebuilds(
        out, "--from-rpm", lambda o: build_args(new, o, "--base-rpm", old)
    )
    assert load_spec(spec_file).supplemental_build == manifest.supplemental_build


@pytest.mark.parametrize("linked", [False, True], ids=["plain", "absolute-link"])
def test_from_rpm_with_base_root_reads_the_roots_rpm_database(
    rpms: tuple[Path, Path], tmp_path: Path, linked: bool
) -> None:
    old, new = rpms
    root = fedora_root(tmp_path / "root")
    rpm_install(root, old)
    if linked:  # /usr/lib64 an absolute link: it means <root>/opt/lib64, never the host's
        (root / "opt").mkdir()
        (root / "usr/lib64").rename(root / "opt/lib64")
        (root / "usr/lib64").symlink_to("/opt/lib64")
    out = tmp_path / "demo.cryptex"
    result = run_cli("supplement", "build", "--from-rpm", new, "--base-root", root, "--out", out)
    assert result.exit_code == 0, result.output
    manifest = verify_bundle(out)
    assert (manifest.platform, str(manifest.product_version)) == ("fedora", "40.0")
    assert manifest.prerequisite.packages == (PackageVersion("demo-libs", "1.0-1.fc40", "x86_64"),)
    assert {f.path for f in manifest.files} == {LIB, BIN}
    base = {f.path: f.base_sha256 for f in manifest.files}
    assert base[LIB] == hashlib.sha256(OLD[LIB]).hexdigest()  # the installed file's content


def test_an_epoch_orders_by_rpmvercmp(tmp_path: Path) -> None:
    old = make_rpm(tmp_path, "demo-libs", "2.0", "1.fc40", OLD)
    new = make_rpm(tmp_path, "demo-libs", "1.0", "1.fc40", NEW, epoch=1)
    out = tmp_path / "e.cryptex"
    assert run_cli(*build_args(new, out, "--base-rpm", old)).exit_code == 0
    assert verify_bundle(out).fixed_in == (PackageVersion("demo-libs", "1:1.0-1.fc40"),)


def test_bad_input_is_refused_and_writes_nothing(rpms: tuple[Path, Path], tmp_path: Path) -> None:
    old, new = rpms
    out = tmp_path / "x.cryptex"
    not_rpm = tmp_path / "not.rpm"
    not_rpm.write_text(f"{new}\n")  # rpm -qp would read this as a list of packages
    truncated = tmp_path / "truncated.rpm"
    truncated.write_bytes(new.read_bytes()[:2000])
    arm = make_rpm(tmp_path, "demo-libs", "1.0", "2.fc40", NEW, arch="aarch64")
    other = make_rpm(tmp_path, "other", "1.0", "2.fc40", NEW)
    srpm = make_rpm(tmp_path, "demo-libs", "1.0", "3.fc40", NEW, source=True)
    root = fedora_root(tmp_path / "root")
    rpm_install(root, old)
    empty = fedora_root(tmp_path / "empty")
    deb_root = tmp_path / "debian"
    (deb_root / "var/lib/dpkg").mkdir(parents=True)
    not_installed = "demo-libs:x86_64 is not installed"
    for args, error, message in [
        (build_args(not_rpm, out, "--base-rpm", old), InvalidSupplement, "is not an rpm package"),
        (build_args(new, out, "--base-rpm", not_rpm), InvalidSupplement, "is not an rpm package"),
        (build_args(truncated, out, "--base-rpm", old), InvalidSupplement, "not a usable rpm"),
        (build_args(arm, out, "--base-rpm", old), InvalidSupplement, "architecture mismatch"),
        (build_args(srpm, out, "--base-rpm", old), InvalidSupplement, "is a source package"),
        (build_args(old, out, "--base-rpm", new), InvalidSupplement, "is not later than"),
        (build_args(other, out, "--base-rpm", old), InvalidSupplement, "not the same package"),
        (build_args(other, out, "--base-root", root), InvalidSupplement,
         "other:x86_64 is not installed"),
        (build_args(new, out, "--base-root", empty), InvalidSupplement, not_installed),
        (build_args(new, out, "--base-root", deb_root), InvalidSupplement, "no rpm database"),
        (build_args(new, out), InvalidInput, "exactly one base"),
        (build_args(new, out, "--base-deb", old), InvalidInput, "do not mix"),
    ]:  # fmt: skip
        refused(args, out, error, message)
