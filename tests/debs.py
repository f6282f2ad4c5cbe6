"""Real Debian packages for tests: tiny ones made with ``dpkg-deb --build``, and real ones.

``dpkg-deb`` is on every Debian machine (``.ci/run`` runs on one). Real
packages come from a cache that ``.ci/run`` fills with ``apt-get download``
(``BSI_DEB_CACHE``, default ``.cache/debs`` in the clone); tests that need
them skip where there are none, and fail under ``CI=true``.
"""

from __future__ import annotations

import functools
import io
import os
import shutil
import subprocess
import tarfile
from collections.abc import Mapping
from pathlib import Path

import pytest

from bsi.domain.prerequisite import PackageManager, compare_versions

DEB_CACHE = Path(
    os.environ.get("BSI_DEB_CACHE", Path(__file__).resolve().parents[1] / ".cache/debs")
)


def require(tool: str, package: str = "dpkg") -> str:
    """The path of ``tool``; skips (fails under CI=true) when it is not installed."""
    found = shutil.which(tool)
    if found is None:
        message = f"{tool} is not installed (Debian package {package})"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; .ci/run must install it")
        pytest.skip(message)
    return found


def make_deb(
    out_dir: Path,
    name: str,
    version: str,
    files: Mapping[str, bytes],
    *,
    arch: str = "amd64",
    conffiles: tuple[str, ...] = (),
) -> Path:
    """A real .deb of ``files`` (paths relative to /), built by dpkg-deb as root:root."""
    dpkg_deb = require("dpkg-deb")
    tree = out_dir / f"{name}-{version}-{arch}.tree"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN/control").write_text(
        f"Package: {name}\nVersion: {version}\nArchitecture: {arch}\n"
        "Maintainer: bsi tests <tests@example.org>\nDescription: a test package\n"
    )
    if conffiles:
        (tree / "DEBIAN/conffiles").write_text("".join(f"/{c}\n" for c in conffiles))
    for path, data in files.items():
        target = tree / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        target.chmod(0o644)
    deb = out_dir / f"{name}_{version}_{arch}.deb"
    subprocess.run(
        [dpkg_deb, "--root-owner-group", "-Zgzip", "--build", str(tree), str(deb)],
        check=True,
        capture_output=True,
    )
    shutil.rmtree(tree)
    return deb


def install_into(root: Path, deb: Path, name: str, version: str, arch: str = "amd64") -> None:
    """Install ``deb``'s files into ``root`` as dpkg would: files, status entry, file list."""
    dpkg_deb = require("dpkg-deb")
    subprocess.run([dpkg_deb, "-x", str(deb), str(root)], check=True, capture_output=True)
    listing = subprocess.run(
        [dpkg_deb, "--fsys-tarfile", str(deb)], check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(listing)) as tar:
        names = ["/" + m.name.removeprefix("./").rstrip("/") for m in tar.getmembers()]
    info = root / "var/lib/dpkg/info"
    info.mkdir(parents=True, exist_ok=True)
    (info / f"{name}:{arch}.list").write_text(
        "\n".join(n if n != "/" else "/." for n in names) + "\n"
    )
    set_installed(root, name, version, arch)


def set_installed(root: Path, name: str, version: str, arch: str = "amd64") -> None:
    """Record ``name`` at ``version`` in ``root``'s dpkg status (replacing an earlier entry)."""
    status = root / "var/lib/dpkg/status"
    status.parent.mkdir(parents=True, exist_ok=True)
    kept = []
    if status.exists():
        for paragraph in status.read_text().strip().split("\n\n"):
            if paragraph and f"Package: {name}\n" not in paragraph + "\n":
                kept.append(paragraph)
    kept.append(
        f"Package: {name}\nStatus: install ok installed\nPriority: optional\n"
        f"Architecture: {arch}\nVersion: {version}\nDescription: test\n"
    )
    status.write_text("\n\n".join(p.strip() for p in kept) + "\n")


def cached_versions(name: str) -> list[tuple[str, Path]]:
    """``(version, path)`` of the cached real packages of ``name``, oldest first."""
    found = []
    for deb in sorted(DEB_CACHE.glob(f"{name}_*.deb")) if DEB_CACHE.is_dir() else []:
        version = deb.name.split("_")[1].replace("%3a", ":")
        found.append((version, deb))
    key = functools.cmp_to_key(lambda a, b: compare_versions(PackageManager.DPKG, a[0], b[0]))
    return sorted(found, key=key)


def two_real_versions(name: str) -> tuple[tuple[str, Path], tuple[str, Path]]:
    """The two newest cached versions of ``name``; skip (fail in CI) without two."""
    versions = cached_versions(name)
    if len(versions) < 2:
        message = f"fewer than two {name} packages in {DEB_CACHE}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; .ci/run downloads them with apt-get download")
        pytest.skip(f"{message}; run .ci/run's apt-get download step to fetch them")
    return versions[-2], versions[-1]
