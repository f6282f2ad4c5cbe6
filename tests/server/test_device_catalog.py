"""``GET /v1/ddm/catalog``: a device's catalogue answer, served from memory when it can be."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from reports import macos_report
from server_support import RunningServer, sql_statements

BUILD = "25D771280a"  # macOS 26.3.1 (a), for devices on 25D2128


def macos_device(server: RunningServer, shared_data: Path) -> tuple[str, httpx.Client]:
    for name in ("gdmf_cached.json", "macos_data_feed.json"):
        body = (shared_data / "sofa" / name).read_bytes()
        response = server.admin.post("/v1/admin/catalog", params={"source": name}, content=body)
        assert response.status_code == 200, response.text
    device_id, client = server.device()
    assert client.put("/v1/ddm/status", json=macos_report()).status_code == 200
    return device_id, client


ANSWER_TABLES = ("catalog_", "retry_allowances", "rollout", "maintenance_windows", "device_groups")
"""What a catalogue answer is made of (background work, such as writing check-in times,
touches other tables while the answer is made)."""


def answered(server: RunningServer, client: httpx.Client) -> tuple[dict[str, object], list[str]]:
    """The device's macOS catalogue answer, and the SQL statements run meanwhile that read
    what it is made of."""
    with sql_statements(server) as statements:
        response = client.get("/v1/ddm/catalog", params={"platform": "macOS"})
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body, [s for s in statements if any(table in s for table in ANSWER_TABLES)]


@pytest.mark.server_settings(cache_seconds=600)  # nothing expires between two requests
def test_a_catalogue_answer_from_memory_reads_nothing_and_equals_the_one_read(
    server: RunningServer, shared_data: Path
) -> None:
    """Every device's check-in asks for its catalogue: once what it is made of (the
    catalogue, the device's holds, the retry allowances) is in memory, the answer costs
    no read and no worker thread, and it is the answer the reads gave."""
    _, client = macos_device(server, shared_data)
    read, statements = answered(server, client)
    assert statements  # the retry allowances were not in memory yet
    assert BUILD in [s["build"] for s in read["supplements"]]  # type: ignore[index]
    assert read["latest_retry"] == 0
    assert "device" not in read  # nothing holds it back
    again, statements = answered(server, client)
    assert statements == []
    assert again == read


@pytest.mark.server_settings(cache_seconds=600)
def test_a_retry_allowance_is_named_at_once_by_the_process_that_made_it(
    server: RunningServer, shared_data: Path
) -> None:
    """The retry allowances are kept in memory a few seconds; one the admin makes through
    this process drops them, so the next catalogue answer already names it (the agent
    asks for ``/retries`` only when that id moves)."""
    device_id, client = macos_device(server, shared_data)
    assert answered(server, client)[0]["latest_retry"] == 0
    assert answered(server, client)[1] == []  # kept in memory
    path = f"/v1/admin/supplements/macOS/{BUILD}/allow-retry"
    everyone = server.admin.post(path)
    assert everyone.status_code == 201, everyone.text
    latest = answered(server, client)[0]["latest_retry"]
    assert latest == everyone.json()["id"]
    assert isinstance(latest, int)
    assert latest > 0
    own = server.admin.post(path, params={"device_id": device_id}).json()["id"]
    _, other = server.device()
    assert answered(server, client)[0]["latest_retry"] == own
    assert answered(server, other)[0]["latest_retry"] == latest  # only every device's
