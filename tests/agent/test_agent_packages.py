"""Installed package versions and file digests, as the agent reads them below a root."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from bsi.agent.facts import FactsUnavailable
from bsi.agent.packages import detect_manager, file_digests, read_dpkg, read_rpm
from bsi.domain.prerequisite import PackageManager, PackageVersion
from rpms import RHEL_DBPATH, fedora_root, make_rpm, rhel_root, rpm_install

STATUS = """\
Package: libssl3
Status: install ok installed
Architecture: amd64
Version: 3.0.19-1~deb12u2
Description: x

Package: libssl3
Status: install ok installed
Architecture: i386
Version: 3.0.19-1~deb12u2
Description: x

Package: nginx
Status: deinstall ok config-files
Architecture: amd64
Version: 1.22.1-9
Description: x

Package: unrelated
Status: install ok installed
Architecture: all
Version: 1
Description: x
"""


def test_dpkg_status_gives_installed_versions_of_the_named_packages_only(tmp_path: Path) -> None:
    (tmp_path / "var/lib/dpkg").mkdir(parents=True)
    (tmp_path / "var/lib/dpkg/status").write_text(STATUS)
    assert detect_manager(tmp_path) is PackageManager.DPKG
    assert read_dpkg(tmp_path, ["libssl3", "nginx", "absent"]) == (
        PackageVersion("libssl3", "3.0.19-1~deb12u2", "amd64"),
        PackageVersion("libssl3", "3.0.19-1~deb12u2", "i386"),
    )


def test_a_broken_status_file_is_refused_clearly(tmp_path: Path) -> None:
    (tmp_path / "var/lib/dpkg").mkdir(parents=True)
    (tmp_path / "var/lib/dpkg/status").write_text(
        "Package: libssl3\nStatus: install ok installed\nDescription: no version\n"
    )
    with pytest.raises(FactsUnavailable, match="libssl3 has no Version"):
        read_dpkg(tmp_path, ["libssl3"])


def test_no_package_database_means_no_manager(tmp_path: Path) -> None:
    assert detect_manager(tmp_path) is None


def test_rpm_database_without_the_rpm_command_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))  # a host without rpm
    (tmp_path / "var/lib/rpm").mkdir(parents=True)
    assert detect_manager(tmp_path) is PackageManager.RPM
    with pytest.raises(FactsUnavailable, match="rpm command is not installed"):
        read_rpm(tmp_path, ["openssl-libs"])


def test_rpm_database_gives_installed_versions_of_the_named_packages_only(
    tmp_path: Path,
) -> None:
    root = fedora_root(tmp_path / "root")
    lib = {"usr/lib64/libdemo.so.1": b"lib"}
    rpm_install(root, make_rpm(tmp_path, "openssl-libs", "3.2.2", "3.fc40", lib, epoch=1))
    multilib = make_rpm(tmp_path, "openssl-libs", "3.2.2", "3.fc40", lib, arch="i686", epoch=1)
    rpm_install(root, multilib, upgrade=False)
    rpm_install(root, make_rpm(tmp_path, "unrelated", "1", "1", {"etc/x": b"x"}, arch="noarch"))
    assert detect_manager(root) is PackageManager.RPM
    assert read_rpm(root, ["openssl-libs", "absent"]) == (
        PackageVersion("openssl-libs", "1:3.2.2-3.fc40", "i686"),
        PackageVersion("openssl-libs", "1:3.2.2-3.fc40", "x86_64"),
    )
    assert read_rpm(root, ["absent"]) == ()
    # the build machine's own rpm database is never read: only the root's
    assert read_rpm(fedora_root(tmp_path / "empty"), ["openssl-libs"]) == ()


def test_a_root_keeping_its_rpm_database_in_var_lib_rpm_is_read_there(tmp_path: Path) -> None:
    root = rhel_root(tmp_path / "rhel")
    package = make_rpm(tmp_path, "openssl-libs", "3.0.7", "27.el9", {"usr/lib64/x": b"x"})
    rpm_install(root, package, dbpath=RHEL_DBPATH)
    assert detect_manager(root) is PackageManager.RPM
    assert read_rpm(root, ["openssl-libs"]) == (
        PackageVersion("openssl-libs", "3.0.7-27.el9", "x86_64"),
    )


def test_a_broken_rpm_database_is_refused_clearly(tmp_path: Path) -> None:
    root = fedora_root(tmp_path / "root")
    (root / "usr/lib/sysimage/rpm/rpmdb.sqlite").write_bytes(b"not a database " * 100)
    with pytest.raises(FactsUnavailable, match="rpm cannot read the database"):
        read_rpm(root, ["openssl-libs"])


def test_file_digests_report_missing_files_as_none(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/a.conf").write_bytes(b"a")
    assert file_digests(tmp_path, ["etc/a.conf", "etc/gone"], None) == {
        "etc/a.conf": hashlib.sha256(b"a").hexdigest(),
        "etc/gone": None,
    }
