"""``/metrics`` on the real server: it parses with prometheus_client's own parser, needs an
API key, and its counters and gauges move when devices check in and report."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from starlette.types import Message, Receive, Scope, Send

from bsi.server.metrics import CHECKIN_PATH, RequestMetrics
from reports import macos_report
from running import bsi_serve
from server_support import RunningServer

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(client: httpx.Client) -> Samples:
    """Every sample of ``/metrics`` by name and labels."""
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_counters_move_when_a_device_checks_in_and_reports(server: RunningServer) -> None:
    assert server.client().get("/metrics").status_code == 401
    assert server.client("not-a-key").get("/metrics").status_code == 401

    before = scrape(server.reader)
    device_id, device = server.device()
    first = device.get("/v1/ddm/tokens")
    assert first.status_code == 200
    etag = first.json()["SyncTokens"]["DeclarationsToken"]
    assert device.get("/v1/ddm/tokens", headers={"If-None-Match": etag}).status_code == 304
    assert device.get("/v1/ddm/tokens", headers={"If-None-Match": etag}).status_code == 304
    assert server.client("bad-credential").get("/v1/ddm/tokens").status_code == 401
    assert device.put("/v1/ddm/status", json=macos_report()).status_code == 200
    assert device.put("/v1/ddm/status", content=b"{not json").status_code == 400
    after = scrape(server.reader)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("bsi_checkins_total", result="200") == 1
    assert moved("bsi_checkins_total", result="304") == 2
    assert moved("bsi_checkins_total", result="error") == 1
    assert moved("bsi_status_reports_total", result="accepted") == 1
    assert moved("bsi_status_reports_total", result="refused") == 1
    assert (
        moved("bsi_http_request_duration_seconds_count", route="/v1/ddm/tokens", method="GET") == 4
    )
    assert (
        moved(
            "bsi_http_requests_total",
            route="/v1/admin/enrollment-tokens",
            method="POST",
            status="201",
        )
        == 1
    )
    assert moved("bsi_database_query_duration_seconds_count") > 0

    # The fleet's gauges come from the database: the device has no decision until
    # decisions are computed with a catalogue; before its report it was not-reported.
    assert value(before, "bsi_devices", outcome="unknown", reason="not-reported") == 0
    server.recompute()
    devices = {
        labels: n for (name, labels), n in scrape(server.reader).items() if name == "bsi_devices"
    }
    assert sum(devices.values()) == 1
    assert device_id  # counted whatever its decision, never left out


def test_supplements_by_state_and_long_poll_waiters(
    server: RunningServer, shared_data: Path
) -> None:
    from test_admin import import_real_catalogue

    import_real_catalogue(server, shared_data)
    assert server.admin.post("/v1/admin/supplements/macOS/25D771280a/withdraw").status_code == 200
    samples = scrape(server.reader)
    states = {
        dict(labels)["state"]: n
        for (name, labels), n in samples.items()
        if name == "bsi_supplements"
    }
    listed = server.reader.get("/v1/admin/supplements").json()
    assert states["withdrawn"] == sum(1 for s in listed if s["state"] == "withdrawn") >= 1
    assert sum(states.values()) == len(listed)
    assert value(samples, "bsi_long_poll_waiters") == 0


def test_rollouts_and_their_waves_by_state(server: RunningServer, shared_data: Path) -> None:
    from test_rollouts import PLAN, ROLLOUT, fleet

    fleet(server, shared_data, n=2)
    before = scrape(server.reader)
    assert value(before, "bsi_rollouts", state="running") == 0
    assert value(before, "bsi_rollout_waves", state="open") == 0
    assert server.admin.put(ROLLOUT, json=PLAN).status_code == 201
    running = scrape(server.reader)
    assert value(running, "bsi_rollouts", state="running") == 1
    assert value(running, "bsi_rollout_waves", state="open") == 1
    assert value(running, "bsi_rollout_waves", state="waiting") == len(PLAN["waves"]) - 1
    assert server.admin.post(f"{ROLLOUT}/halt").is_success
    halted = scrape(server.reader)
    assert value(halted, "bsi_rollouts", state="halted") == 1
    assert value(halted, "bsi_rollouts", state="running") == 0
    assert value(halted, "bsi_rollout_waves", state="halted") == 1


def test_several_workers_sum_into_one_scrape(tmp_path: Path) -> None:
    data = tmp_path / "served"
    with bsi_serve("--data-dir", data, "--workers", "2") as url:
        key = (data / "admin-api-key").read_text().strip()
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as admin:
            token = admin.post("/v1/admin/enrollment-tokens", json={}).json()["token"]
            enrolled = httpx.post(f"{url}/v1/enroll", json={"token": token}).json()
            headers = {"Authorization": f"Bearer {enrolled['credential']}"}
            for _ in range(6):  # new connections: the kernel spreads them over both workers
                assert httpx.get(f"{url}/v1/ddm/tokens", headers=headers).status_code == 200
            samples = scrape(admin)
    assert value(samples, "bsi_checkins_total", result="200") == 6


def checkins_200() -> float:
    """This process's count of check-ins answered 200."""
    return REGISTRY.get_sample_value("bsi_checkins_total", {"result": "200"}) or 0.0


def test_a_request_is_counted_before_its_client_has_the_answer() -> None:
    """With --workers a scrape can reach another process the moment a client has its
    answer: the answering one must have counted it by then (before its last byte)."""
    seen_at_last_byte: list[float] = []

    async def answer(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{", "more_body": True})
        await send({"type": "http.response.body", "body": b"}"})

    async def client(message: Message) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body"):
            seen_at_last_byte.append(checkins_200())

    async def nothing() -> Message:
        return {"type": "http.request", "body": b""}

    before = checkins_200()
    scope = {"type": "http", "path": CHECKIN_PATH, "method": "GET", "headers": []}
    asyncio.run(RequestMetrics(answer)(scope, nothing, client))
    assert seen_at_last_byte == [before + 1]
    assert checkins_200() == before + 1  # counted once
