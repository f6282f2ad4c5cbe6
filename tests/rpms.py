"""Real rpm packages and rpm databases for tests, made with rpm's own tools.

Debian's ``rpm`` package provides ``rpmbuild``, ``rpm``, ``rpmkeys`` and
``rpm2archive`` (``.ci/run`` installs it). :func:`make_rpm` builds a real
binary package of given files; :func:`fedora_root` lays out a host root as
Fedora ships it (database in ``/usr/lib/sysimage/rpm``, ``/var/lib/rpm`` a
relative link to it, Fedora 40's os-release); :func:`rpm_install` installs
or upgrades a package in that root's database with ``rpm -U``. Tests skip
where rpm is absent, and fail under ``CI=true``.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

from debs import require

#: /etc/os-release of Fedora 40 Server as shipped (no BUILD_ID, no IMAGE_VERSION).
FEDORA_40_OS_RELEASE = """\
NAME="Fedora Linux"
VERSION="40 (Server Edition)"
ID=fedora
VERSION_ID=40
VERSION_CODENAME=""
PLATFORM_ID="platform:f40"
PRETTY_NAME="Fedora Linux 40 (Server Edition)"
ANSI_COLOR="0;38;2;60;110;180"
LOGO=fedora-logo-icon
CPE_NAME="cpe:/o:fedoraproject:fedora:40"
HOME_URL="https://fedoraproject.org/"
DOCUMENTATION_URL="https://docs.fedoraproject.org/en-US/fedora/f40/system-administrators-guide/"
SUPPORT_URL="https://ask.fedoraproject.org/"
BUG_REPORT_URL="https://bugzilla.redhat.com/"
REDHAT_BUGZILLA_PRODUCT="Fedora"
REDHAT_BUGZILLA_PRODUCT_VERSION=40
REDHAT_SUPPORT_PRODUCT="Fedora"
REDHAT_SUPPORT_PRODUCT_VERSION=40
SUPPORT_END=2025-05-13
VARIANT="Server Edition"
VARIANT_ID=server
"""
DBPATH = "/usr/lib/sysimage/rpm"  # Fedora 36+, SUSE
RHEL_DBPATH = "/var/lib/rpm"  # RHEL 8/9


def require_rpm() -> str:
    """rpm's path, after checking every rpm tool bsi and these helpers use is installed."""
    for tool in ("rpmbuild", "rpmkeys", "rpm2archive"):
        require(tool, "rpm")
    return require("rpm", "rpm")


def make_rpm(
    out_dir: Path,
    name: str,
    version: str,
    release: str,
    files: Mapping[str, bytes],
    *,
    arch: str = "x86_64",
    epoch: int | None = None,
    source: bool = False,
) -> Path:
    """A real binary .rpm of ``files`` (paths relative to /, root:root 0644), built by rpmbuild.

    ``source=True`` builds the source package (``.src.rpm``) instead.
    """
    require_rpm()
    out_dir = out_dir.resolve()  # rpmbuild's directories must be absolute
    work = out_dir / f".rpmbuild-{name}-{version}-{release}-{arch}"
    tree = work / "source"
    for path, data in files.items():
        target = tree / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    spec = work / f"{name}.spec"
    listed = "\n".join(f"%attr(0644,root,root) /{path}" for path in sorted(files))
    spec.write_text(
        f"Name: {name}\nVersion: {version}\nRelease: {release}\n"
        + (f"Epoch: {epoch}\n" if epoch is not None else "")
        + "Summary: a bsi test package\nLicense: MIT\n%description\na bsi test package\n"
        "%install\ncp -a %{_sourcedir}/. %{buildroot}/\n"
        f"%files\n{listed}\n"
    )
    defines = {
        "_topdir": work / "top",
        "_sourcedir": tree,
        "_rpmdir": out_dir,
        "_srcrpmdir": out_dir,
        "_build_name_fmt": "%{NAME}-%{VERSION}-%{RELEASE}.%{ARCH}.rpm",
        "__os_install_post": "%{nil}",  # no stripping or byte-compiling of test files
        "_build_id_links": "none",
        "debug_package": "%{nil}",
    }
    args = ["rpmbuild", "-bs" if source else "-bb", "--quiet", "--target", arch]
    for key, value in defines.items():
        args += ["--define", f"{key} {value}"]
    subprocess.run([*args, str(spec)], check=True, capture_output=True, env=_c_locale())
    return out_dir / f"{name}-{version}-{release}.{'src' if source else arch}.rpm"


def fedora_root(root: Path) -> Path:
    """An empty Fedora 40 host root: os-release as shipped, an rpm database in its place."""
    require_rpm()
    (root / "etc").mkdir(parents=True, exist_ok=True)
    (root / "etc/os-release").write_text(FEDORA_40_OS_RELEASE)
    (root / DBPATH.lstrip("/")).mkdir(parents=True)
    (root / "var/lib").mkdir(parents=True, exist_ok=True)
    (root / "var/lib/rpm").symlink_to("../../usr/lib/sysimage/rpm")
    _rpm(root, "--initdb")
    return root


def rhel_root(root: Path) -> Path:
    """An empty RHEL-style root: the rpm database in ``/var/lib/rpm`` and nothing in sysimage."""
    require_rpm()
    (root / "var/lib/rpm").mkdir(parents=True)
    _rpm(root, "--initdb", dbpath=RHEL_DBPATH)
    return root


def rpm_install(root: Path, package: Path, *, upgrade: bool = True, dbpath: str = DBPATH) -> None:
    """Install or upgrade ``package`` in ``root`` as ``dnf`` would (files and database).

    ``upgrade=False`` installs beside what is there (another architecture of
    a multilib package) instead of replacing it.
    """
    flags = ("-U" if upgrade else "-i", "--nodeps", "--noscripts", "--nosignature")
    _rpm(root, *flags, str(package), dbpath=dbpath)


def _rpm(root: Path, *args: str, dbpath: str = DBPATH) -> None:
    subprocess.run(
        ["rpm", "--root", str(root.resolve()), "--dbpath", dbpath, *args],
        check=True,
        capture_output=True,
        env=_c_locale(),
    )


def _c_locale() -> dict[str, str]:
    return {**os.environ, "LC_ALL": "C"}
