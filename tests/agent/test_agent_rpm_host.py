"""A stock Fedora host: rpm database, os-release as shipped, a supplement built --from-rpm.

Two real .rpm packages of a shared library are built with ``rpmbuild``; the
older is installed into a Fedora 40 root's rpm database with ``rpm -U``.
``bsi supplement build --from-rpm NEW.rpm --base-root ROOT`` derives the
supplement (reviewed: how to relaunch is added, then rebuilt with ``--spec``),
``bsi supplement publish`` signs it into the TUF repository a real server
serves; the real agent applies it and relaunches a process mapping the
library, and the server shows it installed. A host on another version is
blocked, told both versions. ``rpm -U`` then installs the fixed package
underneath: the supplement is folded in (``included-in-release``) and bsi
keeps nothing for it. Every package fact is read by rpm itself.
"""

from __future__ import annotations

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
from bsi.errors import BsiError, InvalidInput, ServerRefused, ServerUnavailable, Unauthorized
from rpms import fedora_root, make_rpm, rpm_install

LIB = "usr/lib64/libdemo.so.1"
BASE, FIXED = "1.0-1.fc40", "1.0-2.fc40"


def library(version: str) -> dict[str, bytes]:
    return {LIB: f"libdemo {version} ".encode() * 2000}


@dataclass
class Fedora:
    served: Served
    anchor: Path
    root: Path
    agent: Agent
    pidfile: Path
    fixed_rpm: Path
    build: str


def cli(*args: str | Path) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def fedora(tmp_path: Path) -> Iterator[Fedora]:
    packages = tmp_path / "rpms"
    packages.mkdir()
    old = make_rpm(packages, "demo-libs", "1.0", "1.fc40", library(BASE))
    new = make_rpm(packages, "demo-libs", "1.0", "2.fc40", library(FIXED))
    root = fedora_root(tmp_path / "host")
    rpm_install(root, old)
    pidfile = tmp_path / "holder.pid"
    with holding(root / LIB, tmp_path / "scripts", pidfile) as restart:
        derived = tmp_path / "first" / "demo.cryptex"
        derived.parent.mkdir()
        build = ["supplement", "build", "--from-rpm", new, "--base-root", root]
        cli(*build, "--out", derived)
        spec_path = derived.with_name("demo.spec.yaml")
        spec = yaml.safe_load(spec_path.read_text())
        assert (spec["platform"], spec["product_version"]) == ("fedora", "40.0")
        assert spec["prerequisite"] == {
            "manager": "rpm",
            "packages": [{"package": "demo-libs", "version": BASE, "arch": "x86_64"}],
        }
        assert spec["fixed_in"] == [{"package": "demo-libs", "version": FIXED}]
        spec["components"]["demo-libs"]["relaunch"] = {"command": restart}
        spec_path.write_text(yaml.safe_dump(spec))
        bundle = tmp_path / "demo.cryptex"
        cli(*build, "--spec", spec_path, "--out", bundle)
        manifest = verify_bundle(bundle)

        keys, repo = tmp_path / "keys", tmp_path / "repo"
        cli("keys", "init", "--keys-dir", keys, "--repo-dir", repo)
        with serving(tmp_path / "data", repo) as served:
            # publish into the repository the running server hosts, and tell it
            published = cli(
                "supplement", "publish", bundle, "--repo-dir", repo, "--keys-dir", keys,
                "--server", served.url, "--api-key", served.admin_key,
            )  # fmt: skip
            assert "it lists 1 supplement(s)" in published
            yield Fedora(
                served, repo / "metadata/1.root.json", root, Agent(root, AgentConfig()),
                pidfile, new, str(manifest.supplemental_build),
            )  # fmt: skip


