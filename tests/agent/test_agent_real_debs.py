"""Real data: Debian's own libssl3 security update, on a stock Debian 12 root.

Two real libssl3 packages from Debian's archive (``.ci/run`` fetches the two
newest with ``apt-get download``) -> ``bsi supplement build --from-deb`` on a
root whose ``var/lib/dpkg/status`` lists the older one, reviewed and rebuilt
with ``--spec`` -> signed, served, installed by the real agent with a real
process mapping ``libssl.so.3`` relaunched -> the server shows it installed;
a host on another version is blocked naming both; the package is then
"upgraded" underneath and the supplement is folded in, leaving nothing in
bsi's state; a foreign change is reported as drift and ``rollback --force``
recovers. The os-release is Debian 12's as shipped: no build id anywhere.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from served_fleet import Served, holding, serving
from test_agent_end_to_end import maps_inode, pid_of
from typer.testing import CliRunner

from bsi.agent.config import AgentConfig
from bsi.agent.runner import Agent
from bsi.cli import app
from bsi.cryptex import verify_bundle
from bsi.errors import BsiError
from bsi.server.app import utc_now
from bsi.trust import init_keys, publish_target
from bsi.trust.repository import available_signers
from debs import install_into, set_installed, two_real_versions

DEBIAN_12_OS_RELEASE = """\
PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
HOME_URL="https://www.debian.org/"
SUPPORT_URL="https://www.debian.org/support"
BUG_REPORT_URL="https://bugs.debian.org/"
"""
LIBSSL = "usr/lib/x86_64-linux-gnu/libssl.so.3"


@dataclass
class Fleet:
    served: Served
    anchor: Path
    root: Path
    agent: Agent
    pidfile: Path
    base: tuple[str, Path]
    fixed: tuple[str, Path]
    build: str

    @property
    def url(self) -> str:
        return self.served.url

    @property
    def token(self) -> str:
        return self.served.token

    def host(self, name: str, version: str) -> Agent:
        """Another stock Debian 12 root with libssl3 ``version`` installed (status only)."""
        root = self.root.parent / name
        (root / "etc").mkdir(parents=True)
        (root / "etc/os-release").write_text(DEBIAN_12_OS_RELEASE)
        set_installed(root, "libssl3", version)
        return Agent(root, AgentConfig())


def stock_debian_root(root: Path, deb: Path, version: str) -> Path:
    (root / "etc").mkdir(parents=True)
    (root / "etc/os-release").write_text(DEBIAN_12_OS_RELEASE)
    install_into(root, deb, "libssl3", version)
    return root


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    base, fixed = two_real_versions("libssl3")
    root = stock_debian_root(tmp_path / "host", base[1], base[0])
    library = root / LIBSSL
    pidfile = tmp_path / "holder.pid"
    with holding(library, tmp_path / "scripts", pidfile) as restart:
        # -- build from the real update, review (add how to relaunch), rebuild --
        derived = tmp_path / "first" / "libssl3.cryptex"
        derived.parent.mkdir()
        build = ["supplement", "build", "--from-deb", str(fixed[1]), "--base-root", str(root)]
        result = CliRunner().invoke(app, [*build, "--out", str(derived)])
        assert result.exit_code == 0, result.output
        spec_path = derived.with_name("libssl3.spec.yaml")
        spec = yaml.safe_load(spec_path.read_text())
        assert spec["prerequisite"]["packages"] == [
            {"package": "libssl3", "version": base[0], "arch": "amd64"}
        ]
        assert spec["fixed_in"] == [{"package": "libssl3", "version": fixed[0]}]
        spec["components"]["libssl3"]["relaunch"] = {"command": restart}
        spec_path.write_text(yaml.safe_dump(spec))
        bundle = tmp_path / "libssl3.cryptex"
        result = CliRunner().invoke(app, [*build, "--spec", str(spec_path), "--out", str(bundle)])
        assert result.exit_code == 0, result.output
        manifest = verify_bundle(bundle)
        assert LIBSSL in {f.path for f in manifest.files}

        keys, repo = tmp_path / "keys", tmp_path / "repo"
        init_keys(keys, repo)
        name = f"debian/{manifest.supplemental_build}.cryptex"
        fields = manifest.supplement_fields(posted=utc_now().date()).document()
        publish_target(
            repo, keys, name, bundle, fields, signers=available_signers(repo, keys, "targets")
        )
        with serving(tmp_path / "data", repo) as served:
            yield Fleet(
                served, repo / "metadata/1.root.json", root, Agent(root, AgentConfig()),
                pidfile, base, fixed, str(manifest.supplemental_build),
            )  # fmt: skip


def decision_of(fleet: Fleet, device_id: str) -> dict[str, object]:
    return fleet.served.device(device_id)


def test_stock_debian_takes_the_real_update_and_folds_it_in(fleet: Fleet) -> None:
    device_id = fleet.agent.enroll(fleet.url, fleet.token, fleet.anchor)
    assert fleet.agent.status()["build"] is None  # os-release as shipped: no build id
    library = fleet.root / LIBSSL
    old_pid = pid_of(fleet.pidfile)
    fixed_bytes = subprocess.run(
        ["dpkg-deb", "--fsys-tarfile", str(fleet.fixed[1])], check=True, capture_output=True
    ).stdout

    report = fleet.agent.once()
    assert report.failure is None, report.failure
    assert report.active == fleet.build
    assert library.read_bytes() in fixed_bytes  # the real fixed library is live
    new_pid = pid_of(fleet.pidfile)
    assert new_pid != old_pid
    assert maps_inode(new_pid, library) == library.stat().st_ino
    device = decision_of(fleet, device_id)
    assert device["supplemental_build"] == fleet.build
    assert device["decision_reason"] == "supplement-installed"

    # a host on another libssl3 version is blocked, and told both versions
    other = fleet.host("other", "3.0.0-1~deb12u1")
    other_id = other.enroll(fleet.url, fleet.token, fleet.anchor)
    assert other.once().steps == ()
    blocked = decision_of(fleet, other_id)
    assert (blocked["decision_outcome"], blocked["decision_reason"]) == (
        "blocked",
        "prerequisite-mismatch",
    )
    message = str(blocked["decision_message"])
    assert fleet.base[0] in message
    assert "3.0.0-1~deb12u1" in message

    # apt-get upgrade installs the fixed version underneath: folded in
    install_into(fleet.root, fleet.fixed[1], "libssl3", fleet.fixed[0])
    folded = fleet.agent.once()
    assert folded.failure is None, folded.failure
    assert folded.active is None
    assert f"discard {fleet.build}" in folded.steps
    layout = fleet.agent.layout
    assert not any(layout.cryptexes.iterdir()) if layout.cryptexes.exists() else True
    assert not list(layout.state.glob(f"**/{fleet.build}*"))
    assert fleet.agent.status()["active_supplement"] is None
    device = decision_of(fleet, device_id)
    assert device["supplemental_build"] is None
    assert (device["decision_outcome"], device["decision_reason"]) == (
        "up-to-date",
        "included-in-release",
    )
    assert fleet.agent.once().steps == ()


def test_a_foreign_change_is_drift_and_rollback_force_recovers(fleet: Fleet) -> None:
    device_id = fleet.agent.enroll(fleet.url, fleet.token, fleet.anchor)
    original = subprocess.run(
        ["dpkg-deb", "--fsys-tarfile", str(fleet.base[1])], check=True, capture_output=True
    ).stdout
    assert fleet.agent.once().active == fleet.build
    library = fleet.root / LIBSSL
    library.write_bytes(b"changed by someone else")

    status = fleet.agent.status()
    assert status["drift"]
    assert any(LIBSSL in line for line in status["drift"])
    again = fleet.agent.once()
    assert again.steps == ()
    assert library.read_bytes() == b"changed by someone else"  # never silently overwritten
    items = decision_of(fleet, device_id)["status_items"]
    assert isinstance(items, dict)
    assert any(LIBSSL in path for path in items["bsi.agent.drift"])

    with pytest.raises(BsiError) as refused:
        fleet.agent.rollback()
    assert "--force" in str(refused.value)
    assert f"/{LIBSSL}" in str(refused.value)
    assert fleet.agent.rollback(force=True) == fleet.build
    assert library.read_bytes() in original  # back to the installed package's bytes
    status = fleet.agent.status()
    assert (status["active_supplement"], status["drift"]) == (None, [])
    # The rollback's report names the packages the catalogue names, as a cycle's does:
    # back on the base libssl3, the host needs the supplement again (not "up to date").
    device = decision_of(fleet, device_id)
    assert device["supplemental_build"] is None
    items = device["status_items"]
    assert isinstance(items, dict)
    assert [(p["package"], p["version"]) for p in items["bsi.agent.packages"]] == [
        ("libssl3", fleet.base[0])
    ]
    assert items["bsi.agent.packages-asked"] == ["libssl3"]  # what the catalogue names
    assert device["decision_outcome"] != "up-to-date", device["decision_message"]
