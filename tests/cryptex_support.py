"""Trees, specs and hand-made bundles shared by the cryptex tests."""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import zstandard
from typer.testing import CliRunner, Result

from bsi.cli import app
from bsi.cryptex import SupplementSpec, parse_spec
from bsi.errors import BsiError

SPEC_TEXT = """\
platform: debian
product_version: "12.5"
prerequisite_build: 12A100
extra_version: (a)
supplemental_build: 12A100a
components:
  openssl:
    paths: [/usr/lib]
    relaunch: {systemd: [nginx], processes: [/usr/sbin/sshd]}
  nginx:
    paths: [/usr/sbin/nginx, /etc/nginx]
    relaunch: {systemd: [nginx.service], command: [nginx, -s, reload]}
  docs:
    paths: [/usr/share]
health_check: {command: [curl, -fsS, "http://localhost/"], timeout: 20}
cves:
  - {id: CVE-2026-20643, cvss: "CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:U/C:L/I:L/A:N"}
"""

# The prerequisite build's files, and what the supplement makes of them:
# libssl changes, nginx changes mode only, libnew is added, the readme goes.
BASE_FILES: dict[str, bytes] = {
    "usr/lib/libssl.so.3": b"libssl 3.0.2 " * 4000,
    "usr/lib/libcrypto.so.3": b"libcrypto 3.0.2 " * 3000,
    "usr/sbin/nginx": b"\x7fELF nginx 1.22 " * 2000,
    "etc/nginx/nginx.conf": b"worker_processes auto;\n",
    "usr/share/doc/readme": b"read me\n",
    "usr/bin/unrelated": b"not part of any component, and unchanged\n",
}
PATCHED_FILES: dict[str, bytes] = {
    **{k: v for k, v in BASE_FILES.items() if k != "usr/share/doc/readme"},
    "usr/lib/libssl.so.3": b"libssl 3.0.2-fixed " * 4000,
    "usr/lib/libnew.so": b"brand new library\n" * 100,
}
BASE_MODES = {"usr/sbin/nginx": 0o755}
PATCHED_MODES = {"usr/sbin/nginx": 0o750}


def spec(text: str = SPEC_TEXT) -> SupplementSpec:
    return parse_spec(text, source="test-spec.yaml")


def write_tree(
    root: Path,
    files: Mapping[str, bytes],
    modes: Mapping[str, int] | None = None,
    *,
    order: Iterable[str] | None = None,
    mtime: int | None = None,
) -> Path:
    """Write ``files`` under ``root`` in ``order``, with ``modes`` (default 0644) and ``mtime``."""
    for name in order if order is not None else files:
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(files[name])
        os.chmod(target, (modes or {}).get(name, 0o644))
        if mtime is not None:
            os.utime(target, (mtime, mtime))
    root.mkdir(parents=True, exist_ok=True)
    return root


def standard_trees(tmp_path: Path) -> tuple[Path, Path]:
    base = write_tree(tmp_path / "base", BASE_FILES, BASE_MODES)
    patched = write_tree(tmp_path / "patched", PATCHED_FILES, PATCHED_MODES)
    return base, patched


# -- taking bundles apart and putting them back together --------------------

Member = tuple[tarfile.TarInfo, bytes]


def members(bundle: Path) -> list[Member]:
    """Every member of a bundle with its data, read with Python's tarfile (trusted input)."""
    tar_bytes = zstandard.ZstdDecompressor().stream_reader(bundle.read_bytes()).read()
    with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as tar:
        return [
            (info, tar.extractfile(info).read() if info.isreg() else b"")  # type: ignore[union-attr]
            for info in tar.getmembers()
        ]


def regular(name: str, data: bytes) -> Member:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    return info, data


def manifest_document(items: list[Member]) -> dict[str, object]:
    info, data = items[0]
    assert info.name == "manifest.json"
    document: dict[str, object] = json.loads(data)
    return document


def with_manifest(items: list[Member], document: Mapping[str, object]) -> list[Member]:
    return [regular("manifest.json", json.dumps(document).encode()), *items[1:]]


def tar_bytes(items: Iterable[Member]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in items:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buffer.getvalue()


def compress(data: bytes, *, content_size: bool = True) -> bytes:
    return zstandard.ZstdCompressor(level=3, write_content_size=content_size).compress(data)


def pack(path: Path, items: Iterable[Member]) -> Path:
    path.write_bytes(compress(tar_bytes(items)))
    return path


def run_cli(*args: str | Path) -> Result:
    """``bsi ARGS`` in-process, as a user would type it."""
    return CliRunner().invoke(app, [str(a) for a in args])


def written_spec_rebuilds(
    out: Path, option: str, build_args: Callable[[Path], list[str | Path]]
) -> Path:
    """The spec ``--from-deb``/``--from-rpm`` wrote next to ``out`` rebuilds it byte for byte."""
    spec_file = out.with_name(out.name.removesuffix(".cryptex") + ".spec.yaml")
    assert f"# Derived by: bsi supplement build {option}" in spec_file.read_text()
    rebuilt = out.with_name("rebuilt.cryptex")
    again = run_cli(*build_args(rebuilt), "--spec", spec_file)
    assert again.exit_code == 0, again.output
    assert rebuilt.read_bytes() == out.read_bytes()
    return spec_file


def refused(args: list[str | Path], out: Path, error: type[BsiError], message: str) -> None:
    """The command fails with ``error`` naming ``message``, and writes neither bundle nor spec."""
    result = run_cli(*args)
    assert isinstance(result.exception, error), result.output
    assert message in str(result.exception), str(result.exception)
    assert not out.exists()
    assert not out.with_name(out.name.removesuffix(".cryptex") + ".spec.yaml").exists()
