"""The whole mechanism on one machine: a publisher, the real server on loopback, and
the real agent on a temporary device root with a real process using a file the
supplement replaces.

publish (keys, build, sign) -> serve (catalogue from the signed repository) ->
enroll -> check in -> download and verify through TUF -> stage -> activate ->
relaunch the process -> health check -> report -> the server shows the new
supplemental build -> roll back to the baseline byte for byte.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from agent_support import OS_RELEASE, running_app
from bsi.agent.config import AgentConfig
from bsi.agent.runner import Agent
from bsi.cryptex import build_bundle, diff_trees, parse_spec
from bsi.domain.declarations import software_update_settings
from bsi.server.app import ServerSettings, utc_now
from bsi.trust import init_keys, publish_target
from bsi.trust.repository import available_signers
from cryptex_support import BASE_FILES, PATCHED_FILES, write_tree

HOLDER = """\
import mmap, os, sys, time
path, pidfile = sys.argv[1], sys.argv[2]
with open(path, "rb") as handle:
    mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
with open(pidfile + ".tmp", "w") as out:
    out.write(str(os.getpid()))
os.replace(pidfile + ".tmp", pidfile)
while True:
    time.sleep(0.1)
"""

RESTART = """\
import os, signal, subprocess, sys, time
holder, path, pidfile = sys.argv[1], sys.argv[2], sys.argv[3]
old = int(open(pidfile).read())
os.kill(old, signal.SIGTERM)
subprocess.Popen([sys.executable, holder, path, pidfile], start_new_session=True,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
deadline = time.time() + 20
while time.time() < deadline:
    try:
        if int(open(pidfile).read()) != old:
            break
    except (OSError, ValueError):
        pass
    time.sleep(0.05)
"""


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    found = {}
    for path in sorted((root / "usr").rglob("*")):
        if path.is_file():
            found[str(path.relative_to(root))] = (
                hashlib.sha256(path.read_bytes()).hexdigest(),
                path.stat().st_mode & 0o7777,
            )
    return found


def pid_of(pidfile: Path) -> int:
    return int(pidfile.read_text())


def maps_inode(pid: int, path: Path) -> int | None:
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        if line.endswith(str(path)) or line.endswith(f"{path} (deleted)"):
            return int(line.split()[4])
    return None


HEALTHY = ["sh", "-c", 'test -s "$BSI_ROOT/usr/lib/libnew.so"']


def publish_letter(
    tmp_path: Path,
    letter: str,
    files: dict[str, bytes],
    health_check: list[str],
    relaunch: list[object],
    *,
    setuid: dict[str, int] | None = None,
    alter: Callable[[Path], None] | None = None,
    components: dict[str, object] | None = None,
    base_files: dict[str, bytes] = BASE_FILES,
) -> None:
    """Build 12A100<letter> (base -> ``files``), sign it and publish it in the test repository.

    ``setuid`` gives files set-user-ID modes, declared in the spec; ``alter`` changes the
    built bundle before it is signed (a hostile publisher, or a stolen signing key).
    ``components`` replaces the spec's default ones (``openssl``: ``/usr/lib``,
    relaunched by ``relaunch``; ``other``: ``/usr``); ``base_files`` is the
    prerequisite build's tree, written once under ``tmp_path/base``.
    """
    build = f"12A100{letter}"
    patched = write_tree(tmp_path / f"patched-{letter}", files, setuid)
    if components is None:
        components = {
            "openssl": {"paths": ["/usr/lib"], "relaunch": {"command": [str(a) for a in relaunch]}},
            "other": {"paths": ["/usr"]},
        }
    document = {  # JSON is YAML: the spec as the publisher would write it
        "platform": "debian",
        "product_version": "12.5",
        "prerequisite_build": "12A100",
        "extra_version": f"({letter})",
        "supplemental_build": build,
        "setuid": ["/" + path for path in setuid or {}],
        "components": components,
        "health_check": {"command": health_check, "timeout": 20},
        "cves": [{"id": "CVE-2026-20643", "cvss": "CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:U/C:L/I:L/A:N"}],
    }
    spec = parse_spec(json.dumps(document, indent=1), source="e2e spec")
    keys, repo = tmp_path / "keys", tmp_path / "repo"
    bundle = tmp_path / f"{build}.cryptex"
    base = tmp_path / "base"
    if not base.exists():
        write_tree(base, base_files)
    result = build_bundle(spec, diff_trees(base, patched), bundle)
    if alter is not None:
        alter(bundle)
    fields = result.manifest.supplement_fields(posted=utc_now().date()).document()
    publish_target(
        repo,
        keys,
        f"debian/{build}.cryptex",
        bundle,
        fields,
        signers=available_signers(repo, keys, "targets"),
    )


@dataclass
class World:
    server_url: str
    admin: httpx.Client
    agent: Agent
    root: Path
    pidfile: Path
    library: Path
    baseline: dict[str, tuple[str, int]]
    enrollment_token: str
    relaunch: list[object]


@pytest.fixture
def world(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[World]:
    """A served repository holding 12A100a, a device at 12A100 and its running service.

    ``@pytest.mark.server_settings(**fields)`` sets ServerSettings fields.
    """
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "holder.py").write_text(HOLDER)
    (scripts / "restart.py").write_text(RESTART)
    root = tmp_path / "device"
    write_tree(root, BASE_FILES)
    (root / "etc").mkdir(exist_ok=True)
    (root / "etc" / "os-release").write_text(OS_RELEASE)
    library = root / "usr/lib/libssl.so.3"
    pidfile = tmp_path / "holder.pid"

    # -- the publisher: keys, a bundle, signed into the repository -------------
    keys, repo = tmp_path / "keys", tmp_path / "repo"
    init_keys(keys, repo)
    relaunch = [sys.executable, scripts / "restart.py", scripts / "holder.py", library, pidfile]
    publish_letter(tmp_path, "a", PATCHED_FILES, HEALTHY, relaunch)

    # -- the server, hosting the repository ------------------------------------
    marker = request.node.get_closest_marker("server_settings")
    settings = ServerSettings(
        data_dir=tmp_path / "data",
        tuf_repo_dir=repo,
        tuf_keys_dir=keys,
        **(marker.kwargs if marker else {}),
    )
    with running_app(settings) as (url, service):
        admin_key = service.create_api_key("e2e", "admin")
        token = service.create_enrollment_token("default", timedelta(hours=1), None)[0]
        # -- the running process that uses the library --------------------------
        holder = subprocess.Popen(
            [sys.executable, scripts / "holder.py", library, pidfile], start_new_session=True
        )
        deadline = time.monotonic() + 20
        while not pidfile.exists():
            assert time.monotonic() < deadline
            time.sleep(0.05)

        admin = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {admin_key}"}, timeout=30
        )
        agent = Agent(root, AgentConfig())
        try:
            yield World(
                url, admin, agent, root, pidfile, library, snapshot(root), token, relaunch,
            )  # fmt: skip
        finally:
            admin.close()
            for pid in {holder.pid, pid_of(pidfile)}:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            holder.wait(timeout=10)


def test_supplement_goes_live_the_process_is_relaunched_and_rollback_restores(
    world: World, tmp_path: Path
) -> None:
    repo_root = tmp_path / "repo" / "metadata" / "1.root.json"
    device_id = world.agent.enroll(world.server_url, world.enrollment_token, repo_root)
    old_pid = pid_of(world.pidfile)
    old_inode = world.library.stat().st_ino
    assert maps_inode(old_pid, world.library) == old_inode

    report = world.agent.once()
    assert report.failure is None, report.failure
    assert report.active == "12A100a"
    assert world.library.read_bytes() == PATCHED_FILES["usr/lib/libssl.so.3"]
    assert (world.root / "usr/lib/libnew.so").exists()
    assert not (world.root / "usr/share/doc/readme").exists()

    new_pid = pid_of(world.pidfile)
    assert new_pid != old_pid  # relaunched ...
    assert maps_inode(new_pid, world.library) == world.library.stat().st_ino  # ... on new content
    assert world.agent.status()["restart_pending"] is False

    device = world.admin.get(f"/v1/admin/devices/{device_id}").json()
    assert (device["supplemental_build"], device["supplemental_extra"]) == ("12A100a", "(a)")
    assert device["platform"] == "debian"

    # a second check-in changes nothing
    again = world.agent.once()
    assert again.steps == ()

    assert world.agent.rollback() == "12A100a"
    assert snapshot(world.root) == world.baseline
    rolled = pid_of(world.pidfile)
    assert rolled != new_pid
    assert maps_inode(rolled, world.library) == world.library.stat().st_ino
    device = world.admin.get(f"/v1/admin/devices/{device_id}").json()
    assert device["supplemental_build"] is None
    # removed by the admin: not reinstalled behind their back
    assert world.agent.once().steps == ()
    assert snapshot(world.root) == world.baseline


def enrolled(world: World, tmp_path: Path) -> str:
    anchor = tmp_path / "repo" / "metadata" / "1.root.json"
    return world.agent.enroll(world.server_url, world.enrollment_token, anchor)


def reported_decision(world: World, device_id: str) -> dict[str, str]:
    items = world.admin.get(f"/v1/admin/devices/{device_id}").json()["status_items"]
    return {k.rsplit(".", 1)[1]: v for k, v in items.items() if k.startswith("bsi.agent.decision")}


def fake_battery(root: Path, percent: int) -> None:
    supplies = root / "sys/class/power_supply"
    for name, values in {
        "AC": {"type": "Mains", "online": "0"},
        "BAT0": {"type": "Battery", "capacity": str(percent), "status": "Discharging"},
    }.items():
        (supplies / name).mkdir(parents=True)
        for key, value in values.items():
            (supplies / name / key).write_text(value + "\n")


def test_battery_below_threshold_defers_and_changes_nothing(world: World, tmp_path: Path) -> None:
    fake_battery(world.root, 5)
    device_id = enrolled(world, tmp_path)
    report = world.agent.once()
    assert report.steps == ()
    assert snapshot(world.root) == world.baseline
    assert reported_decision(world, device_id)["reason"] == "battery-low"


def test_wrong_prerequisite_build_changes_nothing(world: World, tmp_path: Path) -> None:
    (world.root / "etc/os-release").write_text(OS_RELEASE.replace("12A100", "12A99"))
    device_id = enrolled(world, tmp_path)
    assert world.agent.once().steps == ()
    assert snapshot(world.root) == world.baseline
    assert reported_decision(world, device_id)["reason"] == "unknown-build"


def test_policy_always_off_changes_nothing(world: World, tmp_path: Path) -> None:
    off = software_update_settings("no-bsi", install_security_update="AlwaysOff")
    assert world.admin.put("/v1/admin/declarations/no-bsi", json=off.to_json()).is_success
    assert world.admin.put("/v1/admin/declarations/no-bsi/groups/default").status_code == 204
    device_id = enrolled(world, tmp_path)
    assert world.agent.once().steps == ()
    assert snapshot(world.root) == world.baseline
    assert reported_decision(world, device_id)["reason"] == "policy-always-off"


def test_a_tampered_bundle_is_refused_and_reported(world: World, tmp_path: Path) -> None:
    (served,) = (tmp_path / "repo" / "targets").rglob("*.cryptex")
    data = bytearray(served.read_bytes())
    data[len(data) // 2] ^= 0xFF
    served.write_bytes(bytes(data))
    device_id = enrolled(world, tmp_path)
    report = world.agent.once()
    assert report.failure is not None
    assert report.active is None
    assert snapshot(world.root) == world.baseline
    assert not list(world.agent.layout.cryptexes.glob("12A100a*"))
    items = world.admin.get(f"/v1/admin/devices/{device_id}").json()["status_items"]
    assert items["softwareupdate.install-state"] == "failed"
    assert items["softwareupdate.failure-reason"]["count"] == 1


def test_a_failure_is_reported_until_the_pending_update_installs(
    world: World, tmp_path: Path
) -> None:
    """``softwareupdate.failure-reason`` counts failures of the pending update: once it
    is installed there is none pending, and the count goes back to 0 (Apple's schema)."""
    (served,) = (tmp_path / "repo" / "targets").rglob("*.cryptex")
    good = served.read_bytes()
    served.write_bytes(good[:-1] + bytes([good[-1] ^ 0xFF]))
    device_id = enrolled(world, tmp_path)
    assert world.agent.once().failure is not None
    assert world.agent.once().failure is not None
    items = world.admin.get(f"/v1/admin/devices/{device_id}").json()["status_items"]
    assert items["softwareupdate.failure-reason"]["count"] == 2

    served.write_bytes(good)
    report = world.agent.once()
    assert (report.failure, report.active) == (None, "12A100a")
    assert world.agent.status()["last_failure"] is None
    items = world.admin.get(f"/v1/admin/devices/{device_id}").json()["status_items"]
    assert "softwareupdate.failure-reason" not in items
    assert items["softwareupdate.install-state"] != "failed"


@pytest.mark.server_settings(tuf_watch_seconds=3600)
def test_a_build_signed_again_with_other_bytes_is_refused_before_the_server_notices(
    world: World, tmp_path: Path
) -> None:
    """A stolen targets key (or a second signing tool) re-signs 12A100a with other bytes,
    and the server has not re-read its repository yet: the catalogue still names the
    first digest, so the device refuses the download and changes nothing."""
    catalog = world.admin.get("/v1/admin/catalog").json()
    (entry,) = [s for s in catalog["supplements"] if s["build"] == "12A100a"]
    (served,) = (tmp_path / "repo" / "targets").rglob("*.cryptex")
    assert entry["target_sha256"] == hashlib.sha256(served.read_bytes()).hexdigest()
    other = {**PATCHED_FILES, "usr/lib/libnew.so": b"not what was published"}
    publish_letter(tmp_path, "a", other, HEALTHY, world.relaunch)

    device_id = enrolled(world, tmp_path)
    report = world.agent.once()
    assert report.failure is not None
    assert "was published with sha256 " + entry["target_sha256"] in report.failure
    assert report.active is None
    assert snapshot(world.root) == world.baseline
    items = world.admin.get(f"/v1/admin/devices/{device_id}").json()["status_items"]
    assert items["softwareupdate.install-state"] == "failed"


def test_a_letter_published_while_the_server_is_down_is_decided_as_it_starts(
    tmp_path: Path,
) -> None:
    """The server reads the repository as it starts: a host decided with nothing to
    install (its decisions current, nothing left to catch up) is offered the letter,
    unasked, before it checks in again."""
    root = tmp_path / "device"
    write_tree(root, BASE_FILES)
    (root / "etc").mkdir(exist_ok=True)
    (root / "etc" / "os-release").write_text(OS_RELEASE)
    keys, repo = tmp_path / "keys", tmp_path / "repo"
    init_keys(keys, repo)
    settings = ServerSettings(data_dir=tmp_path / "data", tuf_repo_dir=repo, tuf_keys_dir=keys)
    agent = Agent(root, AgentConfig())
    with running_app(settings) as (url, service):
        admin_key = service.create_api_key("e2e", "admin")
        token = service.create_enrollment_token("default", timedelta(hours=1), None)[0]
        device_id = agent.enroll(url, token, repo / "metadata" / "1.root.json")
        assert agent.once().active is None
        device = httpx.get(
            f"{url}/v1/admin/devices/{device_id}", headers={"Authorization": f"Bearer {admin_key}"}
        ).json()
        assert device["decision_outcome"] != "install", device  # nothing published yet
        service.recompute_decisions()  # decisions current: nothing left for a start to catch up
        generations = service.stores.generations
        assert generations.decided() == generations.current()
    publish_letter(tmp_path, "a", PATCHED_FILES, HEALTHY, ["true"])  # the server is down
    with running_app(settings) as (url, service):
        deadline = time.monotonic() + 30
        while True:
            device = httpx.get(
                f"{url}/v1/admin/devices/{device_id}",
                headers={"Authorization": f"Bearer {admin_key}"},
            ).json()
            if device["decision_outcome"] == "install":
                break
            assert time.monotonic() < deadline, device["decision_message"]
            time.sleep(0.1)
        assert device["decision_supplement_build"] == "12A100a"
