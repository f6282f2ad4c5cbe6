"""The demo's supplement, built and signed for real: ``26.3.1 (a)`` for the appliance.

It is the Linux counterpart of Apple's first Background Security Improvement:
component ``webkit`` (a few files under ``/usr/lib/webkit``), fixing
CVE-2026-20643, supplemental build ``25D771280a`` on prerequisite build
``25D2128``. Nothing here is faked: the bundle is a real cryptex built by
:func:`bsi.cryptex.build_bundle` from a base and a patched tree, signed into a
real TUF repository by :func:`bsi.trust.publish_target`, and full-mode devices
download, verify, stage and activate it with the real agent. The health
check proves the patched library is in place.

The CVSS vector is illustrative (Apple publishes none for this CVE).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from bsi.cryptex import build_bundle, diff_trees, parse_spec, verify_bundle
from bsi.sim.fleet import PLATFORM, PREREQUISITE_BUILD, PRODUCT_VERSION
from bsi.trust import init_keys, publish_target
from bsi.trust.model import target_name
from bsi.trust.repository import available_signers

EXTRA_VERSION = "(a)"
SUPPLEMENTAL_BUILD = "25D771280a"
CVE = "CVE-2026-20643"
CVSS = "CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:U/C:L/I:L/A:N"
COMPONENT = "webkit"
TARGET_NAME = target_name(PLATFORM, SUPPLEMENTAL_BUILD)

LIBRARY = "usr/lib/webkit/libwebkit2gtk-4.1.so.0"
_FIXED_MARK = b"webkit 2.50.1-bsi1 CVE-2026-20643 fixed "

BASE_FILES: dict[str, bytes] = {
    LIBRARY: b"\x7fELF webkit 2.50.1 " * 1024,
    "usr/lib/webkit/WebKitWebProcess": b"\x7fELF WebKitWebProcess 2.50.1 " * 256,
    "usr/lib/webkit/resources/inspector.js": b"// inspector, unchanged by the supplement\n",
}
"""The prerequisite build's webkit files (every simulated device root has them in full mode)."""

PATCHED_FILES: dict[str, bytes] = {
    **BASE_FILES,
    LIBRARY: _FIXED_MARK * 1024,
    "usr/lib/webkit/WebKitWebProcess": b"\x7fELF WebKitWebProcess 2.50.1-bsi1 " * 256,
}


@dataclass(frozen=True, slots=True)
class Publisher:
    """The publisher's side: offline keys and the repository the server hosts."""

    keys_dir: Path
    repo_dir: Path
    work_dir: Path

    @property
    def trust_anchor(self) -> Path:
        """``1.root.json``: what a device trusts before its first update."""
        return self.repo_dir / "metadata" / "1.root.json"

    def init(self) -> None:
        """New keys and version 1 of an empty repository (no supplement yet)."""
        init_keys(self.keys_dir, self.repo_dir)

    def build(self) -> Path:
        """Build the sample cryptex from a base and a patched tree; returns the bundle."""
        base = _write_tree(self.work_dir / "base", BASE_FILES)
        patched = _write_tree(self.work_dir / "patched", PATCHED_FILES)
        spec_text = sample_spec()
        (self.work_dir / "supplement.yaml").write_text(spec_text)
        spec = parse_spec(spec_text, source=str(self.work_dir / "supplement.yaml"))
        bundle = self.work_dir / f"{SUPPLEMENTAL_BUILD}.cryptex"
        build_bundle(spec, diff_trees(base, patched), bundle)
        return bundle

    def sign(self, bundle: Path, posted: date) -> None:
        """Sign the bundle into the repository; the server lists it after a sync."""
        manifest = verify_bundle(bundle)
        fields = manifest.supplement_fields(posted=posted).document()
        publish_target(
            self.repo_dir,
            self.keys_dir,
            TARGET_NAME,
            bundle,
            fields,
            signers=available_signers(self.repo_dir, self.keys_dir, "targets"),
        )


def sample_spec() -> str:
    check = shlex.quote(f'grep -qa "2.50.1-bsi1" "$BSI_ROOT/{LIBRARY}"')
    return (
        f"platform: {PLATFORM}\n"
        f'product_version: "{PRODUCT_VERSION}"\n'
        f"prerequisite_build: {PREREQUISITE_BUILD}\n"
        f"extra_version: {EXTRA_VERSION}\n"
        f"supplemental_build: {SUPPLEMENTAL_BUILD}\n"
        "components:\n"
        f"  {COMPONENT}:\n"
        "    paths: [/usr/lib/webkit]\n"
        "    relaunch: {processes: [/usr/lib/webkit/WebKitWebProcess]}\n"
        f"health_check: {{command: [sh, -c, {check}], timeout: 20}}\n"
        "cves:\n"
        f'  - {{id: {CVE}, cvss: "{CVSS}"}}\n'
    )


def _write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(0o644)
    root.mkdir(parents=True, exist_ok=True)
    return root
