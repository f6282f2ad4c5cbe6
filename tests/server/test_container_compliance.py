"""Containers counted in the server's compliance: hosts report them, the summary sums them.

No container engine: each host sends the ``bsi.agent.containers`` status item its
agent would send (tests/containers covers the agent reading a real engine).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import httpx

from bsi.domain.containers import ContainerFacts, container_items
from bsi.domain.prerequisite import PackageManager, PackageVersion, package_items
from bsi.domain.status import (
    OS_FAMILY,
    OS_VERSION,
    SUPPLEMENTAL_BUILD,
    SUPPLEMENTAL_EXTRA,
    nest_status_items,
)
from bsi.domain.versions import Build, ExtraVersion
from server_support import RunningServer, image_catalog

BASE = "sha256:" + "5f" * 32
PATCHED = "sha256:" + "a1" * 32
FOREIGN = "sha256:" + "0a" * 32
LETTER = "12C1000a"
CVE = "CVE-2026-0001"
CATALOG = image_catalog(LETTER, BASE, (CVE,))


def on_base(name: str) -> ContainerFacts:
    return ContainerFacts(name, BASE, BASE, "debian", "12")


def patched(name: str) -> ContainerFacts:
    return ContainerFacts(
        name, PATCHED, BASE, "debian", "12", Build.parse(LETTER), ExtraVersion("a")
    )


def host_report(*containers: ContainerFacts, active: str = "", **items: object) -> dict[str, Any]:
    """A Docker host's full report as its agent sends it."""
    flat: dict[str, object] = {
        OS_FAMILY: "debian",
        OS_VERSION: "12",
        SUPPLEMENTAL_BUILD: active,
        SUPPLEMENTAL_EXTRA: "(a)" if active else "",
        **package_items(
            PackageManager.DPKG, (PackageVersion("libc6", "2.36-9+deb12u9", "amd64"),), None
        ),
        **container_items(containers),
        **items,
    }
    return {"StatusItems": nest_status_items(flat), "Errors": []}


def report(device: httpx.Client, body: dict[str, Any]) -> None:
    response = device.put("/v1/ddm/status", json=body)
    assert response.status_code == 200, response.text


def compliance(server: RunningServer) -> tuple[dict[str, Any], dict[str, Any]]:
    supplements = server.reader.get("/v1/admin/compliance/supplements").json()
    cves = server.reader.get("/v1/admin/compliance/cves").json()
    return (
        next(s for s in supplements if s["build"] == LETTER),
        next(c for c in cves if c["cve"] == CVE),
    )


def test_compliance_counts_each_hosts_containers_and_a_host_it_cannot_place_as_unknown(
    server: RunningServer,
) -> None:
    assert server.admin.post("/v1/admin/catalog", json=CATALOG).status_code == 200
    mixed_id, mixed = server.device()
    report(
        mixed, host_report(patched("web1"), on_base("web2"), ContainerFacts("db", FOREIGN, FOREIGN))
    )
    broken_id, broken = server.device()
    report(broken, host_report(on_base("web3"), on_base("web4")))
    # its next report's containers item cannot be read: the host is unknown, and so are
    # the containers bsi last knew of, never fixed
    bad = host_report(on_base("web3"))
    bad["StatusItems"]["bsi"]["agent"]["containers"] = [{"name": "web3", "image": "latest"}]
    assert broken.put("/v1/ddm/status", json=bad).status_code == 200
    behind_id, behind = server.device()
    late = replace(on_base("late"), restart_pending=True)  # the agent's flag, as it sends it
    report(behind, host_report(patched("web5"), late, active=LETTER))

    def expect(supplement: dict[str, Any], cve: dict[str, Any]) -> None:
        assert {k: v for k, v in supplement.items() if k.startswith("containers_")} == {
            "containers_affected": 4,  # web1, web5, web2, late (never db: another image)
            "containers_installed": 2,  # web1, web5
            "containers_pending": 1,  # web2
            "containers_restart_pending": 1,  # late: the host's letter is active, not in it
            "containers_blocked": 0,
            "containers_unknown": 2,  # web3, web4 on the host bsi cannot place
        }
        assert (supplement["installed"], supplement["pending"], supplement["unknown"]) == (1, 1, 1)
        assert {k: v for k, v in cve.items() if k.startswith("containers_")} == {
            "containers_exposed": 1,
            "containers_fixed": 2,
            "containers_restart_pending": 1,
            "containers_unknown": 2,
        }

    expect(*compliance(server))
    server.recompute()  # decided again from the stored reports: the same counts
    expect(*compliance(server))
    csv = server.reader.get("/v1/admin/compliance/supplements", params={"format": "csv"}).text
    assert "containers_affected" in csv.splitlines()[0]
    console = server.client()
    signed_in = console.post(
        "/login",
        content=f"api_key={server.reader_key}".encode(),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert signed_in.status_code == 303
    assert "<b>4</b> affected" in console.get("/supplements").text
    assert "1 / 2 / 2" in console.get("/cves").text  # exposed / fixed / unknown
    # the host's record names each container's decision
    behind_record = server.reader.get(f"/v1/admin/devices/{behind_id}").json()
    assert {c["name"]: c["outcome"] for c in behind_record["containers"]} == {
        "late": "restart-pending",
        "web5": "up-to-date",
    }
    broken_record = server.reader.get(f"/v1/admin/devices/{broken_id}").json()
    assert {c["name"]: c["reason"] for c in broken_record["containers"]} == {
        "web3": "status-invalid",
        "web4": "status-invalid",
    }
    mixed_record = server.reader.get(f"/v1/admin/devices/{mixed_id}").json()
    assert {
        c["name"]: (c["outcome"], c["supplement_build"]) for c in mixed_record["containers"]
    } == {
        "web1": ("up-to-date", LETTER),
        "web2": ("install", LETTER),
        "db": ("up-to-date", None),
    }
    metrics = server.reader.get("/metrics").text
    assert 'bsi_containers{outcome="restart-pending",reason="old-content-running"} 1.0' in metrics
    assert 'bsi_containers{outcome="unknown",reason="status-invalid"} 2.0' in metrics

    # the host stops running containers: its rows go with its next report
    report(mixed, host_report())
    supplement, cve = compliance(server)
    assert (supplement["containers_installed"], supplement["containers_pending"]) == (1, 0)
    assert cve["containers_exposed"] == 0
    # a decommissioned host's containers are not counted
    report(mixed, host_report(on_base("web2")))
    assert compliance(server)[0]["containers_pending"] == 1
    assert server.admin.delete(f"/v1/admin/devices/{mixed_id}").status_code in (200, 204)
    assert compliance(server)[0]["containers_pending"] == 0