def test_stock_fedora_takes_a_supplement_built_from_rpm_and_folds_it_in(fedora: Fedora) -> None:
    served, agent = fedora.served, fedora.agent
    device_id = agent.enroll(served.url, served.token, fedora.anchor)
    assert agent.status()["build"] is None  # Fedora's os-release as shipped: no build id
    old_pid = pid_of(fedora.pidfile)

    report = agent.once()
    assert report.failure is None, report.failure
    assert report.active == fedora.build
    assert (fedora.root / LIB).read_bytes() == library(FIXED)[LIB]
    new_pid = pid_of(fedora.pidfile)
    assert new_pid != old_pid
    assert maps_inode(new_pid, fedora.root / LIB) == (fedora.root / LIB).stat().st_ino
    device = served.device(device_id)
    assert device["supplemental_build"] == fedora.build
    assert device["decision_reason"] == "supplement-installed"

    # a host on another demo-libs version is blocked, and told both versions
    packages = fedora.fixed_rpm.parent
    other_root = fedora_root(fedora.root.parent / "other")
    rpm_install(other_root, make_rpm(packages, "demo-libs", "1.0", "0.fc40", library("1.0-0")))
    other = Agent(other_root, AgentConfig())
    other_id = other.enroll(served.url, served.token, fedora.anchor)
    assert other.once().steps == ()
    blocked = served.device(other_id)
    assert (blocked["decision_outcome"], blocked["decision_reason"]) == (
        "blocked",
        "prerequisite-mismatch",
    )
    assert BASE in str(blocked["decision_message"])
    assert "1.0-0.fc40" in str(blocked["decision_message"])

    # dnf upgrade installs the fixed version underneath: folded in
    rpm_install(fedora.root, fedora.fixed_rpm)
    folded = agent.once()
    assert folded.failure is None, folded.failure
    assert folded.active is None
    assert f"discard {fedora.build}" in folded.steps
    assert (fedora.root / LIB).read_bytes() == library(FIXED)[LIB]  # the package's file now
    layout = agent.layout
    assert not layout.cryptexes.exists() or not any(layout.cryptexes.iterdir())
    assert not list(layout.state.glob(f"**/{fedora.build}*"))
    assert agent.status()["active_supplement"] is None
    device = served.device(device_id)
    assert device["supplemental_build"] is None
    assert (device["decision_outcome"], device["decision_reason"]) == (
        "up-to-date",
        "included-in-release",
    )
    assert agent.once().steps == ()


def test_publish_server_refusals_are_clear_and_a_bad_flag_signs_nothing(tmp_path: Path) -> None:
    packages = tmp_path / "rpms"
    packages.mkdir()
    old = make_rpm(packages, "demo-libs", "1.0", "1.fc40", library(BASE))
    new = make_rpm(packages, "demo-libs", "1.0", "2.fc40", library(FIXED))
    bundle = tmp_path / "demo.cryptex"
    cli("supplement", "build", "--from-rpm", new, "--base-rpm", old, "--out", bundle,
        "--platform", "fedora", "--product-version", "40")  # fmt: skip
    keys, repo = tmp_path / "keys", tmp_path / "repo"
    cli("keys", "init", "--keys-dir", keys, "--repo-dir", repo)
    publish = ["supplement", "publish", str(bundle), "--repo-dir", str(repo), "--keys-dir",
               str(keys)]  # fmt: skip

    def signed() -> dict[str, bytes]:
        return {path.name: path.read_bytes() for path in sorted((repo / "metadata").iterdir())}

    def refused(error: type[BsiError], *args: str, env: dict[str, str] | None = None) -> str:
        before = signed()
        result = CliRunner().invoke(app, [*publish, *args], env=env)
        assert isinstance(result.exception, error), result.output
        return str(result.exception) if signed() != before else "nothing signed"

    # flags checked before anything is signed
    assert refused(InvalidInput, "--server", "ftp://x") == "nothing signed"
    assert refused(InvalidInput, "--server", "http://127.0.0.1:1", env={"BSI_API_KEY": ""}) == (
        "nothing signed"
    )
    with serving(tmp_path / "data", repo) as served:
        read_only = served.service.create_api_key("reader", "read-only")
        denied = refused(Unauthorized, "--server", served.url, "--api-key", "not-a-key")
        assert f"{served.url} did not take the notification" in denied
        assert "is published" in denied
        forbidden = refused(ServerRefused, "--server", served.url, env={"BSI_API_KEY": read_only})
        assert "this API key is read-only" in forbidden
    with serving(tmp_path / "plain", None) as plain:
        no_repo = refused(ServerRefused, "--server", plain.url, "--api-key", plain.admin_key)
        assert "hosts no TUF repository" in no_repo
    gone = refused(ServerUnavailable, "--server", plain.url, "--api-key", plain.admin_key)
    assert "cannot reach" in gone
