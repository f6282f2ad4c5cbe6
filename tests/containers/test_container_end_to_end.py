"""The whole mechanism for a Docker/Podman host: publisher, real server, agent in container mode.

The host runs two containers from the base image and one from another
image. The supplement (prerequisite: the base image's digest) is built,
signed and published; the agent checks in, downloads and verifies it
through TUF, builds the patched image, recreates exactly the two containers
with their configuration, and the server shows both on the supplement. A
second letter whose health check fails is put back and halts, the host
falling back to the last good letter; rollback restores the base image.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from test_container_activator import HOLDS_LIB, NEW_LIB, OLD_LIB, configuration, held_library

from agent_support import OS_RELEASE, running_app
from bsi.agent.activators.container import LABEL_SUPPLEMENTAL_BUILD
from bsi.agent.config import parse_config
from bsi.agent.runner import Agent
from bsi.cryptex import build_bundle, diff_trees, parse_spec
from bsi.domain.containers import CONTAINERS_ITEM
from bsi.server.app import ServerSettings, utc_now
from bsi.trust import init_keys, publish_target
from bsi.trust.repository import available_signers
from container_engine import Engine
from cryptex_support import write_tree
from pgcluster import free_port

pytestmark = pytest.mark.usefixtures("no_containers_left")


@pytest.fixture
def no_containers_left(engine: Engine) -> Iterator[None]:
    yield
    for container in engine.client().containers.list(all=True):
        container.remove(force=True, v=True)


def publish(tmp_path: Path, digest: str, letter: str, library: bytes, check: str) -> None:
    """Build 12C1000<letter> (libssl for image ``digest``), sign and publish it."""
    build = f"12C1000{letter}"
    base = write_tree(tmp_path / "base", {"usr/lib/libssl.so.3": OLD_LIB})
    patched = write_tree(tmp_path / f"patched-{letter}", {"usr/lib/libssl.so.3": library})
    document = {
        "platform": "debian",
        "product_version": "12.5",
        "prerequisite": {"image": {"digest": digest}},
        "extra_version": f"({letter})",
        "supplemental_build": build,
        "components": {"openssl": {"paths": ["/usr/lib"]}},
        "health_check": {"command": [check], "timeout": 5},
        "cves": [{"id": "CVE-2026-31790"}],
    }
    spec = parse_spec(json.dumps(document), source="container e2e spec")
    bundle = tmp_path / f"{build}.cryptex"
    result = build_bundle(spec, diff_trees(base, patched), bundle)
    fields = result.manifest.supplement_fields(posted=utc_now().date()).document()
    repo, keys = tmp_path / "repo", tmp_path / "keys"
    signers = available_signers(repo, keys, "targets")
    publish_target(repo, keys, f"debian/{build}.cryptex", bundle, fields, signers=signers)


def test_a_container_host_gets_the_supplement_falls_back_and_rolls_back(
    engine: Engine, tmp_path: Path
) -> None:
    client = engine.client()
    base = engine.import_image(
        "localhost/bsi-e2e/web:1",
        {"usr/lib/libssl.so.3": OLD_LIB},
        changes=(f"CMD {json.dumps(HOLDS_LIB)}",),
    )
    other_image = engine.import_image("localhost/bsi-e2e/other:1", {"etc/other": b"x\n"})
    web = [
        client.containers.run(
            base,
            name=f"e2e-web{i}",
            detach=True,
            environment={"ROLE": f"web{i}"},
            labels={"app": "web"},
            ports={"8080/tcp": free_port()},  # any free host port: tests run side by side
            restart_policy={"Name": "always"},
        )
        for i in range(2)
    ]
    other = client.containers.run(other_image, name="e2e-other", detach=True)
    for container in (*web, other):
        container.reload()
    before = {str(c.name): configuration(c) for c in web}

    keys, repo = tmp_path / "keys", tmp_path / "repo"
    init_keys(keys, repo)
    publish(tmp_path, base, "a", NEW_LIB, "/bin/true")
    root = tmp_path / "host"
    (root / "etc/bsi").mkdir(parents=True)
    (root / "etc/os-release").write_text(OS_RELEASE)
    (root / "etc/bsi/agent.yaml").write_text(
        f"activator: container\ncontainer_engine: {engine.url}\n"
        "container_health_timeout: 3\n"  # (b)'s check never passes: give up on it soon
    )
    settings = ServerSettings(data_dir=tmp_path / "data", tuf_repo_dir=repo, tuf_keys_dir=keys)
    with running_app(settings) as (url, service):
        admin_key = service.create_api_key("e2e", "admin")
        token = service.create_enrollment_token("default", timedelta(hours=1), None)[0]
        agent = Agent(root, parse_config((root / "etc/bsi/agent.yaml").read_text()))
        device_id = agent.enroll(url, token, repo / "metadata" / "1.root.json")
        admin = {"Authorization": f"Bearer {admin_key}"}

        report = agent.once()
        assert report.failure is None, report.failure
        assert report.active == "12C1000a"

        # Exactly the two base containers were recreated, with their configuration.
        for container in web:
            now = client.containers.get(str(container.name))
            assert now.id != container.id
            assert configuration(now) == before[str(container.name)]
            assert held_library(now) == NEW_LIB
        assert client.containers.get("e2e-other").id == other.id

        shown = httpx.get(f"{url}/v1/admin/devices/{device_id}", headers=admin).json()
        assert (shown["supplemental_build"], shown["supplemental_extra"]) == ("12C1000a", "(a)")
        containers = {c["name"]: c for c in shown["status_items"][CONTAINERS_ITEM]}
        assert {n for n, c in containers.items() if c.get("supplemental_build")} == {
            "e2e-web0",
            "e2e-web1",
        }
        assert containers["e2e-web0"]["base_image"] == base
        assert "supplemental_build" not in containers["e2e-other"]
        # Compliance counts the two on the supplement, never the one on another image; a
        # container started from the base after the activation is named restart-pending.
        late = client.containers.run(base, name="e2e-late", detach=True)
        assert agent.once().failure is None
        shown = httpx.get(f"{url}/v1/admin/devices/{device_id}", headers=admin).json()
        containers = {c["name"]: c for c in shown["status_items"][CONTAINERS_ITEM]}
        assert [n for n, c in containers.items() if c.get("restart_pending")] == ["e2e-late"]
        rows = httpx.get(f"{url}/v1/admin/compliance/supplements", headers=admin).json()
        row = next(r for r in rows if r["build"] == "12C1000a")
        assert (row["installed"], row["containers_installed"]) == (1, 2)
        assert (row["containers_affected"], row["containers_restart_pending"]) == (3, 1)
        late.remove(force=True)

        # A letter whose health check fails: the first container recreated on it is put
        # back and the letter halts; the host falls back to the last good letter, (a).
        # (b) replaces (a) in place (the container activator's replaces_in_place), so
        # the first container is put back as itself and the second is never touched.
        on_a = {str(c.name): client.containers.get(str(c.name)).id for c in web}
        publish(tmp_path, base, "b", NEW_LIB + b"b", "/bin/false")
        # Read now, not when the repository watcher next polls (under load it may not have).
        synced = httpx.post(f"{url}/v1/admin/catalog/sync-repository", headers=admin)
        assert synced.is_success, synced.text
        failed = agent.once()
        assert failed.failure is not None
        assert "failed its health check" in failed.failure
        assert "last good letter" in failed.failure
        assert agent.activator.active() == "12C1000a"
        for container in web:
            now = client.containers.get(str(container.name))
            assert now.id == on_a[str(container.name)]
            assert now.labels[LABEL_SUPPLEMENTAL_BUILD] == "12C1000a"
            assert now.status == "running"
            assert configuration(now) == before[str(container.name)]
            assert held_library(now) == NEW_LIB
        assert agent.once().steps == ()  # (b) is refused from now on

        # Rollback recreates them on the base image with their configuration.
        assert agent.rollback() == "12C1000a"
        for container in web:
            back = client.containers.get(str(container.name))
            assert back.image is not None
            assert back.image.id == base
            assert configuration(back) == before[str(container.name)]
            assert held_library(back) == OLD_LIB
        assert client.containers.get("e2e-other").id == other.id
        shown = httpx.get(f"{url}/v1/admin/devices/{device_id}", headers=admin).json()
        assert shown["supplemental_build"] is None
        assert not any(c.get("supplemental_build") for c in shown["status_items"][CONTAINERS_ITEM])
